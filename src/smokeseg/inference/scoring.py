"""Turn probability maps into Hydrogen Torch-format prediction rows, with per-image scores and a verdict.

The verdict rule (``smoke_verdict``): an image shows smoke when at least one connected region
(8-connected) of pixels whose probability is above the threshold covers at least
``min_region_pixels`` pixels (default: 0.01% of the image, and never fewer than 16), so isolated
speckles do not raise an alarm. ``confidence`` is the highest probability inside those regions when
there is smoke, else 1 - the image's highest probability. Each such region is listed as a box.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from smokeseg.data.formats import Sample
from smokeseg.data.rle import Order, rle_encode
from smokeseg.metrics import (
    dice_from_counts,
    iou_from_counts,
    region_outcome,
    region_scores,
    summarize_counts,
)
from smokeseg.storage import atomic_path

# The smallest region that counts as smoke: this share of the image, and never fewer pixels than the floor.
MIN_REGION_FRACTION = 1e-4
MIN_REGION_FLOOR = 16
CLASS_NAME = "smoke"
# The columns of every prediction row, in order; a row that could not be scored has them too, empty.
PREDICTION_COLUMNS = (
    "image_id",
    "class_id",
    "rle_mask",
    "height",
    "width",
    "smoke_fraction",
    "probability_max",
    "probability_mean",
    "smoke",
    "confidence",
    "boxes",
)


def default_min_region_pixels(height: int, width: int) -> int:
    return max(MIN_REGION_FLOOR, math.ceil(MIN_REGION_FRACTION * height * width))


@dataclass
class Prediction:
    """A scored image: its sample, its pixels, and its probability map at its own size; with a
    classification head, also the head's smoke probability for the whole image and the share of the
    verdict it was given (``prediction.classification_threshold``)."""

    sample: Sample
    image: np.ndarray
    probabilities: np.ndarray
    image_probability: float | None = None
    image_threshold: float | None = None

    def verdict(self, threshold: float, min_region_pixels: int | None = None) -> Verdict:
        """``gated_verdict`` of this image."""
        return gated_verdict(
            self.probabilities, threshold, min_region_pixels, self.image_probability, self.image_threshold
        )

    @property
    def frame_score(self) -> float:
        """How much this image looks like smoke, threshold-free: ``frame_score``."""
        return float(frame_score(float(self.probabilities.max()), self.image_probability))


def frame_score(
    probability_max: float | np.ndarray | pd.Series, image_probability: float | np.ndarray | pd.Series | None
) -> float | np.ndarray:
    """The image-level smoke score: the mask's highest probability, or, with a classification head,
    the geometric mean of that and the head's probability (both must agree for a high score)."""
    if image_probability is None:
        return probability_max if isinstance(probability_max, float) else np.asarray(probability_max)
    return np.sqrt(np.asarray(probability_max, np.float64) * np.asarray(image_probability, np.float64))


@dataclass(frozen=True)
class Verdict:
    """``boxes``: one ``[x0, y0, x1, y1, area, mean_probability]`` per kept region, largest first and
    equal areas in raster order of their first pixel (top to bottom, then left to right); x1 and y1 are
    exclusive (``x1 - x0`` is the width), in the image's own pixels. ``regions`` labels the kept
    regions' pixels (0 elsewhere), so they can be matched against a true mask."""

    smoke: bool
    confidence: float
    boxes: list[list[float]]
    regions: np.ndarray = field(repr=False, compare=False)


def smoke_verdict(
    probabilities: np.ndarray, threshold: float, min_region_pixels: int | None = None
) -> Verdict:
    """Smoke or not, how sure, and where, by the rule in this module's docstring."""
    height, width = probabilities.shape
    minimum = default_min_region_pixels(height, width) if min_region_pixels is None else min_region_pixels
    mask = (probabilities > threshold).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keyed, peak = [], 0.0
    kept = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= minimum) + 1  # label 0 is the background
    for label in kept:
        x0, y0, box_w, box_h, area = (int(v) for v in stats[label])
        window = (slice(y0, y0 + box_h), slice(x0, x0 + box_w))
        region = labels[window] == label
        inside = probabilities[window][region]
        first_x = x0 + int(np.argmax(region[0]))  # the region's first pixel in raster order is in its top row
        keyed.append(((-area, y0, first_x), [x0, y0, x0 + box_w, y0 + box_h, area, float(inside.mean())]))
        peak = max(peak, float(inside.max()))
    # OpenCV numbers regions in 2x2 blocks, not in raster order: the key alone decides, as in score.py.
    boxes = [box for _, box in sorted(keyed)]
    confidence = peak if boxes else 1.0 - float(probabilities.max())
    keep = np.zeros(len(stats), labels.dtype)
    keep[kept] = kept
    return Verdict(bool(boxes), confidence, boxes, keep[labels])


