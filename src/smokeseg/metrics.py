"""Metrics shared by training, prediction, evaluation and tuning, so a number means the same everywhere.

Two views of the same pixel counts:
- dataset-level: true positives, false positives and false negatives summed over all images, then one
  ratio (large plumes weigh more);
- mean per image: one ratio per image, then the mean (every image weighs the same).
Rule for empty masks: when an image has neither true nor predicted smoke, every score is 1.0 (a correct
"no smoke"); dataset-level scores with no smoke anywhere are 1.0 for the same reason. Any other ratio
with nothing to count (precision with no predicted pixel, recall with no true pixel) is 0.0, because
the image holds an error.

F-beta uses beta^2 = 0.3, as the smoke and salient-object segmentation literature reports it:
precision weighs more than recall. Smoke size bins (fraction of the image that is truly smoke):
small under 1%, medium 1% up to 10%, large 10% or more; images without true smoke are in no bin.

Region view, the operator's: each verdict region (``scoring.smoke_verdict``: the regions that raise
the alarm) either touches true smoke, dilated by ``REGION_TOLERANCE`` pixels (a square of side
2·tolerance + 1, so a region ending just short of a loosely drawn mask still counts), or is a false
region. A frame is found only when one of its regions touches true smoke: a cloud alarm on a smoke
frame is not a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.stats import rankdata

METRIC_NAMES = ("IoU", "Dice")
FBETA_SQUARED = 0.3
# Upper edges of the size bins, as fractions of the image; the last bin is open-ended.
SIZE_BINS: dict[str, float] = {"small": 0.01, "medium": 0.10, "large": np.inf}
# Pixels by which a verdict region may miss the true mask and still touch it (see the module docstring).
REGION_TOLERANCE = 3
RELIABILITY_BINS = 10


def overlap_counts(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image (tp, fp, fn) from boolean masks shaped (B, ...); returns a (B, 3) int64 tensor."""
    predicted = predicted.flatten(1).bool()
    target = target.flatten(1).bool()
    tp = (predicted & target).sum(1)
    fp = (predicted & ~target).sum(1)
    fn = (~predicted & target).sum(1)
    return torch.stack([tp, fp, fn], dim=1).long()


def threshold_counts(probabilities: np.ndarray, truth: np.ndarray, thresholds: ArrayLike) -> np.ndarray:
    """(len(thresholds), 3) tp/fp/fn of ``probabilities > t`` for each sorted threshold, in one pass.

    Each pixel is binned by how many thresholds lie below it, so a grid search costs one histogram
    per image instead of one thresholding per grid value; the counts are exact, not binned.
    """
    grid = np.asarray(thresholds, dtype=probabilities.dtype)
    if np.any(np.diff(grid) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    below = np.searchsorted(grid, probabilities.ravel(), side="left")
    truth = truth.ravel().astype(bool)
    positives = np.bincount(below[truth], minlength=len(grid) + 1)
    negatives = np.bincount(below[~truth], minlength=len(grid) + 1)
    # probability > grid[j] exactly when more than j thresholds lie below it
    tp = positives[::-1].cumsum()[::-1][1:]
    fp = negatives[::-1].cumsum()[::-1][1:]
    return np.stack([tp, fp, positives.sum() - tp], axis=1)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """numerator / denominator; where nothing is counted, 1.0 for an image without error, else 0.0."""
    _, fp, fn = counts
    empty = np.where(fp + fn == 0, 1.0, 0.0)
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1e-12), empty)


def _columns(counts: np.ndarray) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64).reshape(-1, 3).T


