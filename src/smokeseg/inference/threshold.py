"""Pick the probability threshold for the out-of-fold validation images; store it.

Each fold's validation images are re-scored by that fold's own checkpoint (a model that never trained on
them), and every grid threshold is counted in one pass per image (``threshold_counts``), so the grid
search costs one histogram per image. Two ways to choose:
- maximise a score (``TUNING_METRICS``): a dataset-level one, or ``mean_image_IoU`` (every image weighs
  the same). The current threshold is always in the grid, so tuning never lowers the validation score;
- the operator's operating point (``min_region_recall``): the highest threshold that still finds smoke
  on at least that share of smoke frames (``choose_operating_point``);
- an alarm budget (``alarm_budget``): the most smoke found while at most that share of smoke-free windows
  of the validation frames raise an alarm (``choose_within_alarm_budget``). Validation frames of a
  smoke dataset nearly all hold smoke, so a rule that only looks for smoke never sees what an alarm
  costs: each frame's windows far from its smoke stand in for the smoke-free views a camera sends.
  A window alarms when the frame's verdict reaches into it, or (``windows_alone``) when the window,
  scored as an image of its own, raises an alarm: the way smoke-free camera crops are judged.
The choice is written as ``threshold.json`` beside each checkpoint, where ``Predictor.from_path`` reads
it: predict, evaluate and export then use it with no config edit.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from smokeseg.config.load import load_config, override_key, with_scoring_overrides
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample, validation_samples_by_id
from smokeseg.data.negatives import WindowSpec, smoke_free_windows
from smokeseg.errors import ConfigError, DataError, ModelError
from smokeseg.inference.evaluate import Progress
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.runtimes import load_checkpoint, stored_threshold
from smokeseg.inference.scoring import Prediction, gated_verdict
from smokeseg.layout import CONFIG_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import (
    COUNT_METRICS,
    REGION_TOLERANCE,
    iou_from_counts,
    region_outcome,
    threshold_counts,
    windows_holding,
)
from smokeseg.model.checkpoints import find_checkpoints
from smokeseg.storage import write_text_atomic

TUNING_METRICS = ("IoU", "Dice", "F-beta", "mean_image_IoU")
THRESHOLD_KEY = "prediction.probability_threshold"
REGION_RECALL = "region_recall"
DEFAULT_GRID: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 101), 2))
# Region outcomes need connected regions per threshold and image, so they are found on this coarser step.
REGION_GRID_STEP = 0.05
# The smoke-free windows of each validation frame that the alarm budget counts: the size and distance from
# smoke of ``benchmarks/false_alarms.py``'s smoke-free crops, a few per frame for a finer rate.
ALARM_WINDOWS = WindowSpec(size=256, margin=32, count=4)
WINDOW_IN_FRAME_RULE = "a verdict region of the whole frame reaches into the window"
WINDOW_ALONE_RULE = "the window, scored as an image of its own at its frame's scale, raises an alarm"


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
    # The region rules (metric "region_recall", where ``scores`` is the region recall curve): the target
    # (a region recall, or with ``alarm_budget`` the largest share of alarming smoke-free windows),
    # whether a grid threshold met it, at each grid threshold the share of frames with a false region and
    # of smoke-free windows holding a verdict region, how many validation images hold smoke (region
    # recall's denominator) and how many smoke-free windows were counted.
    target: float | None = None
    target_met: bool | None = None
    false_region_frames: np.ndarray | None = None
    smoke_images: int | None = None
    window_alarms: np.ndarray | None = None
    windows: int | None = None
    alarm_budget: bool = False
    windows_alone: bool = False
    # The scoring keys the validation images were scored with (``tune_threshold``'s ``scoring_overrides``):
    # stored with the threshold, since it holds only when the model scores the same way.
    scoring_overrides: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "probability_threshold": self.threshold,
            "metric": self.metric,
            "previous_threshold": self.previous_threshold,
            "before": self.before,
            "after": self.after,
            "validation_images": self.images,
            "folds": [str(fold) for fold in self.folds],
            "scoring_overrides": self.scoring_overrides,
        }
        if self.alarm_budget:
            stored.update(
                rule=(
                    "the highest validation region recall while at most the budget's share of smoke-free "
                    "windows alarms (ties: the highest threshold); where no threshold that finds smoke "
                    "keeps to it, the fewest alarming windows among those that do"
                ),
                alarm_budget=self.target,
                window_alarm_rule=WINDOW_ALONE_RULE if self.windows_alone else WINDOW_IN_FRAME_RULE,
            )
        elif self.false_region_frames is not None:
            stored.update(
                rule=(
                    "the highest threshold whose validation region recall reaches the target; where none "
                    "does, the highest region recall"
                ),
                target_region_recall=self.target,
            )
        if self.false_region_frames is not None:
            stored.update(
                target_met=self.target_met,
                region_recall=self.after,
                false_region_frames=self.false_region_share(self.threshold),
                window_alarm=self.window_alarm_share(self.threshold),
                validation_smoke_images=self.smoke_images,
                smoke_free_windows=self.windows,
                region_tolerance=REGION_TOLERANCE,
                # The whole trade-off, so an operator can see what another target or budget would give.
                curve={
                    "threshold": self.grid.tolist(),
                    "region_recall": self.scores.tolist(),
                    "false_region_frames": self.false_region_frames.tolist(),
                    "window_alarm": None if self.window_alarms is None else self.window_alarms.tolist(),
                },
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
        outside the region rules."""
        if self.false_region_frames is None:
            return None
        return float(self.false_region_frames[np.searchsorted(self.grid, threshold)])

    def window_alarm_share(self, threshold: float) -> float | None:
        """The share of smoke-free validation windows holding a verdict region at ``threshold`` (a grid
        value); None outside the region rules or where no window fitted."""
        if self.window_alarms is None or not self.windows:
            return None
        return float(self.window_alarms[np.searchsorted(self.grid, threshold)])