def gated_verdict(
    probabilities: np.ndarray,
    threshold: float,
    min_region_pixels: int | None = None,
    image_probability: float | None = None,
    image_threshold: float | None = None,
) -> Verdict:
    """``smoke_verdict``, except that where the classification head has a say (both ``image_*`` given)
    an image it scores below ``image_threshold`` raises no alarm, whatever its regions."""
    verdict = smoke_verdict(probabilities, threshold, min_region_pixels)
    if image_threshold is None or image_probability is None or image_probability >= image_threshold:
        return verdict
    return Verdict(False, 1.0 - image_probability, [], np.zeros_like(verdict.regions))


def prediction_row(
    prediction: Prediction, threshold: float, rle_order: Order = "F", min_region_pixels: int | None = None
) -> dict[str, Any]:
    """One image's row: predicted RLE at its own size, probability summary, the smoke verdict with its
    boxes, and IoU when it has a mask."""
    probabilities = prediction.probabilities
    predicted = probabilities > threshold
    verdict = prediction.verdict(threshold, min_region_pixels)
    row: dict[str, Any] = {
        "image_id": prediction.sample.image_id,
        "class_id": CLASS_NAME,
        "rle_mask": rle_encode(predicted, rle_order),
        "height": predicted.shape[0],
        "width": predicted.shape[1],
        "smoke_fraction": float(predicted.mean()),
        "probability_max": float(probabilities.max()),
        "probability_mean": float(probabilities.mean()),
        "smoke": verdict.smoke,
        "confidence": verdict.confidence,
        "boxes": verdict.boxes,
    }
    if prediction.image_probability is not None:
        row["image_probability"] = prediction.image_probability
    truth = prediction.sample.load_mask(*predicted.shape) if prediction.sample.has_mask else None
    if truth is not None:
        counts = np.array(
            [[(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()]]
        )
        row["true_rle_mask"] = rle_encode(truth, rle_order)
        row["iou"] = float(iou_from_counts(counts)[0])
        row["dice"] = float(dice_from_counts(counts)[0])
        row["tp"], row["fp"], row["fn"] = (int(c) for c in counts[0])
        row["false_regions"], row["region_hit"] = region_outcome(verdict.regions, truth)
    return row


@dataclass(frozen=True)
class ImageResult:
    """One image as ``Predictor.predict_paths`` returns it: the probability map, the mask at the
    threshold, and `smokeseg predict`'s verdict (``prediction_row``); or, for an unreadable image, only
    its ``error``."""

    image_id: str
    probabilities: np.ndarray | None = None
    mask: np.ndarray | None = None
    smoke: bool | None = None
    confidence: float | None = None
    boxes: list[list[float]] = field(default_factory=list)
    smoke_fraction: float | None = None
    error: str | None = None

    @classmethod
    def scored(
        cls, prediction: Prediction, threshold: float, min_region_pixels: int | None = None
    ) -> ImageResult:
        row = prediction_row(prediction, threshold, min_region_pixels=min_region_pixels)
        return cls(
            image_id=row["image_id"],
            probabilities=prediction.probabilities,
            mask=prediction.probabilities > threshold,
            smoke=row["smoke"],
            confidence=row["confidence"],
            boxes=row["boxes"],
            smoke_fraction=row["smoke_fraction"],
        )


def dataset_scores(rows: pd.DataFrame) -> dict[str, float | None]:
    """Dataset-level and mean per-image IoU/Dice and the region view's frame scores (``region_scores``,
    ranking frames by ``frame_score``) from prediction rows that carry true masks."""
    if "iou" not in rows or rows["iou"].isna().all():
        return {}
    scored = rows.dropna(subset=["iou"])
    counts = scored[["tp", "fp", "fn"]].to_numpy()
    return {
        **summarize_counts(counts),
        **region_scores(
            counts[:, 0] + counts[:, 2] > 0,
            scored["region_hit"],
            scored["false_regions"],
            frame_score(scored["probability_max"], scored.get("image_probability")),
        ),
    }


def failed_row(sample: Sample, error: str) -> dict[str, Any]:
    """The row of an image that could not be scored: every column of a scored row, empty (no mask, not an
    empty one), and the reason; so a table of failures alone has the usual columns."""
    row: dict[str, Any] = dict.fromkeys(PREDICTION_COLUMNS)
    row.update(image_id=sample.image_id, class_id=CLASS_NAME, error=error)
    return row


def write_table(rows: Iterable[dict[str, Any]] | pd.DataFrame, target: Path) -> pd.DataFrame:
    """Write a Parquet or CSV table (by suffix) atomically.

    CSV has no list type, so list cells (``boxes``) are written as JSON: ``json.loads`` reads them back.
    """
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    with atomic_path(target) as tmp:
        if target.suffix == ".csv":
            frame.map(lambda cell: json.dumps(cell) if isinstance(cell, list) else cell).to_csv(
                tmp, index=False
            )
        else:
            frame.to_parquet(tmp, index=False)
    return frame
