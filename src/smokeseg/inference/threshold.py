"""Pick the probability threshold for the out-of-fold validation images; store it.

Each fold's validation images are re-scored by that fold's own checkpoint (a model that never trained on
them), and every grid threshold is counted in one pass per image (``threshold_counts``), so the grid
search costs one histogram per image. Two ways to choose:
- maximise a score (``TUNING_METRICS``): a dataset-level one, or ``mean_image_IoU`` (every image weighs
  the same). The current threshold is always in the grid, so tuning never lowers the validation score;
- the operator's operating point (``min_region_recall``): the highest threshold that still finds smoke
  on at least that share of smoke frames (``choose_operating_point``).
The choice is written as ``threshold.json`` beside each checkpoint, where ``Predictor.from_path`` reads
it: predict, evaluate and export then use it with no config edit.
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
from smokeseg.data.formats import Sample, validation_samples_by_id
from smokeseg.errors import ConfigError, DataError, ModelError
from smokeseg.inference.evaluate import Progress
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.runtimes import with_stored_threshold
from smokeseg.layout import CONFIG_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import (
    COUNT_METRICS,
    REGION_TOLERANCE,
    iou_from_counts,
    region_outcome,
    threshold_counts,
)
from smokeseg.model.checkpoints import find_checkpoints
from smokeseg.storage import write_text_atomic

TUNING_METRICS = ("IoU", "Dice", "F-beta", "mean_image_IoU")
REGION_RECALL = "region_recall"
DEFAULT_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 101), 2))
# Region outcomes need connected regions per threshold and image, so they are found on this coarser step.
REGION_GRID_STEP = 0.05


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
    # The operating point (metric "region_recall", where ``scores`` is the region recall curve): the target,
    # whether a grid threshold reached it, the share of frames with a false region at each grid threshold,
    # and how many validation images hold smoke (region recall's denominator).
    target: float | None = None
    target_met: bool | None = None
    false_region_frames: np.ndarray | None = None
    smoke_images: int | None = None

    def to_dict(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "probability_threshold": self.threshold,
            "metric": self.metric,
            "previous_threshold": self.previous_threshold,
            "before": self.before,
            "after": self.after,
            "validation_images": self.images,
            "folds": [str(fold) for fold in self.folds],
        }
        if self.false_region_frames is not None:
            stored.update(
                rule=(
                    "the highest threshold whose validation region recall reaches the target; where none "
                    "does, the highest region recall"
                ),
                target_region_recall=self.target,
                target_met=self.target_met,
                region_recall=self.after,
                false_region_frames=self.false_region_share(self.threshold),
                validation_smoke_images=self.smoke_images,
                region_tolerance=REGION_TOLERANCE,
            )
        return stored

    @classmethod
    def from_curve(
        cls,
        metric: str,
        current: float,
        grid: np.ndarray,
        scores: np.ndarray,
        chosen: int,
        images: int,
        folds: list[Path],
        **operating_point: Any,
    ) -> ThresholdResult:
        """The result of choosing ``grid[chosen]`` on the curve ``scores``, starting from ``current``."""
        return cls(
            metric=metric,
            previous_threshold=float(current),
            threshold=float(grid[chosen]),
            before=float(scores[np.searchsorted(grid, current)]),
            after=float(scores[chosen]),
            images=images,
            folds=folds,
            grid=grid,
            scores=scores,
            **operating_point,
        )

    def false_region_share(self, threshold: float) -> float | None:
        """The share of validation frames with a false region at ``threshold`` (a grid value); None
        outside the operating-point mode."""
        if self.false_region_frames is None:
            return None
        return float(self.false_region_frames[np.searchsorted(self.grid, threshold)])


def tune_threshold(
    experiment_dir: str | Path,
    metric: str | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    min_region_recall: float | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> ThresholdResult:
    """Choose a threshold from every fold's validation images; ``experiment_dir`` may also be one fold folder.

    ``metric`` (default IoU; one of ``TUNING_METRICS``): the threshold maximising the dataset-level score,
    or with ``mean_image_IoU`` the mean over images of per-image IoU (an image with neither true nor
    predicted smoke scores 1.0); ties go to the threshold closest to the current one.

    ``min_region_recall`` R (0 < R <= 1, instead of ``metric``): the operating point of
    ``choose_operating_point`` on the validation region recall (the share of images with true smoke that
    have a verdict region touching it, within ``REGION_TOLERANCE`` pixels); the share of images holding a
    false region there is reported beside it, both counted as ``evaluate`` counts them
    (``Prediction.verdict`` and ``region_outcome``, default ``min_region_pixels``). Each threshold needs
    its own connected regions per image, so this rule looks only at the grid values on
    ``REGION_GRID_STEP`` (0.05) steps, plus the current threshold, above zero: at most 21 verdicts per
    image on the default grid (about 0.3 s for a 1280x720 frame on one CPU core), which keeps a fold of a
    few hundred such frames within minutes. A DataError when no validation image holds smoke.
    """
    if min_region_recall is not None:
        if metric is not None:
            raise ConfigError(
                f"Give either a metric ({metric!r}) or min_region_recall, not both: the operating point "
                "replaces the metric."
            )
        if not 0 < min_region_recall <= 1:
            raise ConfigError(f"min_region_recall must lie in (0, 1]; got {min_region_recall}.")
    metric = metric or "IoU"
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
    regions = None if min_region_recall is None else region_grid(thresholds, current)
    totals = np.zeros((len(thresholds), 3), dtype=np.int64)
    per_image: list[np.ndarray] = []  # (thresholds, 3) counts of each image, for mean_image_IoU
    hits = np.zeros(0 if regions is None else len(regions), dtype=np.int64)
    false_frames = np.zeros_like(hits)
    smoke_images = 0
    total_images = sum(len(fold.samples) for fold in folds)
    done = 0
    for fold in folds:
        for prediction in Predictor.from_path(fold.checkpoint, device).predict_samples(fold.samples):
            truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
            if regions is None:  # a score to maximise: pixel counts at every threshold
                counts = threshold_counts(prediction.probabilities, truth, thresholds)
                totals += counts
                per_image.append(counts)
            else:  # the operating point: region outcomes only
                outcomes = [region_outcome(prediction.verdict(t).regions, truth) for t in regions]
                false_frames += [false > 0 for false, _ in outcomes]
                if truth.any():
                    smoke_images += 1
                    hits += [hit for _, hit in outcomes]
            done += 1
            if progress is not None:
                progress(done, total_images)
    result_folds = [fold.folder.resolve() for fold in folds]
    if regions is not None and min_region_recall is not None:
        result = _operating_point(
            min_region_recall, current, regions, hits, false_frames, smoke_images, total_images, result_folds
        )
    else:
        result = _best_score(metric, current, thresholds, totals, per_image, result_folds)
    for fold in folds:
        write_text_atomic(fold.folder / THRESHOLD_NAME, json.dumps(result.to_dict(), indent=1))
    return result


def region_grid(thresholds: np.ndarray, current: float) -> np.ndarray:
    """The values of the sorted grid on ``REGION_GRID_STEP`` steps, and ``current``, above zero: where region
    outcomes are counted. Zero is left out: every pixel would be smoke, one frame-filling region that
    always "touches" the smoke, so it would meet any recall target with no false region."""
    steps = np.round(thresholds / REGION_GRID_STEP)
    on_step = np.isclose(thresholds, steps * REGION_GRID_STEP, rtol=0.0, atol=1e-9)
    grid = np.unique(np.append(thresholds[on_step], current))
    return grid[grid > 0]


def choose_operating_point(
    thresholds: np.ndarray, region_recall: np.ndarray, target: float
) -> tuple[int, bool]:
    """(index of the chosen threshold, whether it reaches ``target``), from the per-threshold recall curve.

    The highest threshold whose region recall reaches ``target``: regions only shrink as the threshold
    rises, so it raises the fewest alarms that still find that share of the smoke. (The fewest
    false-region frames would be the wrong aim: low thresholds merge clouds into the plume's region, which
    then touches the smoke and counts as no false region.) Where none reaches it: the highest region
    recall, ties to the highest threshold.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    recall = np.asarray(region_recall, dtype=np.float64)
    if not len(thresholds) == len(recall) > 0:
        raise ValueError("thresholds and region_recall need one value per threshold")
    reached = recall >= target - 1e-12  # a share k/n equal to the target is no miss for rounding
    candidates = np.flatnonzero(reached) if reached.any() else np.flatnonzero(recall == recall.max())
    return int(candidates[np.argmax(thresholds[candidates])]), bool(reached.any())


