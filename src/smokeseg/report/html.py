"""A self-contained HTML report of a training run: metrics, the training charts, the worst validation images
and the validation images where the model draws smoke on something else (its false alarms).

Everything is embedded (PNG data URIs, inline CSS, no JavaScript), so the page can be mailed or archived
as one file and opened offline. The PNGs are also written beside it for reuse in slides and issues.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from PIL import Image

from smokeseg import __version__
from smokeseg.config.load import load_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample, validation_samples_by_id
from smokeseg.data.rle import rle_decode
from smokeseg.errors import ConfigError, SmokesegError
from smokeseg.inference.scoring import smoke_verdict
from smokeseg.layout import CHARTS_NAME, CONFIG_NAME, METRICS_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import false_region_pixels
from smokeseg.model.checkpoints import fold_folders
from smokeseg.report.overlay import overlay_mask
from smokeseg.storage import write_bytes_atomic, write_text_atomic

TILE_WIDTH = 320
TRUE_COLOR = (0, 210, 60)
PREDICTED_COLOR = (235, 30, 30)
FALSE_REGION_COLOR = (255, 150, 0)
PNG_FOLDER = "report_png"
GALLERY_COLUMNS = ("image_id", "rle_mask", "true_rle_mask", "height", "width", "loss")


@dataclass(frozen=True)
class MetricSpec:
    key: str
    label: str
    kind: Literal["score", "count", "seconds"]  # only scores get a mean across folds


METRICS = (
    MetricSpec("validation_IoU", "validation IoU", "score"),
    MetricSpec("validation_Dice", "validation Dice", "score"),
    MetricSpec("validation_mean_image_IoU", "validation mean per-image IoU", "score"),
    MetricSpec("validation_loss", "validation loss", "score"),
    MetricSpec("validation_region_recall", "validation region recall", "score"),
    MetricSpec("validation_false_region_frames", "validation images with a false region", "score"),
    MetricSpec("validation_false_regions_per_frame", "validation false regions per image", "score"),
    MetricSpec("validation_image_AUROC", "validation image AUROC", "score"),
    MetricSpec("test_IoU", "test IoU", "score"),
    MetricSpec("test_Dice", "test Dice", "score"),
    MetricSpec("test_mean_image_IoU", "test mean per-image IoU", "score"),
    MetricSpec("epochs", "epochs", "count"),
    MetricSpec("train_observations", "train images", "count"),
    MetricSpec("validation_observations", "validation images", "count"),
    MetricSpec("test_observations", "test images", "count"),
    MetricSpec("seed", "seed", "count"),
    MetricSpec("training_time_s", "training time", "seconds"),
    MetricSpec("wall_time_s", "wall time", "seconds"),
)


@dataclass(frozen=True)
class ChartSpec:
    name: str
    title: str
    ylabel: str
    series: tuple[tuple[str, str], ...]  # (charts.json key, colour)
    # A first value at 1000x the rest would flatten them to a line at 0: fit the axis to the rest instead
    # (see _fit_axis_to_inliers).
    robust_axis: bool = False


# An axis turns logarithmic when its largest value is this many times its smallest.
LOG_SCALE_SPREAD = 10.0
# Values above Q3 + OUTLIER_IQRS * IQR (of log values) are drawn off the axis, labelled.
OUTLIER_IQRS = 3.0
_AXIS_PADDING = 0.05

CHARTS = (
    ChartSpec("learning_rate", "Learning rate", "learning rate", (("learning_rate", "#6a3d9a"),)),
    # The batch loss keeps a linear axis, clipped at its 99th percentile: see _draw_train_loss.
    ChartSpec("train_loss", "Train batch loss", "loss", (("train_loss", "#1f77b4"),)),
    ChartSpec(
        "validation_loss",
        "Validation loss",
        "loss",
        (("validation_loss", "#d62728"),),
        robust_axis=True,
    ),
    # Training records validation_<prediction.metric> and validation_Dice, so IoU may be absent.
    ChartSpec(
        "validation_metric",
        "Validation IoU and Dice",
        "score",
        (("validation_IoU", "#2ca02c"), ("validation_Dice", "#ff7f0e")),
    ),
)


@dataclass
class Tile:
    image_id: str
    caption: str
    # The prediction's false regions (touching no true smoke) the tile draws in their own colour.
    false_regions: int = 0
    png_name: str | None = None
    png: bytes | None = None
    problem: str | None = None


@dataclass
class FoldReport:
    name: str
    folder: Path
    metrics: dict[str, Any]
    charts: dict[str, bytes] = field(default_factory=dict)
    tiles: list[Tile] = field(default_factory=list)
    false_alarm_tiles: list[Tile] = field(default_factory=list)
    false_alarm_images: int = 0
    validation_images: int = 0
    notes: list[str] = field(default_factory=list)
    config: ExperimentConfig | None = None
    image_problem: str | None = None
    dataset_source: str = ""


def write_report(run_dir: Path, out_dir: Path | None = None, gallery_size: int = 24) -> Path:
    """Write ``report.html`` and ``report_png/*.png`` for a fold folder or an experiment folder of folds.

    Returns the path of the HTML page.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    folds = [_build_fold(fold_dir, gallery_size) for fold_dir in find_fold_dirs(run_dir)]
    experiment = _experiment_name(run_dir, folds)

    png_dir = out_dir / PNG_FOLDER
    written: set[str] = set()
    for fold in folds:
        for name, png in _pngs(fold):
            write_bytes_atomic(png_dir / name, png)
            written.add(name)
    # A re-run with fewer folds or another gallery must not leave the last run's tiles behind.
    for stale in png_dir.glob("*.png"):
        if stale.name not in written:
            stale.unlink()
    return write_text_atomic(out_dir / "report.html", _render_page(experiment, run_dir, folds))


def find_fold_dirs(run_dir: Path) -> list[Path]:
    """``run_dir`` itself if it is a fold folder, else its folds (``fold_folders``) that hold charts."""
    if (run_dir / CHARTS_NAME).is_file():
        return [run_dir]
    folds = [fold for fold in fold_folders(run_dir) if (fold / CHARTS_NAME).is_file()]
    if not folds:
        raise SmokesegError(
            f"{run_dir}: no charts.json found; is this a smokeseg training output folder? "
            "run `smokeseg train CONFIG` first"
        )
    return folds


def _experiment_name(run_dir: Path, folds: Sequence[FoldReport]) -> str:
    if folds[0].config is not None:
        return folds[0].config.experiment_name
    return run_dir.resolve().parent.name if folds[0].folder == run_dir else run_dir.resolve().name


def _load_config(fold: FoldReport) -> None:
    """Read the fold's config; without one the report still shows everything but the images."""
    path = fold.folder / CONFIG_NAME
    if not path.is_file():
        fold.image_problem = f"{path} is missing, so the validation images cannot be found"
        return
    try:
        fold.config = load_config(path)
    except SmokesegError as error:
        fold.image_problem = f"{path} could not be read, so the validation images cannot be found: {error}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SmokesegError(
            f"{path} is not valid JSON ({error}); re-run training for this fold or delete the file"
        ) from None
    if not isinstance(data, dict):
        raise SmokesegError(f"{path} must hold a JSON object; re-run training for this fold")
    return data


def _build_fold(fold_dir: Path, gallery_size: int) -> FoldReport:
    metrics_path = fold_dir / METRICS_NAME
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    fold = FoldReport(name=fold_dir.name, folder=fold_dir, metrics=metrics)
    if not metrics:
        fold.notes.append("metrics.json is missing or empty: the run may have stopped before validation.")
    _load_config(fold)
    charts = _read_json(fold_dir / CHARTS_NAME)
    fold.charts = {spec.name: _chart_png(spec, charts) for spec in CHARTS}
    _build_gallery(fold, gallery_size)
    return fold


def _series(charts: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    """The (step, value) arrays of a chart; empty when the key is missing or malformed."""
    entry = charts.get(key)
    if not isinstance(entry, dict):
        return np.empty(0), np.empty(0)
    try:
        steps = np.asarray(entry.get("step") or [], dtype=float)
        values = np.asarray(entry.get("value") or [], dtype=float)
    except (TypeError, ValueError):
        return np.empty(0), np.empty(0)
    n = min(len(steps), len(values))
    return steps[:n], values[:n]


def _moving_average(values: np.ndarray) -> np.ndarray | None:
    """A centred moving average over about a tenth of the run; None when the run is too short to smooth."""
    window = min(101, len(values) // 10)
    if window < 3:
        return None
    return pd.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()


def _chart_png(spec: ChartSpec, charts: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    chart_figure(spec, charts).savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def chart_figure(spec: ChartSpec, charts: dict[str, Any]) -> Figure:
    """One chart of ``charts.json``, drawn but not rendered: its axes say what a reader will see."""
    figure = Figure(figsize=(6.0, 3.4), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(spec.title, loc="left", fontsize=12, fontweight="bold")
    axes.set_xlabel("training samples seen")
    axes.set_ylabel(spec.ylabel)
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(True, color="#e4e4e4", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    drawn = [(key, color, *_series(charts, key)) for key, color in spec.series]
    drawn = [entry for entry in drawn if len(entry[3])]
    if not drawn:
        keys = " / ".join(key for key, _ in spec.series)
        axes.text(0.5, 0.5, f"no {keys} in charts.json", transform=axes.transAxes, ha="center", color="#888")
        axes.set_xticks([])
        axes.set_yticks([])
    for index, (key, color, steps, values) in enumerate(drawn):
        if key == "train_loss":
            _draw_train_loss(axes, steps, values, color)
            continue
        _plot_line(axes, steps, values, color, label=key.removeprefix("validation_"))
        if spec.name == "validation_metric" and index == 0:
            _mark_best(axes, steps, values, color)
        if spec.robust_axis:
            _fit_axis_to_inliers(axes, steps, values, color)
    if spec.name == "learning_rate" and drawn:
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        axes.set_ylim(bottom=0)
    if len(drawn) > 1:
        axes.legend(frameon=False, loc="lower right")
    return figure


def _fit_axis_to_inliers(axes: Axes, steps: np.ndarray, values: np.ndarray, color: str) -> None:
    """Fit the y axis to the values bar far outliers, each labelled at the top edge with its value; a log
    axis when the rest span a decade or more. The line still runs off the top towards an outlier.

    Losses are positive; with a zero or negative value the axis stays linear and autoscaled.
    """
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if not len(values) or values.min() <= 0:
        return
    outlier = np.log10(values) > _upper_fence(np.log10(values))
    low, high = float(values[~outlier].min()), float(values[~outlier].max())
    log = high >= LOG_SCALE_SPREAD * low
    if log:
        axes.set_yscale("log")
    if not outlier.any():
        return
    axes.set_ylim(*_padded(low, high, log))
    for step, value in zip(steps[outlier], values[outlier], strict=True):
        axes.annotate(
            f"▲ {value:,.4g}",
            (step, 1.0),
            xycoords=axes.get_xaxis_transform(),
            textcoords="offset points",
            xytext=(-4, -12),
            ha="left",
            fontsize=9,
            color=color,
        )


def _upper_fence(log_values: np.ndarray) -> float:
    """Tukey's far-out fence on log values, and at least a decade above the upper quartile; none for
    fewer than four values, too few to call one an outlier."""
    if len(log_values) < 4:
        return math.inf
    q1, q3 = np.percentile(log_values, [25, 75])
    return float(q3 + max(OUTLIER_IQRS * (q3 - q1), 1.0))


def _padded(low: float, high: float, log: bool) -> tuple[float, float]:
    if log:
        low_exp, high_exp = math.log10(low), math.log10(high)
        pad = _AXIS_PADDING * ((high_exp - low_exp) or 1.0)
        return 10 ** (low_exp - pad), 10 ** (high_exp + pad)
    pad = _AXIS_PADDING * ((high - low) or high)
    return low - pad, high + pad


def _plot_line(
    axes: Axes, steps: np.ndarray, values: np.ndarray, color: str, label: str | None = None
) -> None:
    """A line, with markers while there are few points (validation runs once an epoch)."""
    marker = "o" if len(values) <= 60 else None
    axes.plot(steps, values, color=color, linewidth=1.8, marker=marker, markersize=4, label=label)


def _draw_train_loss(axes: Axes, steps: np.ndarray, values: np.ndarray, color: str) -> None:
    smoothed = _moving_average(values)
    if smoothed is None:
        _plot_line(axes, steps, values, color)
        return
    axes.plot(steps, values, color=color, alpha=0.3, linewidth=0.8, label="batch loss")
    axes.plot(steps, smoothed, color=color, linewidth=2.0, label="moving average")
    axes.legend(frameon=False, loc="upper right")
    # Early batches can be many times the settled loss; keep the settled part readable.
    finite = values[np.isfinite(values)]
    if len(finite):
        axes.set_ylim(bottom=min(0.0, float(finite.min())), top=float(np.percentile(finite, 99)) * 1.05)


def _mark_best(axes: Axes, steps: np.ndarray, values: np.ndarray, color: str) -> None:
    if not np.isfinite(values).any():
        return
    best = int(np.nanargmax(values))
    axes.scatter(
        [steps[best]], [values[best]], s=80, facecolors="none", edgecolors=color, linewidths=1.5, zorder=3
    )
    axes.annotate(
        f"best {values[best]:.3f}",
        (steps[best], values[best]),
        textcoords="offset points",
        xytext=(0, -16),
        ha="center",
        fontsize=9,
        color=color,
    )


def _build_gallery(fold: FoldReport, gallery_size: int) -> None:
    path = fold.folder / VALIDATION_PREDICTIONS_NAME
    if not path.is_file():
        fold.notes.append("validation_predictions.parquet is missing: no validation gallery.")
        return
    table = pd.read_parquet(path)
    missing = [column for column in GALLERY_COLUMNS if column not in table.columns]
    if missing:
        fold.notes.append(
            f"{path} lacks the columns {', '.join(missing)}: no validation gallery. "
            "Re-run training with this smokeseg version to write them."
        )
        return
    fold.validation_images = len(table)
    worst = table.sort_values("loss", ascending=False, na_position="last", kind="stable").head(gallery_size)
    samples = _validation_images(fold)
    if samples is None:
        fold.notes.append(f"Validation images not shown: {fold.image_problem}")
    for rank, row in enumerate(worst.itertuples(index=False), start=1):
        fold.tiles.append(_tile(fold, rank, row, samples))
    if "false_regions" not in table.columns:  # written before false regions were counted
        return
    alarming = table[table["false_regions"] > 0]
    fold.false_alarm_images = len(alarming)
    most = alarming.sort_values(["false_regions", "loss"], ascending=False, kind="stable").head(gallery_size)
    for rank, row in enumerate(most.itertuples(index=False), start=1):
        fold.false_alarm_tiles.append(_tile(fold, rank, row, samples, gallery="false_alarm"))


def _validation_images(fold: FoldReport) -> dict[str, Sample] | None:
    """The fold's validation samples by image id, found the way training found them; None if they can't be.

    Going through the dataset loader rather than ``data_folder`` alone keeps images/ + masks/ folders,
    tables inside archives, custom validation tables and validated extra frames working.
    """
    if fold.config is None:
        return None
    dataset = fold.config.dataset
    try:
        sources = " and ".join(str(table.table) for table in dataset.validation_tables())
    except ConfigError:
        fold.image_problem = f"{fold.folder / 'config.yaml'} names no dataset table or folder"
        return None
    try:
        samples, _ = validation_samples_by_id(dataset, require_masks=False)
    except SmokesegError as error:
        fold.image_problem = f"the dataset {sources} cannot be read: {error}"
        return None
    fold.dataset_source = sources
    return samples


def _tile(
    fold: FoldReport, rank: int, row: Any, samples: dict[str, Sample] | None, gallery: str = "gallery"
) -> Tile:
    """One validation image's tile; a row that training counted false regions on gets them drawn, in any
    gallery. ``gallery`` names the PNG written beside the report."""
    image_id = str(row.image_id)
    tile = Tile(image_id=image_id, caption=_caption(row))
    if samples is None or fold.config is None:
        tile.problem = "image not available: see the note above"
        return tile
    sample = samples.get(image_id)
    if sample is None:
        tile.problem = f"{image_id} is not in {fold.dataset_source}; has the dataset changed since training?"
        return tile
    height, width = int(row.height), int(row.width)
    rle_order = fold.config.dataset.rle_order  # training encodes its prediction tables in this order
    try:
        truth = rle_decode(row.true_rle_mask, height, width, rle_order, where=f"{image_id} true_rle_mask")
        predicted = rle_decode(row.rle_mask, height, width, rle_order, where=f"{image_id} rle_mask")
        image = sample.load_image()
    # One unreadable image or mask must not cost the user the rest of the report.
    except SmokesegError as error:
        tile.problem = str(error)
        return tile
    if image.shape[:2] != (height, width):
        tile.problem = (
            f"{image_id} is {image.shape[1]}x{image.shape[0]} px but its masks are {width}x{height}; "
            "has the image changed since training?"
        )
        return tile
    tile.false_regions = int(getattr(row, "false_regions", 0))
    false = _false_regions(predicted, truth) if tile.false_regions else None
    tile.png = _tile_png(image, truth, predicted, false)
    tile.png_name = f"{fold.name}_{gallery}_{rank:02d}_{_safe_name(image_id)}.png"
    return tile


def _false_regions(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The predicted mask's false regions as training counted them: its verdict regions (predict's alarm
    rule, default smallest region) that touch no true smoke."""
    regions = smoke_verdict(predicted.astype(np.float32), 0.5).regions
    return false_region_pixels(regions, truth)


def _caption(row: Any) -> str:
    parts = [f"IoU {_number(getattr(row, 'iou', None), 3)}"]
    false_regions = getattr(row, "false_regions", None)
    if false_regions:
        parts.insert(0, f"{int(false_regions)} false region{'s' if false_regions > 1 else ''}")
    if hasattr(row, "dice"):
        parts.append(f"Dice {_number(row.dice, 3)}")
    parts.append(f"loss {_number(row.loss, 3)}")
    return " · ".join(parts)


def _safe_name(image_id: str) -> str:
    stem = Path(image_id).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "image"


def _tile_png(
    image: np.ndarray, truth: np.ndarray, predicted: np.ndarray, false: np.ndarray | None = None
) -> bytes:
    """Truth overlay and prediction overlay side by side, downscaled to keep the page light; ``false``
    (the prediction's false regions) is drawn over the prediction in its own colour."""
    height = max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1]))
    size = (TILE_WIDTH, height)
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    panels = [
        overlay_mask(small, _resize_mask(mask, size), color)
        for mask, color in ((truth, TRUE_COLOR), (predicted, PREDICTED_COLOR))
    ]
    if false is not None:
        # A region of a few pixels vanishes when a 1280 px frame shrinks to a tile: any pixel marks it.
        panels[1] = overlay_mask(panels[1], _resize_mask(false, size, any_pixel=True), FALSE_REGION_COLOR)
    gap = np.full((height, 6, 3), 255, dtype=np.uint8)
    combined = Image.fromarray(np.concatenate([panels[0], gap, panels[1]], axis=1))
    # A 256-colour palette cuts photo PNGs to about a third, still sharp enough for judging masks.
    palette = combined.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _resize_mask(mask: np.ndarray, size: tuple[int, int], any_pixel: bool = False) -> np.ndarray:
    """Area-average then threshold, so thin smoke plumes survive a large downscale better than nearest;
    ``any_pixel`` keeps every tile pixel that covers any of the mask."""
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)
    return np.asarray(resized) >= (1 if any_pixel else 128)


def _pngs(fold: FoldReport) -> list[tuple[str, bytes]]:
    charts = [(f"{fold.name}_{key}.png", png) for key, png in fold.charts.items()]
    tiles = [
        (tile.png_name, tile.png)
        for tile in (*fold.tiles, *fold.false_alarm_tiles)
        if tile.png_name and tile.png
    ]
    return charts + tiles


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool | int | np.integer):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "n/a" if math.isnan(number) else f"{number:.{digits}f}"


def _duration(seconds: Any) -> str:
    try:
        total = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if math.isnan(total):
        return "n/a"
    if total < 60:
        return f"{total:.1f} s"
    minutes, secs = divmod(round(total), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _format_metric(spec: MetricSpec, value: Any) -> str:
    if spec.kind == "seconds":
        return _duration(value)
    return _number(value, 4 if spec.kind == "score" else 0)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _metrics_table(metrics: dict[str, Any]) -> str:
    """Known metrics in a fixed order, then any others the training wrote, so nothing is hidden."""
    known = {spec.key for spec in METRICS}
    rows = [(spec.label, _format_metric(spec, metrics[spec.key])) for spec in METRICS if spec.key in metrics]
    rows += [(key, _number(value)) for key, value in metrics.items() if key not in known and key != "fold"]
    if not rows:
        return ""
    cards = "".join(f"<div><dt>{_e(label)}</dt><dd>{_e(value)}</dd></div>" for label, value in rows)
    return f'<dl class="metrics">{cards}</dl>'


def _summary_table(folds: Sequence[FoldReport]) -> str:
    specs = [spec for spec in METRICS if any(spec.key in fold.metrics for fold in folds)]
    if not specs:
        return ""
    head = "<tr><th>fold</th>" + "".join(f"<th>{_e(spec.label)}</th>" for spec in specs) + "</tr>"
    rows = []
    for fold in folds:
        cells = "".join(
            f"<td>{_e(_format_metric(spec, fold.metrics[spec.key]) if spec.key in fold.metrics else '')}</td>"
            for spec in specs
        )
        rows.append(f'<tr><th><a href="#{_e(fold.name)}">{_e(fold.name)}</a></th>{cells}</tr>')
    mean_cells = "".join(f"<td>{_e(_fold_mean(folds, spec))}</td>" for spec in specs)
    rows.append(f'<tr class="mean"><th>mean</th>{mean_cells}</tr>')
    return (
        '<section class="summary"><h2>Folds</h2>'
        f'<table class="summary">{head}{"".join(rows)}</table></section>'
    )


def _fold_mean(folds: Sequence[FoldReport], spec: MetricSpec) -> str:
    if spec.kind == "count":
        return ""
    values = []
    for fold in folds:
        try:
            values.append(float(fold.metrics[spec.key]))
        except (KeyError, TypeError, ValueError):
            continue
    return _format_metric(spec, float(np.nanmean(values))) if values else ""


def _chart_grid(fold: FoldReport) -> str:
    images = "".join(
        f'<img src="{_data_uri(fold.charts[spec.name])}" alt="{_e(spec.title)} chart of {_e(fold.name)}">'
        for spec in CHARTS
    )
    return f'<div class="charts">{images}</div>'


def _gallery(fold: FoldReport) -> str:
    shown = f"{len(fold.tiles)} of {fold.validation_images}"
    return _tile_grid(fold.tiles, f"Validation images, worst loss first ({shown})", "worst")


def _false_alarm_gallery(fold: FoldReport) -> str:
    shown = f"{len(fold.false_alarm_tiles)} of the {fold.false_alarm_images}"
    title = f"False alarms: validation images with a false region, most first ({shown})"
    return _tile_grid(fold.false_alarm_tiles, title, "false-alarms")


def _tile_grid(tiles: Sequence[Tile], title: str, kind: str) -> str:
    if not tiles:
        return ""
    figures = []
    for tile in tiles:
        if tile.png is not None:
            body = (
                '<div class="panels"><span>ground truth</span><span>prediction</span></div>'
                f'<img src="{_data_uri(tile.png)}" alt="{_e(tile.image_id)}: truth and prediction">'
            )
        else:
            body = f'<div class="placeholder">{_e(tile.problem)}</div>'
        figures.append(
            f'<figure class="tile" data-image-id="{_e(tile.image_id)}">{body}'
            f"<figcaption><b>{_e(tile.image_id)}</b><br>{_e(tile.caption)}</figcaption></figure>"
        )
    swatches = [(TRUE_COLOR, "ground truth"), (PREDICTED_COLOR, "prediction")]
    if any(tile.false_regions and tile.png for tile in tiles):
        swatches.append((FALSE_REGION_COLOR, "false region (touches no true smoke)"))
    legend = "".join(
        f'<span class="swatch" style="background:rgb{color}"></span>{label} ' for color, label in swatches
    )
    return (
        f'<h3>{_e(title)}</h3><p class="legend">{legend.rstrip()}</p>'
        f'<div class="gallery" data-gallery="{kind}">{"".join(figures)}</div>'
    )


def _fold_section(fold: FoldReport) -> str:
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in fold.notes)
    return (
        f'<section class="fold" id="{_e(fold.name)}"><h2>{_e(fold.name)}</h2>{notes}'
        f"{_metrics_table(fold.metrics)}<h3>Training</h3>{_chart_grid(fold)}{_gallery(fold)}"
        f"{_false_alarm_gallery(fold)}</section>"
    )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #f6f7f9; }
main { max-width: 1320px; margin: 0 auto; padding: 24px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; color: #666; font-size: 13px; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
h3 { margin: 24px 0 8px; }
section.fold, section.summary { background: #fff; border-radius: 8px; padding: 8px 20px 20px;
                                margin-top: 20px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
table { border-collapse: collapse; font-size: 14px; }
dl.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 8px;
             margin: 12px 0; }
dl.metrics div { background: #f6f7f9; border-radius: 6px; padding: 6px 10px; }
dl.metrics dt { font-size: 12px; color: #666; }
dl.metrics dd { margin: 2px 0 0; font-size: 18px; font-variant-numeric: tabular-nums; }
table.summary th, table.summary td { padding: 4px 10px; border-bottom: 1px solid #eee;
                                     font-variant-numeric: tabular-nums; white-space: nowrap; }
table.summary td { text-align: right; }
table.summary tr:first-child th { font-size: 12px; color: #555; vertical-align: bottom; white-space: normal; }
table.summary tr.mean { font-weight: bold; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 12px; }
.charts img { width: 100%; border: 1px solid #eee; border-radius: 4px; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr)); gap: 14px; }
.tile { margin: 0; background: #fafafa; border: 1px solid #e5e5e5; border-radius: 6px; padding: 6px; }
.tile img { width: 100%; display: block; }
.panels { display: flex; font-size: 11px; color: #777; }
.panels span { flex: 1; }
.tile figcaption { font-size: 13px; margin-top: 4px; overflow-wrap: anywhere; }
.placeholder { background: #eee; color: #a33; min-height: 120px; display: flex; align-items: center;
               justify-content: center; text-align: center; padding: 12px; font-size: 13px; }
.note { background: #fff6d6; border-left: 4px solid #e0b400; padding: 6px 10px; font-size: 14px; }
.legend { font-size: 13px; color: #555; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin: 0 4px 0 10px;
          vertical-align: -1px; }
"""


def _render_page(experiment: str, run_dir: Path, folds: Sequence[FoldReport]) -> str:
    fold_names = ", ".join(fold.name for fold in folds)
    summary = _summary_table(folds) if len(folds) > 1 else ""
    sections = "".join(_fold_section(fold) for fold in folds)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(experiment)} - smokeseg report</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f"<body><main><header><h1>{_e(experiment)}</h1>"
        f"<p>{_e(fold_names)} · {_e(run_dir.resolve())} · smokeseg {_e(__version__)}</p></header>"
        f"{summary}{sections}</main></body></html>\n"
    )
