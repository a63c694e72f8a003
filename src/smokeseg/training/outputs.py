"""What a training run leaves on disk: checkpoints, charts.json, the experiment log, metric files.

Every file except the streaming log is written to a temporary name and renamed, so an interrupted
run never leaves a file that looks complete but is not.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from smokeseg.errors import OutputError, TrainingInterrupted
from smokeseg.layout import CONFIG_NAME, LOCK_NAME, LOG_NAME, METRICS_NAME
from smokeseg.storage import atomic_path, ensure_writable_folder, reporting_write_errors, write_text_atomic

logger = logging.getLogger("smokeseg")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename; it logs the save once
    the file is under its real name, so the log never claims a checkpoint that is not on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.logged_epoch: int | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_torch(checkpoint, path)
        epoch = checkpoint.get("epoch")
        if epoch is not None and epoch != self.logged_epoch:  # the kept and the last checkpoint: one line
            self.logged_epoch = epoch
            logger.info("Checkpoint saved after epoch %d", epoch + 1)


def save_torch(data: dict[str, Any], path: Path) -> None:
    """``torch.save`` through a temporary file; through a Python file object, so a full disk raises
    ``OSError`` (ENOSPC) rather than torch's opaque RuntimeError."""
    with atomic_path(path) as tmp, tmp.open("wb") as file:
        torch.save(data, file)


@contextmanager
def experiment_folder(folder: Path, *, resume: bool) -> Iterator[None]:
    """Hold ``folder`` for one run: refuse a folder another run holds, or (unless resuming) an earlier
    run's; fail early on a read-only or full disk; on a failure before the first checkpoint, take back
    the folder a fresh run created.

    The hold is an ``flock`` on ``.lock``: the system releases it when the process ends however it
    ends, so a crashed run never leaves the folder locked.
    """
    created = _first_missing(folder)  # what the run creates, up to the first folder that exists
    fresh = created is not None or not any(folder.iterdir())
    ensure_writable_folder(folder)
    with (folder / LOCK_NAME).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"{folder} is in use by another `smokeseg train` run. Wait for it to finish, or give "
                "another --output-dir."
            ) from None
        if not resume and (folder / CONFIG_NAME).is_file():
            earlier = (
                f"a finished run ({METRICS_NAME})"
                if (folder / METRICS_NAME).is_file()
                else f"an unfinished run (continue it with `smokeseg train --resume {folder}`)"
            )
            raise OutputError(
                f"{folder} holds {earlier}. Give another --output-dir, or delete the folder first."
            )
        try:
            with reporting_write_errors(folder):
                yield
        except TrainingInterrupted:
            raise
        except Exception:
            if fresh and not resume and not any(folder.rglob("*.ckpt")):
                _take_back(folder, created)
            raise


def _first_missing(folder: Path) -> Path | None:
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            return missing
        missing = path
    return missing


def _take_back(folder: Path, created: Path | None) -> None:
    """Remove what a failed run wrote, so no stub looks like an experiment; an empty folder the user
    gave stays."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# What a finished model needs: weights, the config that builds them, and provenance; not optimiser state.
_KEPT_CHECKPOINT_KEYS = (
    "state_dict",
    "hyper_parameters",
    "epoch",
    "global_step",
    "pytorch-lightning_version",
)


def slim_checkpoint(path: Path) -> None:
    """Drop optimiser and loop state from a finished fold's checkpoint (a third of the size for Adam)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    save_torch({key: checkpoint[key] for key in _KEPT_CHECKPOINT_KEYS if key in checkpoint}, path)


def write_json(target: Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(target, json.dumps(data, indent=1, sort_keys=True))


def read_json(source: Path) -> dict[str, Any]:
    return json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}


def open_experiment_log(fold_dir: Path) -> logging.Handler:
    """Send the ``smokeseg`` logger's lines to ``fold_dir/logs.log`` as well; remove it when done."""
    handler = logging.FileHandler(fold_dir / LOG_NAME, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _samples_seen(pl_module: L.LightningModule) -> int:
    """The charts' x axis: the training images SmokeSegmentationModule has counted (0 for another module)."""
    return getattr(pl_module, "samples_seen", 0)


class ChartsRecorder(L.Callback):
    """Collects the four curves Hydrogen Torch charts, keyed by samples seen, into charts.json."""

    def __init__(self, target: Path, metric: str) -> None:
        self.target = target
        self.metric = metric
        self.charts: dict[str, dict[str, list[float]]] = {}

    def _add(self, name: str, step: int, value: float) -> None:
        series = self.charts.setdefault(name, {"step": [], "value": []})
        series["step"].append(step)
        series["value"].append(float(value))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On resume, keep the curves up to the checkpoint and drop what came after it."""
        seen = _samples_seen(pl_module)
        self.charts = {
            name: {
                "step": [s for s in series["step"] if s <= seen],
                "value": [v for s, v in zip(series["step"], series["value"], strict=True) if s <= seen],
            }
            for name, series in read_json(self.target).items()
        }

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = _samples_seen(pl_module)
        self._add("train_loss", step, loss.item())
        self._add("learning_rate", step, trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = _samples_seen(pl_module)
        for name in ("validation_loss", f"validation_{self.metric}", "validation_Dice"):
            if name in trainer.callback_metrics:
                self._add(name, step, trainer.callback_metrics[name].item())
        write_json(self.target, self.charts)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_json(self.target, self.charts)


class ExperimentLog(L.Callback):
    """The log lines a Hydrogen Torch user knows: epochs, mean validation loss, metric (checkpoints:
    ``AtomicCheckpointIO``)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger.info("Training Epoch: %d / %d", trainer.current_epoch + 1, trainer.max_epochs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "validation_loss" not in trainer.callback_metrics:
            return
        metrics = trainer.callback_metrics
        logger.info("Mean validation loss: %.5f", metrics["validation_loss"].item())
        logger.info("Validation %s: %.5f", self.metric, metrics[f"validation_{self.metric}"].item())