def _operating_point(
    target: float,
    current: float,
    thresholds: np.ndarray,
    hits: np.ndarray,
    false_frames: np.ndarray,
    smoke_images: int,
    images: int,
    folds: list[Path],
) -> ThresholdResult:
    if smoke_images == 0:
        raise DataError(
            f"None of the {images} validation images of {', '.join(map(str, folds))} holds smoke: region "
            "recall needs validation images with smoke. Tune for a metric (--metric) instead, or train "
            "with validation images that hold smoke."
        )
    recall = hits / smoke_images
    false_share = false_frames / images
    chosen, met = choose_operating_point(thresholds, recall, target)
    return ThresholdResult.from_curve(
        REGION_RECALL,
        current,
        thresholds,
        recall,
        chosen,
        images,
        folds,
        target=target,
        target_met=met,
        false_region_frames=false_share,
        smoke_images=smoke_images,
    )


def _best_score(
    metric: str,
    current: float,
    thresholds: np.ndarray,
    totals: np.ndarray,
    per_image: list[np.ndarray],
    folds: list[Path],
) -> ThresholdResult:
    if metric != "mean_image_IoU":
        scores = COUNT_METRICS[metric](totals)
    elif per_image:  # each image's IoU at every threshold, then the mean over images
        scores = iou_from_counts(np.stack(per_image)).reshape(len(per_image), -1).mean(0)
    else:
        raise DataError(f"{', '.join(map(str, folds))} holds no validation images to tune on.")
    best = np.flatnonzero(scores == scores.max())
    chosen = int(best[np.argmin(np.abs(thresholds[best] - current))])
    return ThresholdResult.from_curve(metric, current, thresholds, scores, chosen, len(per_image), folds)


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
        by_id, problems = validation_samples_by_id(config.dataset, require_masks=True)
        ids = pd.read_parquet(predictions, columns=["image_id"])["image_id"].astype(str).tolist()
        missing = [image_id for image_id in ids if image_id not in by_id]
        if missing:
            tables = " or ".join(str(table.table) for table in config.dataset.validation_tables())
            unreadable = f" ({problems[0]})" if problems else ""
            raise DataError(
                f"{len(missing)} validation images of {predictions} (first: {missing[0]}) are not in "
                f"{tables} any more, or cannot be read{unreadable}. Tuning re-scores them: restore the "
                f"data, or fix the paths in {folder / CONFIG_NAME}."
            )
        return cls(checkpoint, config, [by_id[image_id] for image_id in ids])


