"""Score a trained model on labelled images: segmentation quality, smoke detection, and where it fails.

The images go through the Predictor (the one scoring path) and the numbers through ``smokeseg.metrics``,
so an IoU here is the IoU training logged and ``predict`` would give for the same image and threshold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table

from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import Sample, load_samples
from smokeseg.errors import ConfigError, DataError
from smokeseg.inference.predictor import Predictor, TileSpec
from smokeseg.inference.scoring import Prediction, Verdict
from smokeseg.metrics import (
    COUNT_METRICS,
    FBETA_SQUARED,
    REGION_TOLERANCE,
    SIZE_BINS,
    detection_scores,
    iou_from_counts,
    mean_absolute_error,
    region_outcome,
    region_scores,
    reliability,
    scores_by_size,
    summarize_counts,
    threshold_counts,
)
from smokeseg.storage import write_text_atomic

CONFIG_SUFFIXES = (".yaml", ".yml")
EVALUATION_NAME = "evaluation.json"
WORST_IMAGES = 10

Progress = Callable[[int, int], None]


def load_labelled_samples(
    data: str | Path, data_folder: str | Path | None, dataset_cfg: DatasetConfig
) -> list[Sample]:
    """Samples with masks from an experiment YAML (its test table), a table, an images/+masks/ folder, a zip.

    A YAML brings its own dataset section; a table or folder is read with the model's column names.
    """
    data = Path(data)
    if data.suffix.lower() in CONFIG_SUFFIXES:
        config = load_config(data)
        test_table = config.dataset.test_dataframe
        if test_table is None:
            raise ConfigError(
                f"{data} has no dataset.test_dataframe to evaluate on. Set it to a table with masks, "
                "or give the table or an images/ + masks/ folder instead of the config."
            )
        dataset_cfg = config.dataset.for_test_table()
        data_folder = data_folder or dataset_cfg.data_folder_test or dataset_cfg.data_folder
        data = test_table
    return labelled_samples(data, data_folder, dataset_cfg, "evaluate")


def labelled_samples(
    data: Path, data_folder: str | Path | None, dataset_cfg: DatasetConfig, needed_by: str
) -> list[Sample]:
    """Samples of a table, an images/+masks/ folder or a zip, each with a mask; an image without one is
    a DataError naming the first, and the command (``needed_by``) that needs them."""
    samples = load_samples(data, data_folder, dataset_cfg, require_masks=False)
    unlabelled = [sample for sample in samples if not sample.has_mask]
    if unlabelled:
        raise DataError(
            f"{needed_by} needs masks: {data} has none for {len(unlabelled)} of {len(samples)} images "
            f"(first: {unlabelled[0].source}). Give a table with the {dataset_cfg.rle_mask_column!r} "
            "column (dataset.rle_mask_column), or an images/ + masks/ folder."
        )
    return samples


@dataclass
class EvaluationResult:
    """Per-image scores (one row per image) and the model, data and threshold they came from.

    Summaries are computed from ``images`` on demand, so there is one source for every number.
    """

    model: str
    data: str
    threshold: float
    min_region_pixels: int | None
    region_tolerance: int
    images: pd.DataFrame

    @property
    def counts(self) -> np.ndarray:
        return self.images[["tp", "fp", "fn"]].to_numpy()

    def segmentation(self) -> dict[str, float]:
        scores = summarize_counts(self.counts, list(COUNT_METRICS))
        scores["mean_image_MAE"] = float(self.images["mae"].mean())
        return scores

    def by_size(self) -> dict[str, dict[str, float | int]]:
        return scores_by_size(self.counts, self.images["true_fraction"].to_numpy())

    def detection(self) -> dict[str, float | int | None]:
        """Alarms per frame, then the region view: an alarm counts as found only where it touches smoke."""
        images = self.images
        return {
            **detection_scores(images["true_smoke"], images["predicted_smoke"]),
            **region_scores(
                images["true_smoke"], images["region_hit"], images["false_regions"], images["frame_score"]
            ),
        }

    def calibration(self) -> dict[str, Any]:
        """How well the frame score reads as a probability of smoke (``metrics.reliability``)."""
        return reliability(self.images["true_smoke"], self.images["frame_score"])

    def worst(self, count: int = WORST_IMAGES) -> pd.DataFrame:
        """The lowest-IoU images, worst first: where to look at the overlays."""
        columns = ["image_id", "iou", "true_fraction", "predicted_fraction"]
        return self.images.nsmallest(count, "iou")[columns]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "images": len(self.images),
            "threshold": self.threshold,
            "min_region_pixels": self.min_region_pixels,
            "region_tolerance": self.region_tolerance,
            "f_beta_squared": FBETA_SQUARED,
            "segmentation": self.segmentation(),
            "by_size": self.by_size(),
            "detection": self.detection(),
            "calibration": self.calibration(),
            "worst_images": self.worst().to_dict(orient="records"),
        }

    def write_json(self, target: str | Path | None = None) -> Path:
        """Write ``to_dict()`` atomically; by default ``evaluation.json`` in the model's folder."""
        if target is None:
            model = Path(self.model)
            target = (model if model.is_dir() else model.parent) / EVALUATION_NAME
        return write_text_atomic(target, json.dumps(self.to_dict(), indent=1))


