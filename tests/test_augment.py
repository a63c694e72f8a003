"""Augmentation presets, Hydrogen Torch custom pipelines, and batch mixing."""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
import torch
import yaml

from smokeseg.config.schema import AugmentationConfig, ImageConfig
from smokeseg.data.augment import (
    MIXERS,
    PRESETS,
    build_inference_transform,
    build_train_transform,
    load_hydrogen_torch_pipeline,
    mix_batch,
)
from smokeseg.errors import ConfigError

# The seed config's custom_train_augmentations, as Hydrogen Torch wrote it.
SEED_PIPELINE = (
    '{"__version__": "1.1.0", "transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": '
    '[{"__class_fullname__": "Resize", "always_apply": true, "p": 1, "height": IMAGE_HEIGHT, '
    '"width": IMAGE_WIDTH, "interpolation": 1}], "bbox_params": null, "keypoint_params": null, '
    '"additional_targets": {}}}'
)
MODEL = ImageConfig(image_height=96, image_width=128)


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    mask = np.zeros((100, 120), np.uint8)
    mask[20:70, 40:90] = 1
    return image, mask


def test_seed_pipeline_loads_and_resizes(sample: tuple[np.ndarray, np.ndarray]) -> None:
    pipeline = load_hydrogen_torch_pipeline(SEED_PIPELINE, 256, 256)
    out = pipeline(image=sample[0], mask=sample[1])
    assert out["image"].shape == (256, 256, 3)
    assert out["mask"].shape == (256, 256)


def test_seed_config_strings_load(smoke_ht_config_path) -> None:
    section = yaml.safe_load(smoke_ht_config_path.read_text())["augmentation"]
    for key in ("custom_train_augmentations", "custom_inference_augmentations"):
        pipeline = load_hydrogen_torch_pipeline(section[key], 256, 256)
        assert isinstance(pipeline.transforms[-1], A.Resize)


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_preset_outputs_model_size_and_binary_mask(
    strategy: str, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    pipeline = build_train_transform(AugmentationConfig(augmentations_strategy=strategy), MODEL, seed=0)
    for _ in range(10):
        out = pipeline(image=sample[0], mask=sample[1])
        assert out["image"].shape == (96, 128, 3)
        assert out["image"].dtype == np.uint8
        assert out["mask"].shape == (96, 128)
        assert set(np.unique(out["mask"])) <= {0, 1}


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_preset_round_trips_through_dict(strategy: str) -> None:
    pipeline = build_train_transform(AugmentationConfig(augmentations_strategy=strategy), MODEL)
    serialised = A.to_dict(pipeline)
    restored = A.from_dict(json.loads(json.dumps(serialised)))
    assert A.to_dict(restored) == serialised


def _class_names(transform: A.BasicTransform) -> list[str]:
    children = getattr(transform, "transforms", [])
    return [type(transform).__name__, *(name for child in children for name in _class_names(child))]


@pytest.mark.parametrize("strategy", list(PRESETS))
def test_no_preset_flips_vertically(strategy: str) -> None:
    names = _class_names(build_train_transform(AugmentationConfig(augmentations_strategy=strategy), MODEL))
    assert not {"VerticalFlip", "Transpose", "RandomRotate90", "D4"} & set(names)


def test_inference_is_resize_only_unless_custom() -> None:
    pipeline = build_inference_transform(AugmentationConfig(augmentations_strategy="Hard"), MODEL)
    assert _class_names(pipeline) == ["Compose", "Resize"]
    custom = AugmentationConfig(
        augmentations_strategy="Custom",
        custom_inference_augmentations=SEED_PIPELINE.replace(
            '"transforms": [', '"transforms": [{"__class_fullname__": "HorizontalFlip", "p": 1.0}, '
        ),
    )
    names = _class_names(build_inference_transform(custom, MODEL))
    assert names == ["Compose", "HorizontalFlip", "Resize"]


def test_custom_without_model_size_resize_gets_one(sample: tuple[np.ndarray, np.ndarray]) -> None:
    flip_only = (
        '{"transform": {"__class_fullname__": "Compose", '
        '"transforms": [{"__class_fullname__": "HorizontalFlip"}]}}'
    )
    cfg = AugmentationConfig(augmentations_strategy="Custom", custom_train_augmentations=flip_only)
    out = build_train_transform(cfg, MODEL)(image=sample[0], mask=sample[1])
    assert out["image"].shape == (96, 128, 3)


def test_old_argument_names_are_upgraded() -> None:
    old = (
        '{"transform": {"__class_fullname__": "Compose", "transforms": ['
        '{"__class_fullname__": "albumentations.augmentations.transforms.JpegCompression", '
        '"quality_lower": 50, "quality_upper": 90, "always_apply": false, "p": 0.5}, '
        '{"__class_fullname__": "GaussNoise", "var_limit": [10, 50], "p": 0.5}, '
        '{"__class_fullname__": "Resize", "height": IMAGE_HEIGHT, "width": IMAGE_WIDTH}]}}'
    )
    compression, noise, resize = load_hydrogen_torch_pipeline(old, 64, 96).transforms
    assert isinstance(compression, A.ImageCompression)
    assert tuple(compression.quality_range) == (50, 90)
    assert noise.std_range == pytest.approx((np.sqrt(10) / 255, np.sqrt(50) / 255))
    assert (resize.height, resize.width, resize.p) == (64, 96, 1.0)  # a missing p keeps Resize's 1.0


def test_unknown_argument_is_dropped_with_warning() -> None:
    text = SEED_PIPELINE.replace('"interpolation": 1', '"interpolation": 1, "sharpness": 3')
    with pytest.warns(UserWarning, match="sharpness"):
        pipeline = load_hydrogen_torch_pipeline(text, 32, 32)
    assert isinstance(pipeline.transforms[0], A.Resize)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"transform": {"__class_fullname__": "Compose", "transforms": [}', "not valid JSON"),
        (SEED_PIPELINE.replace('"Resize"', '"SmokeMaker"'), "unknown transform 'SmokeMaker'"),
        (SEED_PIPELINE.replace("IMAGE_HEIGHT", '"tall"'), "cannot build"),
    ],
)
def test_bad_custom_pipeline_names_the_key(text: str, problem: str) -> None:
    cfg = AugmentationConfig(augmentations_strategy="Custom", custom_train_augmentations=text)
    with pytest.raises(ConfigError, match=r"augmentation\.custom_train_augmentations") as error:
        build_train_transform(cfg, MODEL)
    assert problem in str(error.value)


