"""The ``smokeseg`` command: parsing and printing only; each command calls into one wing."""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from smokeseg import __version__
from smokeseg.errors import ConfigError, SmokesegError, TrainingInterrupted

if TYPE_CHECKING:
    from smokeseg.inference.predictor import TileSpec

app = typer.Typer(
    help="Find and outline smoke in camera images: train, evaluate, predict and export models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect experiment configs.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect and convert datasets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
console = Console()

Overrides = Annotated[
    Optional[list[str]],  # noqa: UP045 - typer needs Optional here
    typer.Option("--set", "-s", help="Override a config value: section.key=value (repeatable)."),
]
ConfigArgument = Annotated[Path, typer.Argument(help="Hydrogen Torch-style experiment YAML.")]
# A trained model scores with the config stored in its checkpoint; these are the keys that may differ.
ScoringOverrides = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--set",
        "-s",
        help="Score with another value of a scoring key: prediction.KEY=VALUE or image.context_pass=VALUE "
        "(repeatable), e.g. prediction.test_time_augmentations=[horizontal_flip].",
    ),
]
# Scoring options shared by predict and evaluate, so both score an image the same way when asked to.
TileOption = Annotated[
    bool, typer.Option("--tile/--no-tile", help="Score at native resolution in overlapping tiles.")
]
TileSizeOption = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(help="Tile side, a multiple of 32 (default: the model's training size)."),
]
TileOverlapOption = Annotated[float, typer.Option(help="Below 1: a fraction of the tile; else pixels.")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ... or auto (cuda when present).")]
WorkdirOption = Annotated[Path, typer.Option(help="The server's folder: registry, datasets, experiments.")]
DEFAULT_WORKDIR = Path("smokeseg-work")


def _version(value: bool) -> None:
    if value:
        console.print(f"smokeseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)]
    )


@config_app.command("show")
def config_show(config: ConfigArgument, overrides: Overrides = None) -> None:
    """Print the effective config: file values, overrides and defaults, paths resolved."""
    from smokeseg.config.load import config_to_yaml, load_config

    console.print(config_to_yaml(load_config(config, overrides)), markup=False, highlight=False)


@data_app.command("check")
def data_check(config: ConfigArgument, overrides: Overrides = None) -> None:
    """Validate a dataset before training and print a summary."""
    from smokeseg.config.load import load_config
    from smokeseg.data.check import check_dataset, render_report

    report = check_dataset(load_config(config, overrides))
    console.print(render_report(report))
    if report.problems:
        raise typer.Exit(1)


@data_app.command("import")
def data_import(
    source: Annotated[str, typer.Argument(help="A folder or zip, an https:// URL, or an s3:// URL.")],
    name: Annotated[str, typer.Argument(help="The dataset's name in the registry.")],
    workdir: WorkdirOption = DEFAULT_WORKDIR,
) -> None:
    """Import a dataset into the work folder's registry, as the server's POST /v1/datasets does.

    s3:// reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL (for S3-compatible servers).
    """
    from smokeseg.service.datasets import ImportLimits, import_dataset
    from smokeseg.service.registry import Registry

    workdir.mkdir(parents=True, exist_ok=True)
    row = import_dataset(Registry.in_folder(workdir), workdir.resolve(), source, name, ImportLimits())
    for split in row["summary"]["splits"]:
        console.print(f"{split['name']}: {split['images']} images, {split['problems']} problems")
    console.print(f"Imported {name} as dataset {row['id']}")


@app.command()
def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="An images/ + masks/ folder, a Parquet/CSV table, or a folder or zip holding one table and "
            "its images (such as one `convert` wrote)."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="Folder to write the converted dataset to.")],
    data_folder: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Folder (or zip) with a table's images (default: found beside the table)."),
    ] = None,
    rle_order: Annotated[
        Literal["F", "C"], typer.Option(help="F: column-major (Hydrogen Torch); C: row-major.")
    ] = "F",
) -> None:
    """Convert image+mask folders to a Hydrogen Torch table (Parquet + RLE) and a config that trains on it,
    or a table back to folders."""
    from smokeseg.data.formats import convert_dataset

    written = convert_dataset(source, output, data_folder, rle_order)
    console.print(f"Wrote {', '.join(map(str, written))}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the demo dataset and its run.")] = Path("demo"),
    train_model: Annotated[bool, typer.Option("--train/--no-train", help="Train on it too.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Generate the built-in synthetic smoke dataset, train on it, and write the report."""
    from smokeseg.data.synthetic import generate_demo_dataset
    from smokeseg.layout import unused_run_folder

    config_path = generate_demo_dataset(output / "data")
    console.print(f"Demo dataset and config: {config_path}")
    if train_model:
        _train_and_report(config_path, [], unused_run_folder(output / "run"), progress)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="Experiment YAML.")] = None,  # noqa: UP045
    overrides: Overrides = None,
    output_dir: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Where outputs go (default: output/<experiment_name>)."),
    ] = None,
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Continue an interrupted run from its output folder."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train and validate each selected fold; write checkpoints, charts, predictions and a report."""
    if (config is None) == (resume is None):
        raise SmokesegError("Give either a CONFIG file or --resume OUTPUT_DIR (not both).")
    if resume is not None and (overrides or output_dir is not None):
        raise SmokesegError(
            f"--resume continues {resume} with the config it was started with, in its own folder: drop "
            "--set and --output-dir, or start a new run (a CONFIG file) for other settings."
        )
    _train_and_report(config, overrides or [], output_dir, progress, resume=resume)