def tune_threshold(
    experiment_dir: str | Path,
    metric: str | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    min_region_recall: float | None = None,
    alarm_budget: float | None = None,
    windows: WindowSpec = ALARM_WINDOWS,
    windows_alone: bool = False,
    scoring_overrides: Sequence[str] = (),
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
    (``Prediction.verdict`` and ``region_outcome``, default ``min_region_pixels``).

    ``alarm_budget`` B (0 <= B < 1, instead of the two above): ``choose_within_alarm_budget`` on the same
    region recall, where an alarm is a verdict region of the whole frame inside one of its ``windows``:
    up to ``windows.count`` random windows (fixed per image id) clear of true smoke by ``windows.margin``
    pixels, at the scale of the frame's mask. Any verdict pixel there counts, so a low threshold that
    merges a cloud into a plume's region pays for it (as a false region it would not: it touches smoke).
    With ``windows_alone`` each window is instead cut out and scored as an image of its own
    (``Predictor.score_crops``: at its frame's scale, without the frame's context), and alarms by
    predict's rule: what a camera sending only that view would get, and how the smoke-free crops of
    ``benchmarks/false_alarms.py`` are judged. It costs a scoring pass per window.

    The region rules need each threshold's own connected regions per image, so they look only at the grid
    values on ``REGION_GRID_STEP`` (0.05) steps, plus the current threshold, above zero: at most 21
    verdicts per image on the default grid (about 0.3 s for a 1280x720 frame on one CPU core), which
    keeps a fold of a few hundred such frames within minutes. A DataError when no validation image holds
    smoke, or, for the budget, when no window fits any validation frame.

    ``scoring_overrides`` (``section.key=value``, scoring keys only): score the validation images with
    them, such as test-time augmentation. They are stored with the threshold, which holds only for a
    model that scores the same way, so predict, evaluate and export then score with them too. Each
    tuning starts from the checkpoint's config: an earlier tuning's overrides are replaced, not kept.
    The threshold is what is tuned, so it cannot be one of them (ConfigError).
    """
    check_rule(metric, min_region_recall, alarm_budget)
    chosen_here = [item for item in scoring_overrides if override_key(item) == THRESHOLD_KEY]
    if chosen_here:
        raise ConfigError(
            f"{chosen_here[0]!r}: tune-threshold chooses {THRESHOLD_KEY} itself, so --set cannot give it. "
            "Leave it out here; to score at a threshold of your own, give it to predict or evaluate."
        )
    if windows_alone and alarm_budget is None:
        raise ConfigError("windows_alone counts the alarm budget's windows: give alarm_budget with it.")
    metric = metric or "IoU"
    folds = [_FoldValidation.load(checkpoint) for checkpoint in find_checkpoints(experiment_dir)]
    # A bad override fails here, before any image is scored.
    scoring = with_scoring_overrides(folds[0].config, scoring_overrides, "--set")
    current = stored_threshold(folds[0].folder)
    if current is None:
        current = scoring.prediction.probability_threshold
    thresholds = np.unique(np.append(np.asarray(grid, dtype=np.float64), current))
    if thresholds[0] < 0 or thresholds[-1] > 1:
        raise ConfigError(
            f"Threshold grid values must lie between 0 and 1; got {thresholds[0]} to {thresholds[-1]}."
        )
    by_regions = min_region_recall is not None or alarm_budget is not None
    regions = region_grid(thresholds, current) if by_regions else None
    totals = np.zeros((len(thresholds), 3), dtype=np.int64)
    per_image: list[np.ndarray] = []  # (thresholds, 3) counts of each image, for mean_image_IoU
    outcomes = _RegionOutcomes.empty(0 if regions is None else len(regions))
    total_images = sum(len(fold.samples) for fold in folds)
    done = 0
    for fold in folds:
        predictor = fold.predictor(scoring_overrides, device)
        for prediction in predictor.predict_samples(fold.samples):
            truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
            if regions is None:  # a score to maximise: pixel counts at every threshold
                counts = threshold_counts(prediction.probabilities, truth, thresholds)
                totals += counts
                per_image.append(counts)
            else:  # the region rules: region outcomes and window alarms only
                corners = alarm_windows(prediction.sample.image_id, truth, windows)
                verdicts = [prediction.verdict(t).regions for t in regions]
                if windows_alone:
                    alarms = alone_window_alarms(predictor, prediction, corners, windows.size, regions)
                else:
                    boxes = [(y, x, windows.size) for y, x in corners]
                    alarms = [sum(windows_holding(labels, boxes)) for labels in verdicts]
                outcomes.add(verdicts, truth, alarms, len(corners))
            done += 1
            if progress is not None:
                progress(done, total_images)
    result_folds = [fold.folder.resolve() for fold in folds]
    if regions is None:
        result = _best_score(metric, current, thresholds, totals, per_image, result_folds)
    else:
        result = outcomes.choose(
            min_region_recall, alarm_budget, current, regions, total_images, result_folds
        )
    result.scoring_overrides = list(scoring_overrides)
    result.windows_alone = windows_alone
    for fold in folds:
        write_text_atomic(fold.folder / THRESHOLD_NAME, json.dumps(result.to_dict(), indent=1))
    return result


def alarm_windows(image_id: str, truth: np.ndarray, spec: WindowSpec) -> list[tuple[int, int]]:
    """Top-left corners of up to ``spec.count`` random ``spec.size`` windows of a frame clear of its smoke
    by ``spec.margin`` pixels; the same for an image id on every run, so a tuning can be repeated."""
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    return smoke_free_windows(truth, spec.size, spec.margin, spec.count, rng)


def alone_window_alarms(
    predictor: Predictor,
    prediction: Prediction,
    corners: Sequence[tuple[int, int]],
    size: int,
    thresholds: np.ndarray,
) -> list[int]:
    """How many of a frame's smoke-free windows raise an alarm at each threshold when each is scored as an
    image of its own (``Predictor.score_crops``) and judged by predict's rule."""
    frame = prediction.image
    crops = [frame[y : y + size, x : x + size] for y, x in corners]
    scored = predictor.score_crops(crops, [frame.shape[:2]] * len(crops))
    return [
        sum(
            gated_verdict(probabilities, threshold, None, image_probability, predictor.image_threshold).smoke
            for probabilities, image_probability in scored
        )
        for threshold in thresholds
    ]


def check_rule(metric: str | None, min_region_recall: float | None, alarm_budget: float | None) -> None:
    """One rule at a time, each with a value it can meet."""
    rules = {"a metric": metric, "min_region_recall": min_region_recall, "alarm_budget": alarm_budget}
    given = [name for name, value in rules.items() if value is not None]
    if len(given) > 1:
        raise ConfigError(f"Give one rule, not {' and '.join(given)}: each picks the threshold its own way.")
    if min_region_recall is not None and not 0 < min_region_recall <= 1:
        raise ConfigError(f"min_region_recall must lie in (0, 1]; got {min_region_recall}.")
    if alarm_budget is not None and not 0 <= alarm_budget < 1:
        raise ConfigError(f"alarm_budget must lie in [0, 1); got {alarm_budget}.")
    if metric is not None and metric not in TUNING_METRICS:
        raise ConfigError(
            f"Cannot tune the threshold for {metric!r}; choose one of {', '.join(TUNING_METRICS)}."
        )


@dataclass
class _RegionOutcomes:
    """What the region rules count at each region threshold, summed over the validation images."""

    hits: np.ndarray  # images whose smoke a verdict region touches
    false_frames: np.ndarray  # images holding a false region
    window_alarms: np.ndarray  # smoke-free windows holding a verdict region
    smoke_images: int = 0
    windows: int = 0

    @classmethod
    def empty(cls, thresholds: int) -> _RegionOutcomes:
        hits, false_frames, window_alarms = np.zeros((3, thresholds), dtype=np.int64)
        return cls(hits, false_frames, window_alarms)

    def add(
        self, verdicts: list[np.ndarray], truth: np.ndarray, window_alarms: Sequence[int], windows: int
    ) -> None:
        """One image: its verdict regions (labels) at each threshold, its mask, how many of its ``windows``
        smoke-free windows alarm at each threshold."""
        outcomes = [region_outcome(regions, truth) for regions in verdicts]
        self.false_frames += [false > 0 for false, _ in outcomes]
        if truth.any():
            self.smoke_images += 1
            self.hits += [hit for _, hit in outcomes]
        self.windows += windows
        self.window_alarms += window_alarms

    def choose(
        self,
        min_region_recall: float | None,
        alarm_budget: float | None,
        current: float,
        thresholds: np.ndarray,
        images: int,
        folds: list[Path],
    ) -> ThresholdResult:
        if self.smoke_images == 0:
            raise DataError(
                f"None of the {images} validation images of {', '.join(map(str, folds))} holds smoke: "
                "region recall needs validation images with smoke. Tune for a metric (--metric) instead, or "
                "train with validation images that hold smoke."
            )
        recall = self.hits / self.smoke_images
        window_alarms = self.window_alarms / self.windows if self.windows else None
        if alarm_budget is not None:
            if self.windows == 0:
                raise DataError(
                    f"No smoke-free window fits the {images} validation images of "
                    f"{', '.join(map(str, folds))}: the alarm budget counts alarms in windows clear of "
                    "smoke. Give a smaller window size, or tune for a region recall instead."
                )
            assert window_alarms is not None, "windows were counted"
            chosen, met = choose_within_alarm_budget(thresholds, recall, window_alarms, alarm_budget)
            target = alarm_budget
        else:
            assert min_region_recall is not None, "a region rule has a recall target or an alarm budget"
            chosen, met = choose_operating_point(thresholds, recall, min_region_recall)
            target = min_region_recall
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
            false_region_frames=self.false_frames / images,
            smoke_images=self.smoke_images,
            window_alarms=window_alarms,
            windows=self.windows,
            alarm_budget=alarm_budget is not None,
        )


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


