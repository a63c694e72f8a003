"""The whole-frame context view of native-resolution models: trained on at ``image.context_probability``,
scored beside the native pass with ``image.context_pass``, in the Predictor and in per-epoch validation."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from smokeseg.config.load import load_config
from smokeseg.config.schema import AugmentationConfig, DatasetConfig, ExperimentConfig, ImageConfig
from smokeseg.data.augment import build_train_transform, model_resize
from smokeseg.data.dataset import fit_to_size
from smokeseg.data.formats import load_samples
from smokeseg.data.normalization import normalize
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError
from smokeseg.inference.predictor import Predictor
from smokeseg.training import run
from smokeseg.training.module import SmokeSegmentationModule
from test_predict import tiny_fcn
from test_training import TINY

SIDE = 64
# Channel 0 holds the row, channel 1 the column: a crop shows where it came from, a resize does not.
FRAME = np.stack(
    [*np.meshgrid(np.arange(200), np.arange(250), indexing="ij"), np.zeros((200, 250), int)], axis=-1
).astype(np.uint8)
FRAMES = [
    np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    for seed, size in enumerate([(90, 140, 3), (75, 50, 3), (SIDE, SIDE, 3)])
]


def _native(**image: Any) -> ImageConfig:
    return ImageConfig(image_height=SIDE, image_width=SIDE, resolution="native", **image)


def _draws(pipeline: A.Compose, count: int) -> list[np.ndarray]:
    mask = np.zeros(FRAME.shape[:2], np.uint8)
    return [pipeline(image=FRAME, mask=mask)["image"] for _ in range(count)]


def _is_crop(view: np.ndarray) -> bool:
    top, left = int(view[0, 0, 0]), int(view[0, 0, 1])
    rows, cols = np.arange(top, top + SIDE), np.arange(left, left + SIDE)
    return bool((view[..., 0] == rows[:, None]).all() and (view[..., 1] == cols[None, :]).all())


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_training_shows_the_whole_frame_at_the_configured_share_and_crops_otherwise(share: float):
    image_cfg = _native(context_probability=share)
    pipeline = build_train_transform(AugmentationConfig(augmentations_strategy="None"), image_cfg, seed=3)
    whole = model_resize(image_cfg)(image=FRAME)["image"]
    draws = _draws(pipeline, 400)
    context = [np.array_equal(view, whole) for view in draws]
    assert abs(np.mean(context) - share) < 0.06
    assert all(_is_crop(view) for view, is_whole in zip(draws, context, strict=True) if not is_whole)


def test_the_context_view_keeps_its_mask():
    image_cfg = _native(context_probability=1.0)
    mask = np.zeros(FRAME.shape[:2], np.uint8)
    mask[50:150, 100:200] = 1
    out = build_train_transform(AugmentationConfig(augmentations_strategy="Soft"), image_cfg, seed=0)(
        image=FRAME, mask=mask
    )
    assert out["image"].shape == (SIDE, SIDE, 3)
    assert 0.1 < out["mask"].mean() < 0.3, "the whole plume, shrunk with the frame"


def test_the_training_pipeline_round_trips_as_data():
    image_cfg = _native(context_probability=0.4)
    pipeline = build_train_transform(AugmentationConfig(augmentations_strategy="Medium"), image_cfg, seed=5)
    serialised = A.to_dict(pipeline)
    with warnings.catch_warnings():  # albumentations writes PadIfNeeded's unused 'padding' and warns on it
        warnings.simplefilter("ignore", UserWarning)
        restored = A.from_dict(json.loads(json.dumps(serialised)))
    assert A.to_dict(restored) == serialised
    restored.set_random_seed(5)
    for mine, theirs in zip(_draws(pipeline, 20), _draws(restored, 20), strict=True):
        np.testing.assert_array_equal(mine, theirs)


MODELS = [tiny_fcn(0), tiny_fcn(1)]


def _config(tta: tuple[str, ...] = ("horizontal_flip",), **image: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "image": {"image_height": SIDE, "image_width": SIDE, **image},
            "prediction": {"test_time_augmentations": list(tta)},
        }
    )


def _scores(frames: list[np.ndarray], **image: Any) -> list[np.ndarray]:
    """An ensemble of two with a test-time flip, so both passes must average them."""
    return Predictor(MODELS, _config(**image)).predict_images(frames)


COMBINED = {"mean": lambda native, context: (native + context) / 2, "max": np.maximum}


@pytest.mark.parametrize("context_pass", sorted(COMBINED))
def test_the_context_pass_combines_the_native_and_the_resize_pass(context_pass: str):
    native = _scores(FRAMES, resolution="native")
    resized = _scores(FRAMES, resolution="resize")
    combined = _scores(FRAMES, resolution="native", context_pass=context_pass)
    for frame, got, at_native, at_model_size in zip(FRAMES, combined, native, resized, strict=True):
        assert got.shape == at_native.shape
        np.testing.assert_allclose(got, COMBINED[context_pass](at_native, at_model_size), atol=1e-5)
        # A frame at the model size is the same view twice; any other frame gets a second opinion.
        changed = np.abs(got - at_native).max() > 0.05
        assert changed == (frame.shape[:2] != (SIDE, SIDE))


@pytest.mark.parametrize("context_pass", sorted(COMBINED))
def test_frames_brought_to_long_side_combine_at_that_side(context_pass: str):
    """Both passes score the view brought to long_side; the combination is resized to the frame."""
    frame, side = FRAMES[0], 200
    view = fit_to_size(frame, (side, side), enlarge=True)
    native, resized = _scores([view], resolution="native")[0], _scores([view], resolution="resize")[0]
    expected = cv2.resize(
        COMBINED[context_pass](native, resized), frame.shape[1::-1], interpolation=cv2.INTER_LINEAR
    )
    combined = _scores([frame], resolution="native", long_side=side, context_pass=context_pass)[0]
    np.testing.assert_allclose(combined, expected, atol=1e-5)


@pytest.mark.parametrize("long_side", [None, 280])
def test_a_crop_scored_alone_is_its_frames_native_pass_at_the_frames_scale(long_side: int | None):
    """``score_crops``, as smoke-free crops are judged: the native pass at the scale the frame gets (280
    enlarges this 90x140 frame 2x), without the frame's context pass, which a crop cannot show."""
    frame, (top, left, side) = FRAMES[0], (20, 40, 40)
    image = {"resolution": "native", "long_side": long_side}
    native = _scores([frame], tta=(), **image)[0][top : top + side, left : left + side]
    with_context = _scores([frame], tta=(), context_pass="mean", **image)[0][
        top : top + side, left : left + side
    ]
    predictor = Predictor(MODELS, _config(tta=(), context_pass="mean", **image))
    [(alone, image_probability)] = predictor.score_crops(
        [frame[top : top + side, left : left + side]], [frame.shape[:2]]
    )
    assert alone.shape == (side, side) and image_probability is None
    inside = (slice(3, -3), slice(3, -3))  # beyond the models' reach (2 px, 4 at 2x) of the crop's edges
    np.testing.assert_allclose(alone[inside], native[inside], atol=1e-5)
    assert np.abs(alone[inside] - with_context[inside]).max() > 0.05, "the frame's context pass changes it"
    # A frame without a smoke-free window gives none to score, in either way of scoring.
    assert predictor.score_crops([], []) == [] == Predictor(MODELS, _config(tta=())).score_crops([], [])


