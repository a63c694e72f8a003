"""Overlap metrics shared by training, prediction and evaluation, so a number means the same everywhere.

Two views of the same pixel counts:
- dataset-level: true positives, false positives and false negatives summed over all images, then one
  ratio (large plumes weigh more);
- mean per image: one ratio per image, then the mean (every image weighs the same).
Rule for empty masks: when an image has neither true nor predicted smoke, its IoU and Dice are 1.0
(a correct "no smoke"); dataset-level scores with no smoke anywhere are 1.0 for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

METRIC_NAMES = ("IoU", "Dice")


def overlap_counts(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image (tp, fp, fn) from boolean masks shaped (B, ...); returns a (B, 3) int64 tensor."""
    predicted = predicted.flatten(1).bool()
    target = target.flatten(1).bool()
    tp = (predicted & target).sum(1)
    fp = (predicted & ~target).sum(1)
    fn = (~predicted & target).sum(1)
    return torch.stack([tp, fp, fn], dim=1).long()


def iou_from_counts(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = np.asarray(counts, dtype=np.float64).T
    union = tp + fp + fn
    return np.where(union > 0, tp / np.maximum(union, 1), 1.0)


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    tp, fp, fn = np.asarray(counts, dtype=np.float64).T
    total = 2 * tp + fp + fn
    return np.where(total > 0, 2 * tp / np.maximum(total, 1), 1.0)


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
        counts = np.concatenate(self.counts)
        total = counts.sum(0, keepdims=True)
        return {
            "IoU": float(iou_from_counts(total)[0]),
            "Dice": float(dice_from_counts(total)[0]),
            "mean_image_IoU": float(iou_from_counts(counts).mean()),
            "mean_image_Dice": float(dice_from_counts(counts).mean()),
        }
