"""Train/validation splits for Hydrogen Torch's three validation strategies.

Splits are grouped: every sample of a group (by default one image id) lands on the same side, so
near-duplicate frames or several rows of one image never leak from training into validation. A split
depends only on the set of groups and the seed, not on the table's row order.

==========  ===============================================================================
strategy    validation set
==========  ===============================================================================
kfold       fold ``fold`` of ``k = round(1 / validation_size)`` grouped folds (0.2 -> 5)
custom      the separate ``dataset.validation_dataframe``; the whole train table trains
automatic   one random grouped split holding ``validation_size`` of the samples
==========  ===============================================================================
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from smokeseg.config.schema import DatasetConfig
from smokeseg.errors import ConfigError, DataError

Split = tuple[np.ndarray, np.ndarray]


def resolve_seed(seed: int) -> int:
    """``-1`` draws a fresh seed; record the result so the run can be repeated."""
    return secrets.randbelow(2**31 - 1) if seed == -1 else seed


def number_of_folds(validation_size: float) -> int:
    """Hydrogen Torch's fold count: each fold holds about ``validation_size`` of the data."""
    return max(2, round(1 / validation_size))


def _encode_groups(groups: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Group codes per sample, numbered in sorted order of the group names (independent of row order)."""
    names = np.asarray([str(group) for group in groups], dtype=str)
    _, codes = np.unique(names, return_inverse=True)
    return codes.ravel(), int(codes.max(initial=-1)) + 1


def _shuffled_groups(n_groups: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n_groups)


def assign_folds(groups: Sequence[Hashable], validation_size: float, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each sample, ``k = round(1 / validation_size)``.

    Groups are shuffled with ``seed``, then, largest first, each goes to the fold holding the fewest
    samples so far; with one sample per group this deals them round-robin (64 -> 13, 13, 13, 13, 12).
    """
    codes, n_groups = _encode_groups(groups)
    k = number_of_folds(validation_size)
    if n_groups < k:
        raise DataError(
            f"{n_groups} group(s) cannot fill {k} folds (validation_size {validation_size}); "
            "add data, raise dataset.validation_size, or use dataset.group_fold_column with more groups."
        )
    sizes = np.bincount(codes, minlength=n_groups)
    order = _shuffled_groups(n_groups, seed)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(n_groups, dtype=np.int64)
    fold_sizes = np.zeros(k, dtype=np.int64)
    for group in order:
        fold = int(np.argmin(fold_sizes))
        fold_of_group[group] = fold
        fold_sizes[fold] += sizes[group]
    return fold_of_group[codes]


def _kfold(groups: Sequence[Hashable], dataset_cfg: DatasetConfig, fold: int, seed: int) -> Split:
    k = number_of_folds(dataset_cfg.validation_size)
    if not 0 <= fold < k:
        raise ConfigError(
            f"dataset.folds: fold {fold} does not exist; validation_size {dataset_cfg.validation_size} "
            f"makes {k} folds, so use one of {', '.join(map(str, range(k)))}."
        )
    folds = assign_folds(groups, dataset_cfg.validation_size, seed)
    return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)


def _automatic(groups: Sequence[Hashable], dataset_cfg: DatasetConfig, fold: int, seed: int) -> Split:
    """Take shuffled groups until the validation side is as close as it gets to ``validation_size``."""
    codes, n_groups = _encode_groups(groups)
    if n_groups < 2:
        raise DataError(
            f"{n_groups} group(s) cannot be split into training and validation; add data, or set "
            "dataset.validation_strategy=custom with a dataset.validation_dataframe."
        )
    order = _shuffled_groups(n_groups, seed)
    cumulative = np.cumsum(np.bincount(codes, minlength=n_groups)[order])
    target = dataset_cfg.validation_size * len(codes)
    n_val_groups = int(np.argmin(np.abs(cumulative[:-1] - target))) + 1  # at least one group per side
    is_val = np.isin(codes, order[:n_val_groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _custom(groups: Sequence[Hashable], dataset_cfg: DatasetConfig, fold: int, seed: int) -> Split:
    if dataset_cfg.validation_dataframe is None:
        raise ConfigError(
            "dataset.validation_strategy is custom but dataset.validation_dataframe is not set; "
            "point it at a validation table, or use validation_strategy kfold or automatic."
        )
    return np.arange(len(groups)), np.empty(0, dtype=np.int64)


SPLITTERS: dict[str, Callable[[Sequence[Hashable], DatasetConfig, int, int], Split]] = {
    "kfold": _kfold,
    "automatic": _automatic,
    "custom": _custom,
}


def split_train_validation(
    groups: Sequence[Hashable] | int,
    dataset_cfg: DatasetConfig,
    fold: int,
    seed: int,
    validation_groups: Sequence[Hashable] | None = None,
) -> Split:
    """Sorted ``(train_idx, val_idx)`` row indices into the train table.

    ``groups`` holds each row's ``group_fold_column`` value, or is the row count when rows are their
    own groups. ``fold`` matters for kfold only. For custom, ``val_idx`` is empty: validate on the
    whole ``validation_dataframe``. Pass that table's group values as ``validation_groups`` and train
    rows of those groups are left out (with a warning), so validation never scores training images.
    """
    if isinstance(groups, int):
        groups = [str(index) for index in range(groups)]
    train_idx, val_idx = SPLITTERS[dataset_cfg.validation_strategy](groups, dataset_cfg, fold, seed)
    if validation_groups is not None:
        held_out = {str(group) for group in validation_groups}
        leaked = np.asarray([str(groups[index]) in held_out for index in train_idx], dtype=bool)
        if train_idx.size and leaked.all():
            raise DataError(
                "Every training row's group also appears in the validation table; "
                "use different images for dataset.validation_dataframe."
            )
        if leaked.any():
            warnings.warn(
                f"{int(leaked.sum())} training row(s) share a fold group (dataset.group_rule="
                f"{dataset_cfg.group_rule}) with the validation table; leaving them out of training.",
                stacklevel=2,
            )
            train_idx = train_idx[~leaked]
    return np.sort(train_idx), np.sort(val_idx)