def iou_from_counts(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = columns = _columns(counts)
    return _ratio(tp, tp + fp + fn, columns)


def fbeta_from_counts(counts: np.ndarray, beta_squared: float = FBETA_SQUARED) -> np.ndarray:
    """(1 + b²)·P·R / (b²·P + R), written in counts so it is defined wherever the image has any smoke."""
    tp, fp, fn = columns = _columns(counts)
    return _ratio((1 + beta_squared) * tp, (1 + beta_squared) * tp + beta_squared * fn + fp, columns)


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    return fbeta_from_counts(counts, beta_squared=1.0)


def precision_from_counts(counts: np.ndarray) -> np.ndarray:
    tp, fp, _ = columns = _columns(counts)
    return _ratio(tp, tp + fp, columns)


def recall_from_counts(counts: np.ndarray) -> np.ndarray:
    tp, _, fn = columns = _columns(counts)
    return _ratio(tp, tp + fn, columns)


# Every score computed from (tp, fp, fn): the names evaluation reports and threshold tuning accepts.
COUNT_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "IoU": iou_from_counts,
    "Dice": dice_from_counts,
    "precision": precision_from_counts,
    "recall": recall_from_counts,
    "F-beta": fbeta_from_counts,
}


def summarize_counts(counts: np.ndarray, names: Sequence[str] = METRIC_NAMES) -> dict[str, float]:
    """``name`` (dataset-level) and ``mean_image_<name>`` for each metric, from per-image counts (N, 3)."""
    counts = np.asarray(counts).reshape(-1, 3)
    total = counts.sum(0, keepdims=True)
    scores = {name: float(COUNT_METRICS[name](total)[0]) for name in names}
    scores.update({f"mean_image_{name}": float(COUNT_METRICS[name](counts).mean()) for name in names})
    return scores


