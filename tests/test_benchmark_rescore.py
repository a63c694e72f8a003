"""benchmarks/rescore.py: a trained fold scored with other scoring keys, its weights untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smokeseg.config.load import load_config
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError
from smokeseg.inference.predictor import Predictor
from smokeseg.training import run
from test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
# A seconds-long fold: the training tests' tiny model, one epoch, no test table.
ONE_EPOCH = [*TINY, "training.epochs=1", "dataset.test_dataframe=None"]


@pytest.fixture(scope="module")
def fold(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rescore")
    dataset = generate_demo_dataset(folder / "data", n_train=8, n_test=2, size=(64, 64), seed=5)
    run.train(load_config(dataset, ONE_EPOCH), folder / "exp", progress=False)
    return folder / "exp/fold0"


@pytest.fixture
def rescore(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rescore

    return rescore


def test_the_copy_scores_with_the_new_keys_and_the_same_weights(fold: Path, tmp_path: Path, rescore):
    copy = rescore.copy_with_scoring(
        fold, tmp_path / "flip", ["prediction.test_time_augmentations=[horizontal_flip]"]
    )
    assert Predictor.from_path(copy).config.prediction.test_time_augmentations == ["horizontal_flip"]
    assert Predictor.from_path(fold).config.prediction.test_time_augmentations == []
    original, changed = (
        torch.load(f / "checkpoint.ckpt", weights_only=False)["state_dict"] for f in (fold, copy)
    )
    assert all(torch.equal(original[key], changed[key]) for key in original)


def test_keys_that_change_the_model_are_refused(fold: Path, tmp_path: Path, rescore):
    with pytest.raises(SystemExit, match="only scoring keys"):
        rescore.copy_with_scoring(fold, tmp_path / "bad", ["architecture.backbone=resnet34"])
    with pytest.raises(ConfigError, match="context_pass"):
        rescore.copy_with_scoring(fold, tmp_path / "bad", ["image.context_pass=sum"])
