"""What a training run leaves on disk: checkpoints, charts.json, the experiment log, metric files.

Every file except the streaming log is written to a temporary name and renamed, so an interrupted
run never leaves a file that looks complete but is not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from smokeseg.layout import LOG_NAME
from smokeseg.storage import atomic_path, write_text_atomic

logger = logging.getLogger("smokeseg")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but through a temporary file and a rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


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
    with atomic_path(path) as tmp:
        torch.save({key: checkpoint[key] for key in _KEPT_CHECKPOINT_KEYS if key in checkpoint}, tmp)


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
        seen = getattr(pl_module, "samples_seen", 0)
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
        step = pl_module.samples_seen
        self._add("train_loss", step, loss.item())
        self._add("learning_rate", step, trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        step = pl_module.samples_seen
        for name in ("validation_loss", f"validation_{self.metric}", "validation_Dice"):
            if name in trainer.callback_metrics:
                self._add(name, step, trainer.callback_metrics[name].item())
        write_json(self.target, self.charts)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_json(self.target, self.charts)


class ExperimentLog(L.Callback):
    """The log lines a Hydrogen Torch user knows: epochs, mean validation loss, metric, checkpoints."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.last_saved_epoch = -1

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger.info("Training Epoch: %d / %d", trainer.current_epoch + 1, trainer.max_epochs)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "validation_loss" not in trainer.callback_metrics:
            return
        metrics = trainer.callback_metrics
        logger.info("Mean validation loss: %.5f", metrics["validation_loss"].item())
        logger.info("Validation %s: %.5f", self.metric, metrics[f"validation_{self.metric}"].item())

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        if trainer.current_epoch != self.last_saved_epoch:  # the kept and the last checkpoint: one line
            self.last_saved_epoch = trainer.current_epoch
            logger.info("Checkpoint saved after epoch %d", trainer.current_epoch + 1)
