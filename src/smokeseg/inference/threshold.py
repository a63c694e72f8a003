"""Pick the probability threshold that maximises a metric on the out-of-fold validation images; store it.

Each fold's validation images are re-scored by that fold's own checkpoint (a model that never trained on
them), and every grid threshold is counted in one pass per image (``threshold_counts``), so the grid
search costs one histogram per image. The current threshold is always in the grid, so tuning never
lowers the validation score. The choice is written as ``threshold.json`` beside each checkpoint, where
``Predictor.from_path`` reads it: predict, evaluate and export then use it with no config edit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from smokeseg.config.load import load_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample, load_samples
from smokeseg.errors import ConfigError, DataError, ModelError
from smokeseg.inference.evaluate import Progress
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.runtimes import with_stored_threshold
from smokeseg.layout import CONFIG_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import COUNT_METRICS, threshold_counts
from smokeseg.model.checkpoints import find_checkpoints
from smokeseg.storage import write_text_atomic

TUNING_METRICS = ("IoU", "Dice", "F-beta")
DEFAULT_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 101), 2))


@dataclass
class ThresholdResult:
    """The chosen threshold, the score before and after, and the whole curve it was picked from."""

    metric: str
    previous_threshold: float
    threshold: float
    before: float
    after: float
    images: int
    folds: list[Path]
    grid: np.ndarray
    scores: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "probability_threshold": self.threshold,
            "metric": self.metric,
            "previous_threshold": self.previous_threshold,
            "before": self.before,
            "after": self.after,
            "validation_images": self.images,
            "folds": [str(fold) for fold in self.folds],
        }


def tune_threshold(
    experiment_dir: str | Path,
    metric: str = "IoU",
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    device: str = "auto",
    progress: Progress | None = None,
) -> ThresholdResult:
    """Choose the threshold maximising the dataset-level ``metric`` over every fold's validation images.

    Ties go to the threshold closest to the current one. ``experiment_dir`` may also be one fold folder.
    """
    if metric not in TUNING_METRICS:
        raise ConfigError(
            f"Cannot tune the threshold for {metric!r}; choose one of {', '.join(TUNING_METRICS)}."
        )
    folds = [_FoldValidation.load(checkpoint) for checkpoint in find_checkpoints(experiment_dir)]
    current = with_stored_threshold(folds[0].config, folds[0].folder).prediction.probability_threshold
    thresholds = np.unique(np.append(np.asarray(grid, dtype=np.float64), current))
    if thresholds[0] < 0 or thresholds[-1] > 1:
        raise ConfigError(
            f"Threshold grid values must lie between 0 and 1; got {thresholds[0]} to {thresholds[-1]}."
        )
    totals = np.zeros((len(thresholds), 3), dtype=np.int64)
    total_images = sum(len(fold.samples) for fold in folds)
    done = 0
    for fold in folds:
        for prediction in Predictor.from_path(fold.checkpoint, device).predict_samples(fold.samples):
            truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
            totals += threshold_counts(prediction.probabilities, truth, thresholds)
            done += 1
            if progress is not None:
                progress(done, total_images)
    scores = COUNT_METRICS[metric](totals)
    best = np.flatnonzero(scores == scores.max())
    chosen = best[np.argmin(np.abs(thresholds[best] - current))]
    result = ThresholdResult(
        metric=metric,
        previous_threshold=float(current),
        threshold=float(thresholds[chosen]),
        before=float(scores[np.searchsorted(thresholds, current)]),
        after=float(scores[chosen]),
        images=total_images,
        folds=[fold.folder.resolve() for fold in folds],
        grid=thresholds,
        scores=scores,
    )
    for fold in folds:
        write_text_atomic(fold.folder / THRESHOLD_NAME, json.dumps(result.to_dict(), indent=1))
    return result


@dataclass
class _FoldValidation:
    """A fold's checkpoint, config and validation images, found from the ids in its validation predictions."""

    checkpoint: Path
    config: ExperimentConfig
    samples: list[Sample]

    @property
    def folder(self) -> Path:
        return self.checkpoint.parent

    @classmethod
    def load(cls, checkpoint: Path) -> _FoldValidation:
        folder = checkpoint.parent
        predictions = folder / VALIDATION_PREDICTIONS_NAME
        if not predictions.is_file() or not (folder / CONFIG_NAME).is_file():
            raise ModelError(
                f"{folder} lacks {VALIDATION_PREDICTIONS_NAME} or {CONFIG_NAME}: tuning needs a fold folder "
                "written by `smokeseg train`, whose validation images it re-scores."
            )
        config = load_config(folder / CONFIG_NAME)
        dataset = config.dataset
        train_table, validation_table = dataset.training_tables()  # set: the fold was trained
        table = train_table if validation_table is None else validation_table
        by_id = {
            sample.image_id: sample
            for sample in load_samples(table, dataset.data_folder, dataset, require_masks=True)
        }
        ids = pd.read_parquet(predictions, columns=["image_id"])["image_id"].astype(str).tolist()
        missing = [image_id for image_id in ids if image_id not in by_id]
        if missing:
            raise DataError(
                f"{len(missing)} validation images of {predictions} (first: {missing[0]}) are not in "
                f"{table} any more. Tuning re-scores them: restore the data, or fix the paths in "
                f"{folder / CONFIG_NAME}."
            )
        return cls(checkpoint, config, [by_id[image_id] for image_id in ids])


def render_tuning(result: ThresholdResult) -> Table:
    table = Table(
        title=f"Threshold tuned for {result.metric} on {result.images} out-of-fold validation images"
    )
    for column in ("", "threshold", result.metric):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("before", f"{result.previous_threshold:.2f}", f"{result.before:.4f}")
    table.add_row("after", f"{result.threshold:.2f}", f"{result.after:.4f}")
    return table
