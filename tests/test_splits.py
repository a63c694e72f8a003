"""Grouped train/validation splits for kfold, automatic and custom strategies."""

from __future__ import annotations

import numpy as np
import pytest

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.splits import assign_folds, resolve_seed, split_train_validation
from smokeseg.errors import ConfigError

IMAGE_IDS = [f"image_{index:03d}.jpg" for index in range(64)]
# Three rows per camera: a camera's frames must stay on one side.
CAMERAS = [f"camera_{index // 3}" for index in range(60)]


def test_resolve_seed() -> None:
    assert resolve_seed(7) == 7
    drawn = {resolve_seed(-1) for _ in range(5)}
    assert all(0 <= seed < 2**31 for seed in drawn)
    assert len(drawn) > 1


def test_reference_counts_51_13() -> None:
    train, val = split_train_validation(IMAGE_IDS, DatasetConfig(), fold=0, seed=0)
    assert (len(train), len(val)) == (51, 13)
    train, val = split_train_validation(64, DatasetConfig(validation_strategy="automatic"), fold=0, seed=0)
    assert (len(train), len(val)) == (51, 13)


@pytest.mark.parametrize("strategy", ["kfold", "automatic"])
def test_deterministic_sorted_and_seed_dependent(strategy: str) -> None:
    cfg = DatasetConfig(validation_strategy=strategy)
    first = split_train_validation(IMAGE_IDS, cfg, fold=0, seed=5)
    second = split_train_validation(IMAGE_IDS, cfg, fold=0, seed=5)
    other = split_train_validation(IMAGE_IDS, cfg, fold=0, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[1], other[1])
    assert all(np.array_equal(part, np.sort(part)) for part in first)
    assert sorted([*first[0], *first[1]]) == list(range(64))


def test_split_ignores_row_order() -> None:
    """The same images in another order land in the same folds."""
    reversed_ids = IMAGE_IDS[::-1]
    folds = assign_folds(IMAGE_IDS, 0.2, seed=1)
    reversed_folds = assign_folds(reversed_ids, 0.2, seed=1)
    assert np.array_equal(folds, reversed_folds[::-1])


@pytest.mark.parametrize("strategy", ["kfold", "automatic"])
def test_groups_never_straddle(strategy: str) -> None:
    train, val = split_train_validation(
        CAMERAS, DatasetConfig(validation_strategy=strategy, group_fold_column="camera"), fold=1, seed=0
    )
    groups = np.asarray(CAMERAS)
    assert not set(groups[train]) & set(groups[val])
    assert len(val) % 3 == 0


def test_every_sample_validated_once_across_folds() -> None:
    cfg = DatasetConfig(validation_size=0.2)
    seen = np.concatenate([split_train_validation(CAMERAS, cfg, fold=fold, seed=3)[1] for fold in range(5)])
    assert sorted(seen.tolist()) == list(range(60))
    assert np.bincount(assign_folds(CAMERAS, 0.2, seed=3)).tolist() == [12] * 5


@pytest.mark.parametrize(("validation_size", "folds"), [(0.2, 5), (0.25, 4), (0.1, 10), (0.5, 2)])
def test_fold_count_follows_validation_size(validation_size: float, folds: int) -> None:
    assert assign_folds(IMAGE_IDS, validation_size, seed=0).max() + 1 == folds


def test_invalid_fold_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"fold 5 .* 0, 1, 2, 3, 4"):
        split_train_validation(IMAGE_IDS, DatasetConfig(), fold=5, seed=0)


def test_custom_trains_on_everything_and_excludes_leaked_groups() -> None:
    cfg = DatasetConfig(validation_strategy="custom", validation_dataframe="valid.pq")
    train, val = split_train_validation(IMAGE_IDS, cfg, fold=0, seed=0)
    assert np.array_equal(train, np.arange(64))
    assert val.size == 0
    with pytest.warns(UserWarning, match="2 training row"):
        train, _ = split_train_validation(
            IMAGE_IDS, cfg, fold=0, seed=0, validation_groups=[IMAGE_IDS[3], IMAGE_IDS[10], "elsewhere.jpg"]
        )
    assert 3 not in train and 10 not in train and len(train) == 62


def test_custom_without_validation_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="validation_dataframe"):
        split_train_validation(IMAGE_IDS, DatasetConfig(validation_strategy="custom"), fold=0, seed=0)
