"""Fold groups: frames of one fire or camera scene must never straddle a train/validation split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smokeseg.config.schema import DatasetConfig, ExperimentConfig
from smokeseg.data.formats import FolderStore, Sample, samples_from_folders
from smokeseg.data.groups import assign_groups
from smokeseg.data.splits import number_of_folds, split_train_validation
from smokeseg.errors import ConfigError


def _samples(names: list[str], root: Path) -> list[Sample]:
    return [Sample(image_id=name, store=FolderStore(root), group=name) for name in names]


def _cuid(index: int) -> str:
    """A ``ck`` + 23-character name, as HPWREN frames labelled with CUIDs are named."""
    return f"ck{index:023d}"


def test_timestamp_frames_share_their_fire(tmp_path: Path) -> None:
    # 1528757586 - 180 == 1528757766 - 360: one fire started at 1528757406; the third started later.
    names = ["cam/1528757586_+00180.jpg", "1528757766_+00360.jpg", "1529001200_+00240.jpg", "other.jpg"]
    groups = assign_groups(_samples(names, tmp_path), "fire_sequence")
    assert groups == ["fire-1528757406", "fire-1528757406", "fire-1529000960", "other.jpg"]


def test_column_rule_keeps_the_table_groups(tmp_path: Path) -> None:
    samples = [Sample(image_id="1528757586_+00180.jpg", store=FolderStore(tmp_path), group="camera-7")]
    assert assign_groups(samples, "column") == ["camera-7"]


def test_look_alike_camera_frames_share_a_scene(tmp_path: Path) -> None:
    """Two noisy copies of one view are one scene, however the rows are ordered; another view is not."""
    rng = np.random.default_rng(0)
    views = [np.kron(rng.uniform(0, 255, (3, 4)), np.ones((16, 16))) for _ in range(2)]
    pixels = [views[0], views[0] + rng.normal(0, 3, views[0].shape), views[1]]
    names = [f"{_cuid(index)}.png" for index in range(len(pixels))]
    for name, image in zip(names, pixels, strict=True):
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("RGB").save(tmp_path / name)
    samples = _samples(names, tmp_path)

    groups = assign_groups(samples, "fire_sequence")

    assert groups[0] == groups[1] == f"scene-{names[0]}"
    assert groups[2] == f"scene-{names[2]}"
    assert assign_groups(samples[::-1], "fire_sequence") == groups[::-1]


def test_grouped_kfold_never_splits_a_fire(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    names = [
        f"{start + offset}_+{offset:05d}.jpg"
        for start in range(1_500_000_000, 1_500_000_000 + 9 * 86_400, 86_400)
        for offset in range(0, 180 * int(rng.integers(1, 6)), 180)
    ]
    groups = np.asarray(assign_groups(_samples(names, tmp_path), "fire_sequence"))
    dataset_cfg = DatasetConfig(validation_size=0.25)
    assert len(set(groups)) == 9

    for fold in range(number_of_folds(dataset_cfg.validation_size)):
        train_idx, validation_idx = split_train_validation(list(groups), dataset_cfg, fold=fold, seed=3)
        assert validation_idx.size
        assert not set(groups[train_idx]) & set(groups[validation_idx])


def test_unknown_rule_says_which_rules_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="column, fire_sequence"):
        assign_groups(_samples(["a.jpg"], tmp_path), "camera")


def test_config_takes_the_rule() -> None:
    assert ExperimentConfig().dataset.group_rule == "column"
    assert ExperimentConfig(dataset={"group_rule": "fire_sequence"}).dataset.group_rule == "fire_sequence"


@pytest.mark.shared
def test_smoke5k_timestamp_frames_form_eight_fires(smoke5k_root: Path) -> None:
    frames = [sample for sample in samples_from_folders(smoke5k_root) if "_+" in sample.image_id]

    groups = Counter(assign_groups(frames, "fire_sequence"))

    assert len(frames) == 71
    assert sorted(groups.values()) == [5, 8, 9, 9, 9, 10, 10, 11]
    assert all(group.startswith("fire-") for group in groups)
