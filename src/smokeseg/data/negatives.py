"""Smoke-free windows of labelled frames (hard negatives), and how training draws them.

A window is smoke-free when no true smoke lies within ``margin`` pixels of it: a mask's edge is drawn by
hand, and a crop that grazes a plume would teach the model to miss smoke. Two rules choose among the
clean windows of a frame: ``hard`` takes the ones where the current model is most wrong (its highest
probability there is above its threshold), ``random`` takes uniformly random ones, the baseline the hard
ones are compared with at the same share.

Training appends the crops to the training samples only, with empty masks, drawing a fresh choice of
them each epoch (``NegativeMix``) so that they make about ``dataset.negative_share`` of it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Sampler

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import Sample, check_table_exists, load_samples, read_table, split_zip_path
from smokeseg.errors import ConfigError

logger = logging.getLogger(__name__)

# Windows start every STRIDE pixels: finer steps give near-duplicate crops for many times the work.
STRIDE = 16


@dataclass(frozen=True)
class WindowSpec:
    """``size`` x ``size`` windows, ``margin`` pixels clear of smoke, up to ``count`` per frame.

    ``threshold``: hard windows are those where the model's highest probability is above it; None, mining's
    default, takes the mining model's own threshold (there it would raise an alarm), a tuned operating
    point's lower one also mines the fainter alarms raised there, and 0 each frame's most smoke-like
    windows whatever their score. ``max_overlap``: the share of a window's area that
    may overlap an already chosen hard window, so that one false alarm does not fill a frame's quota.
    """

    size: int = 256
    margin: int = 32
    count: int = 1
    threshold: float | None = None
    max_overlap: float = 0.25


@dataclass(frozen=True)
class Window:
    """A window's top-left corner; hard windows also carry the model's highest probability inside."""

    y: int
    x: int
    probability_max: float | None = None


def _window_sums(table: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Sums over ``size`` x ``size`` windows at ``corners`` (N x 2, y then x), from a summed-area table."""
    y, x = corners[:, 0], corners[:, 1]
    return table[y + size, x + size] - table[y, x + size] - table[y + size, x] + table[y, x]


