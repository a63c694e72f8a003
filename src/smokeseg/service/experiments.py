"""Experiments: validate a config against a dataset, queue it, and read what its run folder holds."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from smokeseg.config.load import PATH_KEYS, config_from_dict, config_to_yaml
from smokeseg.errors import ConfigError
from smokeseg.layout import (
    CHARTS_NAME,
    CHECKPOINT_NAME,
    LOG_NAME,
    METRICS_NAME,
    SCORING_PACKAGE_NAME,
    VALIDATION_PREDICTIONS_NAME,
)
from smokeseg.model.checkpoints import checkpoint_files, fold_folders
from smokeseg.service.errors import ConflictError, NotFoundError
from smokeseg.service.jobs import EXPERIMENTS_FOLDER, JOB_CONFIG_NAME, RUN_FOLDER, experiment_folder
from smokeseg.service.registry import (
    FINAL_STATES,
    QUEUED,
    SUCCEEDED,
    Registry,
    datasets,
    experiments,
    new_id,
    now,
)
from smokeseg.storage import write_text_atomic

REPORT_NAME = "report.html"
PACKAGE_ARCHIVE = "scoring_package.zip"
# Paths the service decides: a request may not point training at other files on the server.
_SERVER_PATH_KEYS = {"dataset": set(PATH_KEYS), "architecture": {"pretrained_weights"}}
# architecture.init_from names one of this server's experiments instead; the service resolves it.
START_FROM_PREFIX = "experiment:"
_PREDICTION_COLUMNS = (
    "image_id",
    "iou",
    "dice",
    "loss",
    "smoke",
    "confidence",
    "smoke_fraction",
    "false_regions",
)
_LOG_LINES = 200


def _given(value: Any) -> bool:
    return value is not None and str(value).strip() not in {"", "None"}


def build_config_yaml(
    name: str,
    dataset: dict[str, Any],
    config_yaml: str | None,
    fields: dict[str, Any],
    start_from: Callable[[str], str],
) -> str:
    """The experiment's validated config: YAML text, then fields over it, then the dataset's paths and
    ``architecture.init_from`` as ``start_from`` resolves it."""
    try:
        raw = yaml.safe_load(config_yaml or "") or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config_yaml is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config_yaml must hold a mapping of sections, not {type(raw).__name__}.")
    for section, values in fields.items():
        current = raw.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{section} is a value in config_yaml, not a section.")
        current.update(values)
    for section, keys in _SERVER_PATH_KEYS.items():
        given = sorted(keys & set(raw.get(section) or {}))
        given = [key for key in given if _given(raw[section][key])]
        if given:
            raise ConfigError(
                f"{', '.join(f'{section}.{key}' for key in given)}: paths on the server are set by the "
                "service (dataset paths come from the dataset); leave them out."
            )
    architecture = raw.get("architecture")
    if isinstance(architecture, dict) and _given(architecture.get("init_from")):
        architecture["init_from"] = start_from(str(architecture["init_from"]).strip())
    raw["dataset"] = {**(raw.get("dataset") or {}), **{k: v for k, v in dataset.items() if k in PATH_KEYS}}
    raw["experiment_name"] = name
    return config_to_yaml(config_from_dict(raw, source="experiment config"))


def create_experiment(
    registry: Registry,
    workdir: Path,
    name: str,
    dataset_id: str,
    config_yaml: str | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    dataset = registry.get(datasets, dataset_id)
    if dataset is None:
        raise NotFoundError(f"No dataset with id {dataset_id}; import one with POST /v1/datasets.")
    text = build_config_yaml(
        name, dataset["dataset_config"], config_yaml, fields, lambda given: resolve_start(registry, given)
    )
    experiment_id = new_id()
    folder = experiment_folder(workdir, experiment_id)
    write_text_atomic(folder / JOB_CONFIG_NAME, text)
    return registry.insert(
        experiments,
        id=experiment_id,
        name=name,
        dataset_id=dataset_id,
        config_yaml=text,
        run_dir=str(folder / RUN_FOLDER),
        status=QUEUED,
        resume=0,
        created_at=now(),
    )


def start_problem(row: dict[str, Any]) -> str | None:
    """Why another experiment cannot start from this one's weights, or None when it can."""
    if row["status"] != SUCCEEDED:
        return f"it is {row['status']}; only a succeeded training can be a starting point"
    if not checkpoint_files(Path(row["run_dir"])):
        return f"its run folder holds no {CHECKPOINT_NAME}"
    return None


def starting_points(registry: Registry) -> list[dict[str, Any]]:
    """The experiments a new one may start from, newest first."""
    rows = [row for row in registry.find(experiments, status=SUCCEEDED) if start_problem(row) is None]
    return sorted(rows, key=lambda row: row["created_at"], reverse=True)