def mean_absolute_error(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean |probability - mask| over one image's pixels: how confident the map is, with no threshold."""
    return float(np.abs(probabilities.astype(np.float64) - truth.astype(np.float64)).mean())


def size_bins(true_fractions: np.ndarray) -> np.ndarray:
    """The size bin name of each image from its true smoke fraction; ``""`` for an image without smoke."""
    fractions = np.asarray(true_fractions, dtype=np.float64)
    names = np.array(list(SIZE_BINS), dtype=object)
    binned = names[np.searchsorted(list(SIZE_BINS.values()), fractions, side="right")]
    return np.where(fractions > 0, binned, "")


def scores_by_size(counts: np.ndarray, true_fractions: np.ndarray) -> dict[str, dict[str, float | int]]:
    """IoU of the images in each size bin (both views) and how many there are; empty bins give the count only.

    Small plumes are the early fires a camera exists to catch, and the dataset-level IoU hides them.
    """
    counts = np.asarray(counts).reshape(-1, 3)
    bins = size_bins(true_fractions)
    result: dict[str, dict[str, float | int]] = {}
    for name in SIZE_BINS:
        members = counts[bins == name]
        result[name] = {
            "images": len(members),
            **(summarize_counts(members, ("IoU",)) if len(members) else {}),
        }
    return result


def detection_scores(true_smoke: ArrayLike, predicted_smoke: ArrayLike) -> dict[str, float | int | None]:
    """Image-level smoke detection: does an image hold smoke at all, as a camera alarm would decide.

    Precision and recall follow the empty rule above; the false-positive rate is the share of images
    without true smoke that raise an alarm, None when every image holds smoke.
    """
    truth = np.asarray(true_smoke, dtype=bool)
    predicted = np.asarray(predicted_smoke, dtype=bool)
    counts = np.array([[(truth & predicted).sum(), (~truth & predicted).sum(), (truth & ~predicted).sum()]])
    negatives = int((~truth).sum())
    return {
        "images_with_smoke": int(truth.sum()),
        "images_without_smoke": negatives,
        "precision": float(precision_from_counts(counts)[0]),
        "recall": float(recall_from_counts(counts)[0]),
        "false_positive_rate": float(counts[0, 1] / negatives) if negatives else None,
        "false_alarms": int(counts[0, 1]),
        "missed": int(counts[0, 2]),
    }


def _region_labels(regions: np.ndarray, truth: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Per region label 1..max: whether it is present, and whether it touches true smoke."""
    near: np.ndarray = truth.astype(np.uint8)
    if tolerance > 0:
        near = cv2.dilate(near, np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8))
    size = int(regions.max()) + 1
    present = np.bincount(regions.ravel(), minlength=size)[1:] > 0
    touched = np.bincount(regions[near.astype(bool)], minlength=size)[1:] > 0
    return present, touched


def region_outcome(
    regions: np.ndarray, truth: np.ndarray, tolerance: int = REGION_TOLERANCE
) -> tuple[int, bool]:
    """(false regions, whether a region touches true smoke) of one image.

    ``regions`` labels the verdict regions (0: no region, any positive label per region), ``truth`` is
    the true mask of the same shape.
    """
    present, touched = _region_labels(regions, truth, tolerance)
    return int((present & ~touched).sum()), bool(touched.any())


def false_region_pixels(
    regions: np.ndarray, truth: np.ndarray, tolerance: int = REGION_TOLERANCE
) -> np.ndarray:
    """The pixels of the false regions (verdict regions touching no true smoke), as a boolean mask: where
    in a frame its false alarms lie, as ``region_outcome`` counts them."""
    _, touched = _region_labels(regions, truth, tolerance)
    false_label = np.concatenate([[False], ~touched])  # label 0 is no region
    return false_label[regions]


def windows_holding(pixels: np.ndarray, windows: Iterable[tuple[int, int, int]]) -> list[bool]:
    """Whether each window (top, left, side) holds any set pixel of ``pixels`` (verdict regions, or false
    region pixels): a smoke-free view of a frame alarms when the frame's verdict reaches into it."""
    return [bool(pixels[y : y + side, x : x + side].any()) for y, x, side in windows]


def auroc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """The chance that a random positive scores above a random negative (ties count half), from ranks
    (Mann-Whitney U); None without both positives and negatives."""
    labels = np.asarray(labels, dtype=bool)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def region_scores(
    true_smoke: ArrayLike, region_hit: ArrayLike, false_regions: ArrayLike, frame_scores: ArrayLike
) -> dict[str, float | None]:
    """Frame-level scores from the region view (module docstring), one entry per frame in each argument.

    ``region_recall``: share of smoke frames with a region touching the smoke (None without smoke
    frames); ``false_region_frames``: share of all frames with at least one false region;
    ``false_regions_per_frame``; ``image_AUROC`` of ``frame_scores`` against true smoke, threshold-free.
    """
    truth = np.asarray(true_smoke, dtype=bool)
    hit = np.asarray(region_hit, dtype=bool)
    false = np.asarray(false_regions, dtype=np.float64)
    return {
        "region_recall": float(hit[truth].mean()) if truth.any() else None,
        "false_region_frames": float((false > 0).mean()),
        "false_regions_per_frame": float(false.mean()),
        "image_AUROC": auroc(truth, frame_scores),
    }


def reliability(labels: ArrayLike, scores: ArrayLike, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """A reliability table of frame scores read as probabilities of smoke: per equal-width score bin,
    how many frames, their mean score and the share that truly holds smoke; and the expected
    calibration error (ECE: the frame-weighted mean gap between the two), 0 for a calibrated score."""
    truth = np.asarray(labels, dtype=np.float64)
    values = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    which = np.minimum((values * bins).astype(int), bins - 1)
    table, gap = [], 0.0
    for index in range(bins):
        inside = which == index
        if not inside.any():
            continue
        mean_score, smoke_share = float(values[inside].mean()), float(truth[inside].mean())
        table.append(
            {
                "low": index / bins,
                "high": (index + 1) / bins,
                "frames": int(inside.sum()),
                "mean_score": mean_score,
                "smoke_share": smoke_share,
            }
        )
        gap += inside.sum() * abs(mean_score - smoke_share)
    return {"bins": table, "ECE": gap / len(values) if len(values) else None}


@dataclass
class OverlapScores:
    """Accumulates per-image counts across batches; ``compute`` gives both views of IoU and Dice."""

    threshold: float = 0.5
    counts: list[np.ndarray] = field(default_factory=list)

    def update(self, probabilities: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
        """Add a batch; returns its per-image counts."""
        batch = overlap_counts(probabilities > self.threshold, targets > 0.5).cpu().numpy()
        self.counts.append(batch)
        return batch

    def reset(self) -> None:
        self.counts.clear()

    def compute(self) -> dict[str, float]:
        if not self.counts:
            return {}
        return summarize_counts(np.concatenate(self.counts))