def evaluate(
    model_path: str | Path,
    data: str | Path,
    *,
    threshold: float | None = None,
    data_folder: str | Path | None = None,
    min_region_pixels: int | None = None,
    region_tolerance: int = REGION_TOLERANCE,
    tile: TileSpec | None = None,
    scoring_overrides: Sequence[str] = (),
    device: str = "auto",
    progress: Progress | None = None,
) -> EvaluationResult:
    """Score every labelled image of ``data`` at its native size; ``threshold`` defaults to the model's own.

    An image is predicted to hold smoke by the verdict ``predict`` gives (``scoring.smoke_verdict``;
    ``min_region_pixels`` None takes its default); a verdict region within ``region_tolerance`` pixels of
    true smoke touches it (``smokeseg.metrics``). ``scoring_overrides``: as ``Predictor.from_path``'s.
    ``progress(done, total)`` is called after each image.
    """
    predictor = Predictor.from_path(model_path, device, tile=tile, scoring_overrides=scoring_overrides)
    samples = load_labelled_samples(data, data_folder, predictor.config.dataset)
    threshold = predictor.threshold if threshold is None else threshold
    results = evaluate_at_thresholds(
        predictor,
        samples,
        {"": threshold},
        model=str(Path(model_path).resolve()),
        data=str(Path(data).resolve()),
        min_region_pixels=min_region_pixels,
        region_tolerance=region_tolerance,
        progress=progress,
    )
    return results[""]