def resolve_start(registry: Registry, given: str) -> str:
    """``experiment:<id>`` -> that experiment's run folder, which training's init_from takes (its first
    fold's checkpoint). Only this server's succeeded experiments: a request never names a server path."""
    allowed = (
        f"allowed is '{START_FROM_PREFIX}<id>' of a succeeded experiment of this server "
        "(GET /v1/experiments lists them), or nothing to start from ImageNet or random weights"
    )
    if not given.startswith(START_FROM_PREFIX):
        raise ConfigError(f"architecture.init_from: {given!r} is not allowed; {allowed}.")
    experiment_id = given.removeprefix(START_FROM_PREFIX).strip()
    row = registry.get(experiments, experiment_id) if experiment_id else None
    if row is None:
        raise ConfigError(f"architecture.init_from: no experiment with id {experiment_id!r}; {allowed}.")
    problem = start_problem(row)
    if problem is not None:
        raise ConfigError(
            f"architecture.init_from: experiment {experiment_id} ({row['name']}) cannot be started from: "
            f"{problem}."
        )
    return str(row["run_dir"])


def started_from(row: dict[str, Any]) -> str | None:
    """The id of the experiment whose weights this one started from: its config's init_from is that
    experiment's run folder, ``<workdir>/experiments/<id>/run``, as ``resolve_start`` wrote it."""
    try:
        config = yaml.safe_load(row["config_yaml"]) or {}
    except yaml.YAMLError:
        return None
    init_from = (config.get("architecture") or {}).get("init_from")
    if not _given(init_from):
        return None
    path = Path(str(init_from))
    if path.name == RUN_FOLDER and path.parent.parent.name == EXPERIMENTS_FOLDER:
        return path.parent.name
    return None


def require_experiment(registry: Registry, experiment_id: str) -> dict[str, Any]:
    row = registry.get(experiments, experiment_id)
    if row is None:
        raise NotFoundError(f"No experiment with id {experiment_id}.")
    return row


def delete_experiment(registry: Registry, experiment_id: str) -> None:
    row = require_experiment(registry, experiment_id)
    if row["status"] not in FINAL_STATES:
        raise ConflictError(f"Experiment {experiment_id} is {row['status']}: cancel it before deleting it.")
    waiting = [
        other["name"]
        for other in registry.find(experiments)
        if other["status"] not in FINAL_STATES and started_from(other) == experiment_id
    ]
    if waiting:
        raise ConflictError(
            f"Experiment {experiment_id} is the starting point of experiments that have not finished "
            f"({', '.join(waiting)}): cancel them, or wait, before deleting it."
        )
    registry.delete(experiments, experiment_id)
    shutil.rmtree(Path(row["run_dir"]).parent, ignore_errors=True)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}  # being replaced right now; the next read sees the new file


def run_metrics(row: dict[str, Any]) -> dict[str, Any]:
    return read_json(Path(row["run_dir"]) / METRICS_NAME)


def fold_dirs(row: dict[str, Any]) -> list[Path]:
    return fold_folders(Path(row["run_dir"]))


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []


def fold_detail(fold_dir: Path) -> dict[str, Any]:
    table = fold_dir / VALIDATION_PREDICTIONS_NAME
    predictions: list[dict[str, Any]] = []
    if table.is_file():
        frame = pd.read_parquet(table)
        frame = frame[[column for column in _PREDICTION_COLUMNS if column in frame]]
        predictions = json.loads(frame.to_json(orient="records"))
    return {
        "fold": fold_dir.name.removeprefix("fold"),
        "metrics": read_json(fold_dir / METRICS_NAME),
        "charts": read_json(fold_dir / CHARTS_NAME),
        "log": read_lines(fold_dir / LOG_NAME)[-_LOG_LINES:],
        "validation_predictions": predictions,
    }


def package_folder(row: dict[str, Any]) -> Path:
    package = Path(row["run_dir"]) / SCORING_PACKAGE_NAME
    if row["status"] != SUCCEEDED or not package.is_dir():
        raise NotFoundError(
            f"Experiment {row['id']} has no scoring package ({row['status']}); it is built when training "
            "succeeds with training.build_scoring_pipelines: true."
        )
    return package


def package_archive(row: dict[str, Any]) -> Path:
    """The scoring package as a zip beside the run, built on first download."""
    package = package_folder(row)
    archive = Path(row["run_dir"]).parent / PACKAGE_ARCHIVE
    if not archive.is_file():
        made = shutil.make_archive(str(archive.with_name(f".{archive.stem}.partial")), "zip", package)
        Path(made).replace(archive)
    return archive


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics side by side, and the config keys whose values differ (paths and names included)."""
    metrics = {row["id"]: _flatten(run_metrics(row)) for row in rows}
    configs = {row["id"]: _flatten(yaml.safe_load(row["config_yaml"])) for row in rows}
    metric_names = sorted({name for values in metrics.values() for name in values})
    keys = sorted({key for values in configs.values() for key in values})
    return {
        "metrics": {name: {i: metrics[i].get(name) for i in metrics} for name in metric_names},
        "config_differences": {
            key: {i: configs[i].get(key) for i in configs}
            for key in keys
            if len({json.dumps(configs[i].get(key), sort_keys=True) for i in configs}) > 1
        },
    }