def test_without_a_context_pass_native_scoring_is_the_native_pass_alone():
    for frame, got in zip(FRAMES, _scores(FRAMES, tta=(), resolution="native"), strict=True):
        height, width = frame.shape[:2]
        padded = cv2.copyMakeBorder(frame, 0, -height % 32, 0, -width % 32, cv2.BORDER_REFLECT_101)
        pixels = torch.from_numpy(normalize(padded, "Simple").transpose(2, 0, 1)[None].copy())
        with torch.no_grad():
            expected = torch.stack([torch.sigmoid(model(pixels)) for model in MODELS]).mean(0)
        np.testing.assert_allclose(got, expected[0, 0, :height, :width].numpy(), atol=1e-5)


@pytest.mark.parametrize("context_pass", ["none", "mean", "max"])
def test_validation_scores_frames_as_the_predictor_does(toy_datasets, context_pass: str):
    """The per-epoch metric and loss read the combined scores (the Predictor's, without its test-time
    augmentations); the stride padding keeps the native pass's."""
    config = _config(tta=(), resolution="native", context_pass=context_pass)
    config = config.model_copy(
        update={"architecture": config.architecture.model_copy(update={"pretrained": False})}
    )
    module = SmokeSegmentationModule(config.model_dump(mode="json"))
    module.model = MODELS[0]
    samples = load_samples(toy_datasets.folders(), None, DatasetConfig(), require_masks=True)
    dataset = run._validation_dataset(samples, config)
    predictor = Predictor([MODELS[0]], config)
    for index, sample in enumerate(samples):
        item = dataset[index]
        assert ("context" in item) == (context_pass != "none")
        batch = {
            key: value[None] if torch.is_tensor(value) else torch.tensor([value])
            for key, value in item.items()
        }
        with torch.no_grad():
            native = torch.sigmoid(module(batch["image"])[0])[0, 0].numpy()
            logits = module(batch["image"])[0]
            if "context" in batch:
                logits = module._with_context_pass(logits, batch["context"], batch["size"])
            module.validation_step(batch, index)
            assert module.validation_losses[index] == pytest.approx(module.loss(logits, batch["mask"]).item())
        probabilities = torch.sigmoid(logits)[0, 0].numpy()
        image = sample.load_image()
        height, width = image.shape[:2]
        expected = predictor.predict_images([image])[0]
        np.testing.assert_allclose(probabilities[:height, :width], expected, atol=1e-4)
        np.testing.assert_allclose(probabilities[height:], native[height:], atol=1e-4)
        np.testing.assert_allclose(probabilities[:, width:], native[:, width:], atol=1e-4)