def evaluate_at_thresholds(
    predictor: Predictor,
    samples: Sequence[Sample],
    thresholds: Mapping[str, float],
    *,
    model: str,
    data: str,
    min_region_pixels: int | None = None,
    region_tolerance: int = REGION_TOLERANCE,
    progress: Progress | None = None,
) -> dict[str, EvaluationResult]:
    """``evaluate``'s result at each named threshold, the images scored once: comparing operating points
    costs one scoring pass, not one per point. ``model`` and ``data`` name what was scored."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in thresholds}
    for done, prediction in enumerate(predictor.predict_samples(samples), start=1):
        truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
        for name, threshold in thresholds.items():
            verdict = prediction.verdict(threshold, min_region_pixels)
            rows[name].append(image_scores(prediction, truth, verdict, threshold, region_tolerance))
        if progress is not None:
            progress(done, len(samples))
    return {
        name: EvaluationResult(
            model, data, threshold, min_region_pixels, region_tolerance, pd.DataFrame(rows[name])
        )
        for name, threshold in thresholds.items()
    }


def image_scores(
    prediction: Prediction, truth: np.ndarray, verdict: Verdict, threshold: float, region_tolerance: int
) -> dict[str, Any]:
    """One row of ``EvaluationResult.images``: a scored image, its true mask and its verdict at
    ``threshold``; the caller decodes the mask and finds the regions once, for every use it has of them."""
    probabilities = prediction.probabilities
    predicted = probabilities > threshold
    tp, fp, fn = (int(count) for count in threshold_counts(probabilities, truth, [threshold])[0])
    false_regions, region_hit = region_outcome(verdict.regions, truth, region_tolerance)
    return {
        "image_id": prediction.sample.image_id,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "iou": float(iou_from_counts(np.array([tp, fp, fn]))[0]),
        "mae": mean_absolute_error(probabilities, truth),
        "true_fraction": float(truth.mean()),
        "predicted_fraction": float(predicted.mean()),
        "true_smoke": bool(truth.any()),
        "predicted_smoke": verdict.smoke,
        "false_regions": false_regions,
        "region_hit": region_hit,
        "probability_max": float(probabilities.max()),
        "image_probability": prediction.image_probability,
        "frame_score": prediction.frame_score,
    }


def render_evaluation(result: EvaluationResult) -> RenderableType:
    """A summary table (both views of each score, IoU by smoke size, image-level detection), then the
    worst images."""
    summary = Table(title=f"Evaluation: {len(result.images)} images, threshold {result.threshold:.2f}")
    for column in ("", "dataset-level", "mean per image"):
        summary.add_column(column, justify="left" if not column else "right")
    scores = result.segmentation()
    for name in COUNT_METRICS:
        label = f"{name} (β²={FBETA_SQUARED})" if name == "F-beta" else name
        summary.add_row(label, _number(scores[name]), _number(scores[f"mean_image_{name}"]))
    summary.add_row("MAE (probabilities)", "-", _number(scores["mean_image_MAE"]))
    summary.add_section()
    for name, scores_in_bin in result.by_size().items():
        summary.add_row(
            f"IoU, {name} smoke ({_size_range(name)}), n={scores_in_bin['images']}",
            _number(scores_in_bin.get("IoU")),
            _number(scores_in_bin.get("mean_image_IoU")),
        )
    summary.add_section()
    detection = result.detection()
    summary.add_row(
        f"smoke images with an alarm, n={detection['images_with_smoke']}", _number(detection["recall"]), ""
    )
    summary.add_row(
        f"smoke images with an alarm on the smoke (region recall, ±{result.region_tolerance} px)",
        _number(detection["region_recall"]),
        "",
    )
    summary.add_row("alarms that were on smoke images (precision)", _number(detection["precision"]), "")
    summary.add_row(
        f"false-alarm rate on smoke-free images, n={detection['images_without_smoke']}",
        _number(detection["false_positive_rate"]),
        "",
    )
    summary.add_row(
        f"images with a false region, n={len(result.images)}", _number(detection["false_region_frames"]), ""
    )
    summary.add_row("false regions per image", _number(detection["false_regions_per_frame"]), "")
    summary.add_row("image AUROC (highest probability)", _number(detection["image_AUROC"]), "")
    worst = Table(title="Lowest IoU")
    for column in ("image", "IoU", "true smoke", "predicted smoke"):
        worst.add_column(column, justify="left" if column == "image" else "right", overflow="fold")
    for row in result.worst().to_dict("records"):
        worst.add_row(
            row["image_id"],
            _number(row["iou"]),
            f"{row['true_fraction']:.2%}",
            f"{row['predicted_fraction']:.2%}",
        )
    return Group(summary, worst)


def _size_range(name: str) -> str:
    edges = [0.0, *SIZE_BINS.values()]
    index = list(SIZE_BINS).index(name)
    low, high = edges[index], edges[index + 1]
    if low == 0:
        return f"under {high:.0%}"
    if np.isinf(high):
        return f"{low:.0%} or more"
    return f"{low:.0%}-{high:.0%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