def choose_within_alarm_budget(
    thresholds: np.ndarray, region_recall: np.ndarray, window_alarms: np.ndarray, budget: float
) -> tuple[int, bool]:
    """(index of the chosen threshold, whether it keeps to ``budget``), from the per-threshold curves.

    Among the thresholds that find some smoke and whose share of alarming smoke-free windows is at most
    ``budget``, the highest region recall, ties to the highest threshold (the fewest alarms for that
    recall). A threshold that finds no smoke keeps any budget by never alarming, which is no answer: where
    only such thresholds keep to it, the fewest alarming windows among those that find smoke, ties to the
    highest threshold, and the budget counts as not kept (the caller warns).
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    recall = np.asarray(region_recall, dtype=np.float64)
    alarms = np.asarray(window_alarms, dtype=np.float64)
    if not len(thresholds) == len(recall) == len(alarms) > 0:
        raise ValueError("thresholds, region_recall and window_alarms need one value per threshold")
    finds = recall > 0 if (recall > 0).any() else np.ones_like(recall, dtype=bool)
    within = finds & (alarms <= budget + 1e-12)  # a share k/n equal to the budget keeps to it
    if within.any():
        candidates = np.flatnonzero(within & (recall == recall[within].max()))
    else:
        candidates = np.flatnonzero(finds & (alarms == alarms[finds].min()))
    return int(candidates[np.argmax(thresholds[candidates])]), bool(within.any() and recall.max() > 0)


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

    def predictor(self, scoring_overrides: Sequence[str], device: str) -> Predictor:
        """The fold's model as tuning scores it: its checkpoint's config with this tuning's scoring keys,
        not the operating point an earlier tuning stored (the one this tuning replaces)."""
        model, config = load_checkpoint(self.checkpoint)
        return Predictor([model], with_scoring_overrides(config, scoring_overrides, "--set"), device)


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
    rule = (
        f"Alarm budget: the most smoke found with at most {result.target:.2f} of {result.windows} smoke-free "
        f"windows alarming{', each scored alone' if result.windows_alone else ''}"
        if result.alarm_budget
        else f"Operating point: the highest threshold with region recall >= {result.target:.2f}"
    )
    table = Table(
        title=(
            f"{rule} (±{REGION_TOLERANCE} px), on {result.images} out-of-fold validation images "
            f"({result.smoke_images} with smoke)"
        )
    )
    columns = ("", "threshold", "region recall", "share of frames with a false region", "alarming windows")
    for column in columns:
        table.add_column(column, justify="left" if not column else "right")
    for name, threshold, recall in (
        ("before", result.previous_threshold, result.before),
        ("after", result.threshold, result.after),
    ):
        alarms = result.window_alarm_share(threshold)
        table.add_row(
            name,
            f"{threshold:.2f}",
            f"{recall:.4f}",
            f"{result.false_region_share(threshold):.4f}",
            "no window fits" if alarms is None else f"{alarms:.4f}",
        )
    return table


def shortfall(result: ThresholdResult) -> str | None:
    """The warning when no grid threshold met the rule's target; None otherwise."""
    if result.target_met is not False or result.target is None:
        return None
    if result.alarm_budget:
        return (
            f"No threshold that finds smoke keeps to the alarm budget {result.target:.2f}: at the fewest "
            f"alarms, {result.window_alarm_share(result.threshold):.4f} of the {result.windows} smoke-free "
            f"windows alarm at threshold {result.threshold:.2f} (region recall {result.after:.4f}), which "
            "is stored. Allow a larger budget (threshold.json's curve shows what each threshold costs), "
            "or look at the alarming windows: a confident one may be smoke the masks leave out."
        )
    return (
        f"Region recall target {result.target:.2f} not reached on the {result.smoke_images} validation "
        f"images with smoke: the best, {result.after:.4f} "
        f"({round(result.after * (result.smoke_images or 0))} of them found), at threshold "
        f"{result.threshold:.2f}, is stored."
    )