def _quiet_lightning() -> None:
    """Lightning sets its own loggers to INFO when imported: keep its tips out of the user's run log."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


def _train_and_report(
    config: Path | None,
    overrides: list[str],
    output_dir: Path | None,
    progress: bool,
    *,
    resume: Path | None = None,
) -> None:
    """A fresh or a resumed run ends the same way: the results table, then the report."""
    from smokeseg.config.load import load_config
    from smokeseg.report.html import write_report
    from smokeseg.training.run import resume as resume_run
    from smokeseg.training.run import train as run_training

    _quiet_lightning()
    if resume is not None:
        results = resume_run(resume, progress=progress)
    else:
        results = run_training(load_config(config, overrides), output_dir, progress=progress)
    _print_results(results)
    report = write_report(results[0].fold_dir.parent)  # the experiment folder
    console.print(f"Report: {report}")


def _print_results(results: list) -> None:
    """One column per fold, one row per metric: readable however many metrics a run reports."""
    table = Table(title="Results")
    table.add_column("metric")
    for result in results:
        table.add_column(f"fold {result.fold}", justify="right")
    names = dict.fromkeys(name for result in results for name in result.metrics if name != "fold")
    for name in names:
        table.add_row(name, *(_format(result.metrics.get(name)) for result in results))
    console.print(table)
    for result in results:
        console.print(f"fold {result.fold}: {result.fold_dir}")


def _format(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="An experiment or fold folder from `smokeseg train`.")],
) -> None:
    """Write a self-contained HTML report: charts, metrics and a validation gallery."""
    from smokeseg.report.html import write_report

    console.print(f"Report: {write_report(run_dir)}")


@app.command()
def predict(
    model: Annotated[
        Path, typer.Argument(help="A checkpoint, a fold or experiment folder, or a scoring package.")
    ],
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders, quoted globs, Hydrogen Torch tables, zips.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the predictions to.")],
    table_format: Annotated[Literal["parquet", "csv"], typer.Option("--format")] = "parquet",
    masks: Annotated[bool, typer.Option("--masks", help="Write masks/<id>.png (0/255).")] = False,
    probabilities: Annotated[
        bool, typer.Option("--probabilities", help="Write probabilities/<id>.png (8-bit).")
    ] = False,
    overlays: Annotated[bool, typer.Option("--overlays", help="Write overlays/<id>.jpg.")] = False,
    tile: TileOption = False,
    tile_size: TileSizeOption = None,
    tile_overlap: TileOverlapOption = 0.25,
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="Probability threshold (default: the model's)."),
    ] = None,
    min_region_pixels: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Smallest region that makes a smoke verdict (default: 0.01% of the image, >= 16)."),
    ] = None,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Images (tiled: tiles) per forward pass."),
    ] = None,
    data_folder: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Folder (or zip) holding a table's images (default: the table's folder)."),
    ] = None,
    scoring_overrides: ScoringOverrides = None,
    device: DeviceOption = "auto",
) -> None:
    """Score images into a Hydrogen Torch-format table with a smoke verdict and boxes per image."""
    from rich.progress import Progress

    from smokeseg.inference.inputs import collect_inputs
    from smokeseg.inference.predict import predict as predict_to_folder
    from smokeseg.inference.predictor import Predictor

    predictor = Predictor.from_path(
        model, device, batch_size, _tile_spec(tile, tile_size, tile_overlap), scoring_overrides or []
    )
    samples = collect_inputs(inputs, data_folder)
    wanted = {"masks": masks, "probabilities": probabilities, "overlays": overlays}
    with Progress(console=console) as bar:
        task = bar.add_task("Predicting", total=len(samples))
        run = predict_to_folder(
            predictor,
            samples,
            output,
            table_format,
            image_outputs=[name for name, on in wanted.items() if on],
            threshold=threshold,
            min_region_pixels=min_region_pixels,
            progress=lambda done, _: bar.update(task, completed=done),
        )
    console.print(
        f"{run.images} images: {run.with_smoke} with smoke, {run.failed} not scored. Predictions: {run.table}"
    )
    if run.failed == run.images:
        console.print("Error: no image could be scored; each row's error says why.", style="red")
        raise typer.Exit(1)


def _tile_spec(tile: bool, size: int | None, overlap: float) -> TileSpec | None:
    from smokeseg.inference.predictor import TileSpec

    return TileSpec(size, overlap) if tile else None


class _ImageProgress:
    """A transient progress bar that is also the ``progress(done, total)`` callback scoring takes."""

    def __init__(self, description: str) -> None:
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True)
        self.task = self.bar.add_task(description, total=None)

    def __enter__(self) -> _ImageProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.stop()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="A checkpoint, fold folder or experiment folder.")],
    data: Annotated[
        Path,
        typer.Argument(
            help="Experiment YAML (its test table), a Parquet/CSV table, an images/+masks/ folder, or a zip."
        ),
    ],
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(min=0, max=1, help="Probability threshold (default: the model's, tuned if tuned)."),
    ] = None,
    data_folder: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Folder (or zip) with the images of a table (default: found beside the table)."),
    ] = None,
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="JSON file for the scores (default: evaluation.json in the model's folder)."),
    ] = None,
    min_region_pixels: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="Smallest smoke region for a smoke verdict (default: predict's)."),
    ] = None,
    region_tolerance: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            min=0,
            help="Pixels a verdict region may lie off the true smoke and still touch it (default: 3).",
        ),
    ] = None,
    tile: TileOption = False,
    tile_size: TileSizeOption = None,
    tile_overlap: TileOverlapOption = 0.25,
    scoring_overrides: ScoringOverrides = None,
    device: DeviceOption = "auto",
) -> None:
    """Score a model on labelled images: IoU, Dice, precision, recall, F-beta, MAE, detection, worst ones."""
    from smokeseg.inference.evaluate import evaluate as run_evaluation
    from smokeseg.inference.evaluate import render_evaluation
    from smokeseg.metrics import REGION_TOLERANCE

    with _ImageProgress("Evaluating") as progress:
        result = run_evaluation(
            model,
            data,
            threshold=threshold,
            data_folder=data_folder,
            min_region_pixels=min_region_pixels,
            region_tolerance=REGION_TOLERANCE if region_tolerance is None else region_tolerance,
            tile=_tile_spec(tile, tile_size, tile_overlap),
            scoring_overrides=scoring_overrides or [],
            device=device,
            progress=progress,
        )
    console.print(render_evaluation(result))
    console.print(f"Scores: {result.write_json(output)}")


@app.command("mine-negatives")
def mine_negatives(
    model: Annotated[
        Path, typer.Argument(help="A checkpoint, a fold or experiment folder, or a scoring package.")
    ],
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Labelled frames: Hydrogen Torch tables (.pq/.csv), images/+masks/ folders, zips."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the crops and negatives.csv.")],
    count_per_frame: Annotated[int, typer.Option(min=1, help="Most crops cut from one frame.")] = 1,
    size: Annotated[int, typer.Option(min=32, help="Crop side in pixels, at the model's scale.")] = 256,
    margin: Annotated[int, typer.Option(min=0, help="Pixels kept clear of any true smoke.")] = 32,
    random: Annotated[
        bool,
        typer.Option(
            "--random", help="Uniformly random smoke-free crops (the baseline) instead of the model's errors."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the random crops.")] = 0,
    threshold: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            min=0.0,
            max=1.0,
            help="Mine windows whose highest smoke probability is above this (default: the model's "
            "threshold, where it would alarm; a lower operating point's mines its fainter alarms too; 0: "
            "each frame's most smoke-like windows whatever their score). Not with --random.",
        ),
    ] = None,
    data_folder: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(
            help="Folder (or zip) with the images of a table (default: found beside the table); repeat it "
            "to give each source its own, in order.",
        ),
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Cut smoke-free crops where the model raises false alarms (or, with --random, anywhere clean) into a
    dataset with empty masks, for dataset.negative_dataframe."""
    from smokeseg.data.negatives import WindowSpec
    from smokeseg.inference.mining import TABLE_NAME
    from smokeseg.inference.mining import mine_negatives as run_mining

    rule = "random" if random else "hard"
    with _ImageProgress("Mining") as progress:
        run = run_mining(
            model,
            sources,
            out,
            rule=rule,
            spec=WindowSpec(size=size, margin=margin, count=count_per_frame, threshold=threshold),
            seed=seed,
            data_folder=data_folder,
            device=device,
            progress=progress,
        )
    summary = run.summary
    console.print(
        f"{run.crops} {rule} negatives from {summary['frames_with_crops']} of {summary['frames']} frames "
        f"({len(summary['frames_skipped'])} skipped): {run.folder / TABLE_NAME}"
    )
    if run.crops == 0:
        threshold_used = summary["threshold"]
        above, knobs = (
            (f", above the threshold {threshold_used}", "--margin, --size or --threshold")
            if threshold_used is not None
            else ("", "--margin or --size")
        )
        console.print(
            f"No window qualified (smoke-free{above}): the table is empty. Lower {knobs}, or give more "
            "frames.",
            style="yellow",
        )