@pytest.mark.parametrize("keys", [{"context_probability": 0.5}, {"context_pass": "mean"}])
def test_context_keys_need_native_resolution(keys: dict[str, Any], tmp_path):
    with pytest.raises(ValidationError, match="resolution: native"):
        ImageConfig(resolution="resize", **keys)
    overrides = [f"image.{key}={value}" for key, value in keys.items()]
    path = tmp_path / "config.yaml"
    path.write_text("experiment_name: context\n")
    with pytest.raises(ConfigError, match="set resolution: native"):
        load_config(path, overrides)
    assert load_config(path, [*overrides, "image.resolution=native"]).image.resolution == "native"


@pytest.mark.parametrize("keys", [{"context_probability": 1.5}, {"context_pass": "sum"}])
def test_context_keys_take_only_their_values(keys: dict[str, Any]):
    with pytest.raises(ValidationError):
        _native(**keys)


def test_a_custom_training_pipeline_refuses_a_context_share():
    with pytest.raises(ConfigError, match="context_probability: 0"):
        build_train_transform(
            AugmentationConfig(augmentations_strategy="Custom"), _native(context_probability=0.2)
        )
    build_train_transform(AugmentationConfig(augmentations_strategy="Custom"), _native())


def test_a_model_trains_and_validates_with_the_context_view(tmp_path):
    """End to end through Lightning: the context view in training batches, the combined scores in the
    per-epoch validation (its extra keys collate) and in the fold's tables."""
    config_path = generate_demo_dataset(tmp_path / "data", n_train=8, n_test=2, size=(64, 96), seed=3)
    overrides = [*TINY, "training.epochs=1", "image.resolution=native", "image.image_height=32"]
    overrides += ["image.image_width=32", "image.context_probability=0.5", "image.context_pass=max"]
    results = run.train(load_config(config_path, overrides), tmp_path / "exp", progress=False)
    assert math.isfinite(results[0].metrics["validation_loss"])
    test = pd.read_parquet(tmp_path / "exp/fold0/test_predictions.parquet")
    assert (test["height"] == 64).all() and (test["width"] == 96).all()
