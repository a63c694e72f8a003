"""Multi-scale scoring of native-resolution models (``prediction.test_time_scales``): each whole-frame view
is also scored enlarged or shrunk, and the maps brought back to it are averaged with its own."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from smokeseg.config.load import load_config, with_scoring_overrides
from smokeseg.config.schema import ExperimentConfig, PredictionConfig
from smokeseg.data.dataset import fit_to_size, scale_image
from smokeseg.errors import ConfigError, SmokesegError
from smokeseg.inference.predictor import Predictor
from test_predict import tiny_fcn

SIDE = 64
MODELS = [tiny_fcn(0), tiny_fcn(1)]
FRAMES = [
    np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    for seed, size in enumerate([(90, 140, 3), (75, 50, 3), (SIDE, SIDE, 3)])
]


def _scores(frames: list[np.ndarray], scales: list[float], **image: Any) -> list[np.ndarray]:
    """An ensemble of two with a test-time flip: every scale's pass must average them too."""
    config = ExperimentConfig.model_validate(
        {
            "image": {"image_height": SIDE, "image_width": SIDE, "resolution": "native", **image},
            "prediction": {"test_time_augmentations": ["horizontal_flip"], "test_time_scales": scales},
        }
    )
    return Predictor(MODELS, config).predict_images(frames)


def _brought_back(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)


def test_each_scale_is_scored_on_its_own_and_averaged_at_the_view():
    scales = [1.5, 0.5]
    got = _scores(FRAMES, scales)
    own = _scores(FRAMES, [])
    for frame, combined, at_own_scale in zip(FRAMES, got, own, strict=True):
        height, width = frame.shape[:2]
        passes = [at_own_scale] + [
            _brought_back(_scores([scale_image(frame, scale)], [])[0], height, width) for scale in scales
        ]
        assert combined.shape == (height, width)
        np.testing.assert_allclose(combined, np.mean(passes, axis=0), atol=1e-5)
        assert np.abs(combined - at_own_scale).max() > 0.01, "the other scales give a second opinion"


def test_the_view_at_its_own_scale_again_changes_nothing():
    for twice, once in zip(_scores(FRAMES, [1.0]), _scores(FRAMES, []), strict=True):
        np.testing.assert_allclose(twice, once, atol=1e-6)


def test_scales_average_at_long_side_before_the_context_pass_combines():
    """The scales are views of the frame brought to long_side; the context pass then combines with
    their average, and the result is resized to the frame."""
    frame, side, scales = FRAMES[1], 128, [2.0]
    view = fit_to_size(frame, (side, side), enlarge=True)
    at_view = _scores([view], scales)[0]
    resized = ExperimentConfig.model_validate(
        {
            "image": {"image_height": SIDE, "image_width": SIDE},
            "prediction": {"test_time_augmentations": ["horizontal_flip"]},
        }
    )
    context = Predictor(MODELS, resized).predict_images([view])[0]
    expected = _brought_back((at_view + context) / 2, *frame.shape[:2])
    got = _scores([frame], scales, long_side=side, context_pass="mean")[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_scales_need_native_resolution(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("experiment_name: scales\n")
    with pytest.raises(ConfigError, match="test_time_scales acts only with image"):
        load_config(path, ["prediction.test_time_scales=[1.5]"])
    config = load_config(path, ["prediction.test_time_scales=1.5", "image.resolution=native"])
    assert config.prediction.test_time_scales == [1.5], "a bare factor is a list of one"


@pytest.mark.parametrize("scales", [[0], [-1.0], [4.5], ["large"]])
def test_scales_take_only_positive_factors_up_to_4(scales: list[Any]):
    with pytest.raises(ValidationError):
        PredictionConfig(test_time_scales=scales)


def test_scales_are_a_scoring_key_of_a_trained_model():
    """A trained model can be scored at other scales (`smokeseg predict --set`), native ones only."""
    native = ExperimentConfig.model_validate({"image": {"resolution": "native"}})
    scaled = with_scoring_overrides(native, ["prediction.test_time_scales=[1.5, 0.75]"], "--set")
    assert scaled.prediction.test_time_scales == [1.5, 0.75]
    with pytest.raises(ConfigError, match="set resolution: native"):
        with_scoring_overrides(ExperimentConfig(), ["prediction.test_time_scales=[1.5]"], "--set")


def test_a_scale_too_large_to_score_untiled_is_refused_naming_it():
    config = ExperimentConfig.model_validate(
        {"image": {"resolution": "native"}, "prediction": {"test_time_scales": [3.0]}}
    )
    predictor = Predictor(MODELS, config, max_untiled_pixels=90 * 140 * 4)
    with pytest.raises(SmokesegError, match=r"test-time scale 3\.0"):
        predictor.predict_images([FRAMES[0]])