@app.command("tune-threshold")
def tune_threshold(
    experiment: Annotated[Path, typer.Argument(help="An experiment (or fold) folder from `smokeseg train`.")],
    metric: Annotated[
        Optional[Literal["IoU", "Dice", "F-beta", "mean_image_IoU"]],  # noqa: UP045
        typer.Option(help="What to maximise (default: IoU, dataset-level)."),
    ] = None,
    min_region_recall: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Instead of --metric: the highest threshold that still finds smoke on at least this "
            "share (0-1] of the validation smoke images."
        ),
    ] = None,
    alarm_budget: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Instead of --metric: the threshold that finds smoke on the most validation smoke images "
            "while at most this share [0-1) of smoke-free windows of the validation frames raise an alarm."
        ),
    ] = None,
    window_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            min=16,
            help="With --alarm-budget: the side of the smoke-free windows in frame pixels (default 256).",
        ),
    ] = None,
    windows_alone: Annotated[
        bool,
        typer.Option(
            "--windows-alone",
            help="With --alarm-budget: score each smoke-free window as an image of its own (at its frame's "
            "scale) and count it when it raises an alarm, as smoke-free camera crops are judged, instead of "
            "counting the whole frame's verdict regions inside it. Slower: one scoring pass per window.",
        ),
    ] = False,
    scoring_overrides: ScoringOverrides = None,
) -> None:
    """Pick the probability threshold that maximises a metric on the out-of-fold validation images, the
    operator's operating point (the highest threshold that reaches a region recall), or the most smoke
    found within an alarm budget. With --set the images are scored with those scoring keys, and the keys
    are stored with the threshold, so predict, evaluate and export score that way too."""
    from smokeseg.inference.threshold import ALARM_WINDOWS, check_rule, render_tuning, shortfall
    from smokeseg.inference.threshold import tune_threshold as run_tuning
    from smokeseg.layout import THRESHOLD_NAME

    if window_size is not None and alarm_budget is None:
        raise typer.BadParameter("a window size is for --alarm-budget only.", param_hint="'--window-size'")
    if windows_alone and alarm_budget is None:
        raise typer.BadParameter("windows alone are for --alarm-budget only.", param_hint="'--windows-alone'")
    try:
        check_rule(metric, min_region_recall, alarm_budget)
    except ConfigError as error:
        raise typer.BadParameter(str(error)) from error
    with _ImageProgress("Re-scoring validation images") as progress:
        result = run_tuning(
            experiment,
            metric,
            min_region_recall=min_region_recall,
            alarm_budget=alarm_budget,
            windows=ALARM_WINDOWS if window_size is None else replace(ALARM_WINDOWS, size=window_size),
            windows_alone=windows_alone,
            scoring_overrides=scoring_overrides or [],
            progress=progress,
        )
    console.print(render_tuning(result))
    warning = shortfall(result)
    if warning is not None:
        console.print(f"Warning: {warning}", style="yellow", highlight=False)
    console.print(f"Stored as {THRESHOLD_NAME} in {', '.join(map(str, result.folds))}")


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A checkpoint, a fold folder, or an experiment folder.")],
    export_format: Annotated[Literal["onnx", "torchscript"], typer.Option("--format")] = "onnx",
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="File to write (default: model.onnx / model.pt in the model's folder)."),
    ] = None,
    package: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="Write a self-contained scoring package (ONNX + score.py) to this folder."),
    ] = None,
    scoring_overrides: ScoringOverrides = None,
) -> None:
    """Export a model (an experiment folder: all folds as one graph) to ONNX or TorchScript, or a package.
    With --set the package scores with those scoring keys (as predict and evaluate do with --set)."""
    from smokeseg.export import build_package, export_model

    if package is not None and (output is not None or export_format != "onnx"):
        raise SmokesegError("--package always holds model.onnx: give it without --output and --format.")
    if package is not None:
        console.print(f"Scoring package: {build_package(model, package, scoring_overrides or [])}")
        return
    if scoring_overrides:
        raise SmokesegError(
            "--set changes how a scoring package scores (its scoring.json); a bare model file holds the "
            "graph only. Give --package FOLDER with it."
        )
    console.print(f"Exported: {export_model(model, output, export_format)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the server.")] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workdir: WorkdirOption = DEFAULT_WORKDIR,
    model: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            exists=True, help="Default model for /v1/predict: checkpoint, run folder or scoring package."
        ),
    ] = None,
    token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(envvar="SMOKESEG_TOKEN", help="Require 'Authorization: Bearer TOKEN' on every call."),
    ] = None,
    session_hours: Annotated[
        float, typer.Option(min=0.01, help="With --token: a browser signs in again after this many hours.")
    ] = 12.0,
    sign_in_attempts: Annotated[
        int,
        typer.Option(
            min=1, help="With --token: wrong tokens a client address may send a minute before it gets 429."
        ),
    ] = 10,
    allow_root: Annotated[
        Optional[list[Path]],  # noqa: UP045
        typer.Option(help="A folder server-side path imports may read from (repeatable)."),
    ] = None,
    max_jobs: Annotated[int, typer.Option(min=1, help="Trainings that run at once.")] = 1,
    resume_jobs: Annotated[
        bool, typer.Option(help="Continue jobs a stop or crash interrupted, instead of marking them failed.")
    ] = False,
    database_url: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="SQLAlchemy URL of the registry (default: SQLite in the work folder)."),
    ] = None,
    max_upload_mb: Annotated[int, typer.Option(min=1, help="Largest request body (dataset uploads).")] = 2048,
    max_image_megapixels: Annotated[int, typer.Option(min=1, help="Largest image /v1/predict decodes.")] = 50,
) -> None:
    """Run the HTTP API: scoring, datasets, experiments and the training queue (docs at /docs)."""
    import uvicorn

    from smokeseg.service.app import GRACEFUL_SHUTDOWN_SECONDS, create_app
    from smokeseg.service.context import ServiceSettings

    settings = ServiceSettings(
        workdir=workdir,
        model=model,
        token=token,
        session_hours=session_hours,
        sign_in_attempts=sign_in_attempts,
        database_url=database_url,
        max_running_jobs=max_jobs,
        resume_jobs=resume_jobs,
        allowed_roots=tuple(path.resolve() for path in allow_root or []),
        max_upload_bytes=max_upload_mb * 1_000_000,
        max_image_pixels=max_image_megapixels * 1_000_000,
    )
    uvicorn.run(
        create_app(settings), host=host, port=port, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
    )


def main() -> None:
    """Entry point: a user's mistake prints as one clear message, never as a traceback."""
    try:
        app()
    except SmokesegError as error:
        Console(stderr=True).print(Text.assemble(("Error: ", "bold red"), str(error)), highlight=False)
        sys.exit(130 if isinstance(error, TrainingInterrupted) else 2)


if __name__ == "__main__":
    main()