def clean_corners(mask: np.ndarray, size: int, margin: int) -> np.ndarray:
    """Top-left corners (N x 2, y then x), every ``STRIDE`` pixels, of windows with no smoke within
    ``margin``, in row-major order."""
    height, width = mask.shape
    corners = np.array(
        [(y, x) for y in range(0, height - size + 1, STRIDE) for x in range(0, width - size + 1, STRIDE)],
        dtype=np.int64,
    ).reshape(-1, 2)
    near_smoke = cv2.dilate(mask.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    return corners[_window_sums(cv2.integral(near_smoke), corners, size) == 0]


def smoke_free_windows(
    mask: np.ndarray, size: int, margin: int, count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Up to ``count`` uniformly random top-left corners of ``size`` x ``size`` windows with no smoke
    within ``margin`` (the random rule; also ``benchmarks/false_alarms.py``'s negatives)."""
    clean = clean_corners(mask, size, margin)
    picked = rng.permutation(len(clean))[:count]
    return [(int(clean[i, 0]), int(clean[i, 1])) for i in picked]


def _window_maxima(probabilities: np.ndarray, size: int) -> np.ndarray:
    """The highest probability of each window on the ``STRIDE`` grid, indexed [y // STRIDE, x // STRIDE]:
    a max over rows, then over columns, so a frame costs ``size`` passes, not ``size**2``."""
    windows = np.lib.stride_tricks.sliding_window_view
    rows = windows(probabilities, size, axis=0)[::STRIDE].max(axis=-1)
    return windows(rows, size, axis=1)[:, ::STRIDE].max(axis=-1)


def hard_windows(probabilities: np.ndarray, mask: np.ndarray, spec: WindowSpec) -> list[Window]:
    """The smoke-free windows where the model is most wrong, worst first: ranked by the highest
    probability inside (ties, common around one false alarm, by the mean, so the window holding most of
    it wins), only those above ``spec.threshold``, each overlapping the ones before by at most
    ``spec.max_overlap`` of its area."""
    assert spec.threshold is not None, "hard windows need a threshold: mining gives the model's own"
    size = spec.size
    corners = clean_corners(mask, size, spec.margin)
    if not len(corners):
        return []
    probabilities = probabilities.astype(np.float32)
    peaks = _window_maxima(probabilities, size)[corners[:, 0] // STRIDE, corners[:, 1] // STRIDE]
    means = _window_sums(cv2.integral(probabilities), corners, size) / size**2
    wrong = peaks > spec.threshold
    corners, peaks, means = corners[wrong], peaks[wrong], means[wrong]
    chosen: list[Window] = []
    for i in np.lexsort((-means, -peaks)):
        y, x = int(corners[i, 0]), int(corners[i, 1])
        if all(
            max(0, size - abs(y - w.y)) * max(0, size - abs(x - w.x)) <= spec.max_overlap * size**2
            for w in chosen
        ):
            chosen.append(Window(y, x, float(peaks[i])))
        if len(chosen) == spec.count:
            break
    return chosen


WindowChooser = Callable[[np.ndarray, "np.ndarray | None", WindowSpec, np.random.Generator], list[Window]]


@dataclass(frozen=True)
class MiningRule:
    """How a frame's windows are chosen; ``scored``: whether it reads the model's probabilities (the
    random rule does not, so the model need not score the frame)."""

    scored: bool
    choose: WindowChooser


def _hard(
    mask: np.ndarray, probabilities: np.ndarray | None, spec: WindowSpec, rng: np.random.Generator
) -> list[Window]:
    assert probabilities is not None, "the hard rule is scored: mining passes the model's probabilities"
    return hard_windows(probabilities, mask, spec)


def _random(
    mask: np.ndarray, probabilities: np.ndarray | None, spec: WindowSpec, rng: np.random.Generator
) -> list[Window]:
    return [Window(y, x) for y, x in smoke_free_windows(mask, spec.size, spec.margin, spec.count, rng)]


MINING_RULES: dict[str, MiningRule] = {"hard": MiningRule(True, _hard), "random": MiningRule(False, _random)}


# --- training on them --------------------------------------------------------------------------------


def check_negative_table(dataset_cfg: DatasetConfig) -> Path | None:
    """The negatives table training draws from (None where ``negative_share`` is 0); a ConfigError,
    before any data is read, if it is not set or not there."""
    table = dataset_cfg.negative_table()
    check_table_exists(
        table,
        "negative_dataframe",
        "Point it at a table of smoke-free crops (`smokeseg mine-negatives` writes negatives.csv; relative "
        "paths are taken from the config file's folder), or set dataset.negative_share: 0.",
    )
    return table


def load_negatives(dataset_cfg: DatasetConfig) -> list[Sample]:
    """The crops of the negatives table, each with an empty mask. The table is read in the format
    mine-negatives writes (Hydrogen Torch's default column names); one that gives a crop a mask is
    refused, since a train table given here by mistake would teach the model to ignore smoke."""
    table = check_negative_table(dataset_cfg)
    if table is None:
        return []
    samples = load_samples(
        table,
        dataset_cfg.negative_data_folder,
        DatasetConfig(on_bad_sample=dataset_cfg.on_bad_sample),
        require_masks=False,
    )
    masked = [sample for sample in samples if sample.has_mask and sample.rles != ()]
    if masked:
        raise ConfigError(
            f"dataset.negative_dataframe {table}: {len(masked)} of {len(samples)} crops carry a mask (first: "
            f"{masked[0].source}). Negatives are smoke-free crops with empty masks, such as "
            "`smokeseg mine-negatives` writes."
        )
    return [dataclasses.replace(sample, rles=()) for sample in samples]


def negative_sources(dataset_cfg: DatasetConfig) -> dict[str, str]:
    """Each negative crop's source frame by image id (the ``source_image`` column mine-negatives writes),
    as ``frame_location`` gives it, so each fold can leave out of training the crops of its own
    validation frames; empty for a table without the column."""
    table = check_negative_table(dataset_cfg)
    if table is None:
        return {}
    frame = read_table(table)
    if "source_image" not in frame:
        return {}
    sources = {
        str(image_id): frame_location(str(source))
        for image_id, source in zip(frame["image_id"], frame["source_image"], strict=True)
        if isinstance(source, str) and source
    }
    gone = [source for source in sources.values() if not frame_on_disk(source)]
    if gone:
        logger.warning(
            "dataset.negative_dataframe %s: %d of %d crops name a source frame that is not there "
            "(first: %s), so a fold cannot tell whether it validates on that frame and keeps its crops. If "
            "the frames moved since mining, mine the negatives again from where they are now "
            "(smokeseg mine-negatives).",
            table,
            len(gone),
            len(sources),
            gone[0],
        )
    return sources


def frame_on_disk(location: str) -> bool:
    """A frame's file exists, or the archive it is a member of does (``/data/set.zip/images/a.jpg``)."""
    return Path(location).is_file() or split_zip_path(location) is not None


def frame_location(location: str) -> str:
    """A frame's location as an absolute, normalised path (a zip member's too), to match it across runs."""
    return os.path.abspath(location)


def negative_draws(share: float, train_samples: int) -> int:
    """Negatives per epoch so that they are ``share`` of it: share / (1 - share) per training sample."""
    return round(share / (1 - share) * train_samples)


class NegativeMix(Sampler[int]):
    """Each epoch, every training sample (indices below ``train``) once and ``draws`` negatives
    (indices from ``train`` on), shuffled together.

    The negatives drawn change with the epoch (Lightning calls ``set_epoch``, so a resumed run draws
    what the uninterrupted one would) and follow ``seed``. Where there are fewer negatives than draws,
    each is drawn as evenly as the count allows.
    """

    def __init__(self, train: int, negatives: int, draws: int, seed: int) -> None:
        self.train, self.negatives, self.draws, self.seed = train, negatives, draws, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.train + self.draws

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = self.train + np.resize(rng.permutation(self.negatives), self.draws)
        order = rng.permutation(np.concatenate([np.arange(self.train), drawn]))
        return iter(order.tolist())