def render_tuning(result: ThresholdResult) -> Table:
    if result.false_region_frames is None:
        table = Table(
            title=f"Threshold tuned for {result.metric} on {result.images} out-of-fold validation images"
        )
        for column in ("", "threshold", result.metric):
            table.add_column(column, justify="left" if not column else "right")
        table.add_row("before", f"{result.previous_threshold:.2f}", f"{result.before:.4f}")
        table.add_row("after", f"{result.threshold:.2f}", f"{result.after:.4f}")
        return table
    table = Table(
        title=(
            f"Operating point: the highest threshold with region recall >= {result.target:.2f} "
            f"(±{REGION_TOLERANCE} px), on {result.images} out-of-fold validation images "
            f"({result.smoke_images} with smoke)"
        )
    )
    for column in ("", "threshold", "region recall", "share of frames with a false region"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        "before",
        f"{result.previous_threshold:.2f}",
        f"{result.before:.4f}",
        f"{result.false_region_share(result.previous_threshold):.4f}",
    )
    table.add_row(
        "after",
        f"{result.threshold:.2f}",
        f"{result.after:.4f}",
        f"{result.false_region_share(result.threshold):.4f}",
    )
    return table


def shortfall(result: ThresholdResult) -> str | None:
    """The warning when no grid threshold reached the region recall target; None otherwise."""
    if result.target_met is not False or result.target is None:
        return None
    return (
        f"Region recall target {result.target:.2f} not reached on the {result.smoke_images} validation "
        f"images with smoke: the best, {result.after:.4f} "
        f"({round(result.after * (result.smoke_images or 0))} of them found), at threshold "
        f"{result.threshold:.2f}, is stored."
    )
