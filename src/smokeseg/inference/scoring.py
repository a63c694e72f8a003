"""Turn probability maps into Hydrogen Torch-format prediction rows, with per-image scores."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smokeseg.data.rle import rle_encode
from smokeseg.inference.predictor import Prediction
from smokeseg.metrics import dice_from_counts, iou_from_counts
from smokeseg.storage import atomic_path


def prediction_row(prediction: Prediction, threshold: float, rle_order: str = "F") -> dict[str, Any]:
    """One image's row: predicted RLE at its own size, probability summary, and IoU when it has a mask."""
    probabilities = prediction.probabilities
    predicted = probabilities > threshold
    row: dict[str, Any] = {
        "image_id": prediction.sample.image_id,
        "class_id": "smoke",
        "rle_mask": rle_encode(predicted, rle_order),
        "height": predicted.shape[0],
        "width": predicted.shape[1],
        "smoke_fraction": float(predicted.mean()),
        "probability_max": float(probabilities.max()),
        "probability_mean": float(probabilities.mean()),
    }
    truth = prediction.sample.load_mask(*predicted.shape) if prediction.sample.has_mask else None
    if truth is not None:
        counts = np.array(
            [[(predicted & truth).sum(), (predicted & ~truth).sum(), (~predicted & truth).sum()]]
        )
        row["true_rle_mask"] = rle_encode(truth, rle_order)
        row["iou"] = float(iou_from_counts(counts)[0])
        row["dice"] = float(dice_from_counts(counts)[0])
        row["tp"], row["fp"], row["fn"] = (int(c) for c in counts[0])
    return row


def dataset_scores(rows: pd.DataFrame) -> dict[str, float]:
    """Dataset-level and mean per-image IoU/Dice from prediction rows that carry true masks."""
    if "iou" not in rows or rows["iou"].isna().all():
        return {}
    scored = rows.dropna(subset=["iou"])
    total = scored[["tp", "fp", "fn"]].to_numpy().sum(0, keepdims=True)
    return {
        "IoU": float(iou_from_counts(total)[0]),
        "Dice": float(dice_from_counts(total)[0]),
        "mean_image_IoU": float(scored["iou"].mean()),
        "mean_image_Dice": float(scored["dice"].mean()),
    }


def write_table(rows: Iterable[dict[str, Any]] | pd.DataFrame, target: Path) -> pd.DataFrame:
    """Write a Parquet or CSV table (by suffix) atomically."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    with atomic_path(target) as tmp:
        if target.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    return frame