# --- batch mixing ---


def _batch(size: int = 4, height: int = 32, width: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with i, so every pixel tells which image it came from."""
    images = torch.arange(size, dtype=torch.float32).view(size, 1, 1, 1).expand(size, 3, height, width)
    masks = torch.zeros(size, 1, height, width)
    masks[::2] = 1.0  # even images all smoke, odd ones none
    return images.clone(), masks


def _cfg(**values: object) -> AugmentationConfig:
    return AugmentationConfig(**values)


def test_disabled_and_probability_zero_leave_the_batch() -> None:
    images, masks = _batch()
    for cfg in (_cfg(mix_image="Disabled"), _cfg(mix_image="Mixup", mix_probability=0.0)):
        mixed_images, mixed_masks = mix_batch(images, masks, cfg, torch.Generator().manual_seed(0))
        assert torch.equal(mixed_images, images)
        assert torch.equal(mixed_masks, masks)


def test_mixup_ratio_and_max_targets() -> None:
    images, masks = _batch()
    partner = torch.tensor([1, 0, 3, 2])
    generator = torch.Generator().manual_seed(0)
    mixed, ratio = MIXERS["Mixup"](images, masks, partner, 0.7, _cfg(mix_image="Mixup"), generator)
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 0.7 * 0 + 0.3 * 1))
    assert torch.allclose(ratio[0], torch.full_like(ratio[0], 0.7))  # 0.7 * smoke + 0.3 * none
    _, maximum = MIXERS["Mixup"](images, masks, partner, 0.7, _cfg(mix_target="Max"), generator)
    assert torch.equal(maximum, torch.ones_like(maximum))


def test_mix_batch_is_reproducible_and_changes_the_batch() -> None:
    images, masks = _batch(8)
    cfg = _cfg(mix_image="Mixup", mix_iterations=2)
    first = mix_batch(images, masks, cfg, torch.Generator().manual_seed(3))
    second = mix_batch(images, masks, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1], second[1])
    assert not torch.equal(first[0], images)
    assert torch.equal(images, _batch(8)[0])  # inputs untouched


@pytest.mark.parametrize("lam", [0.3, 0.6, 0.9])
def test_cutmix_box_area_matches_lambda(lam: float) -> None:
    images, masks = _batch(height=64, width=96)
    partner = torch.tensor([1, 0, 3, 2])
    mixed, mixed_masks = MIXERS["Cutmix"](
        images, masks, partner, lam, _cfg(mix_image="Cutmix"), torch.Generator().manual_seed(1)
    )
    pasted = mixed[0, 0] == 1
    assert pasted.float().mean().item() == pytest.approx(1 - lam, abs=0.02)
    assert torch.equal(mixed_masks[0, 0] == 0, pasted)  # the box carries the partner's mask
    rows, cols = pasted.nonzero(as_tuple=True)
    box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box_area.item() == pasted.sum().item()  # one solid rectangle


def test_cutmix_corner_box_touches_a_corner() -> None:
    images, masks = _batch(height=64, width=96)
    partner = torch.tensor([1, 0, 3, 2])
    cfg = _cfg(mix_image="Cutmix", cutmix_corner=True)
    for seed in range(8):
        mixed, _ = MIXERS["Cutmix"](images, masks, partner, 0.5, cfg, torch.Generator().manual_seed(seed))
        rows, cols = (mixed[0, 0] == 1).nonzero(as_tuple=True)
        assert rows.min() == 0 or rows.max() == 63
        assert cols.min() == 0 or cols.max() == 95


def test_mix_batch_cutmix_through_registry() -> None:
    images, masks = _batch(8)
    mixed, mixed_masks = mix_batch(images, masks, _cfg(mix_image="Cutmix"), torch.Generator().manual_seed(0))
    assert mixed.shape == images.shape
    assert set(torch.unique(mixed_masks).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("resolution", ["native", "resize"])
def test_glare_brightens_the_image_and_leaves_the_mask(
    resolution: str, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    image_cfg = ImageConfig(image_height=64, image_width=64, resolution=resolution)
    plain = build_train_transform(AugmentationConfig(augmentations_strategy="Soft"), image_cfg, seed=3)
    glare_cfg = AugmentationConfig(augmentations_strategy="Soft", glare_probability=1.0)
    glared = build_train_transform(glare_cfg, image_cfg, seed=3)
    for _ in range(5):
        without, with_glare = plain(image=sample[0], mask=sample[1]), glared(image=sample[0], mask=sample[1])
        # The flare comes last, so the same seed gives the same crop and preset draws before it.
        np.testing.assert_array_equal(with_glare["mask"], without["mask"])
        brighter = with_glare["image"].astype(int) - without["image"].astype(int)
        assert brighter.min() >= 0  # screen blending only adds light
        assert (brighter > 0).mean() > 0.01


def test_glare_is_off_by_default_and_serialises() -> None:
    assert "RandomSunFlare" not in _class_names(build_train_transform(AugmentationConfig(), MODEL))
    pipeline = build_train_transform(AugmentationConfig(glare_probability=0.2), MODEL)
    flare = pipeline.transforms[-1]
    assert isinstance(flare, A.RandomSunFlare) and flare.p == 0.2
    assert A.to_dict(A.from_dict(A.to_dict(pipeline))) == A.to_dict(pipeline)


def test_glare_with_custom_pipeline_says_where_to_put_it() -> None:
    cfg = AugmentationConfig(augmentations_strategy="Custom", glare_probability=0.2)
    with pytest.raises(ConfigError, match="RandomSunFlare into that pipeline"):
        build_train_transform(cfg, MODEL)
