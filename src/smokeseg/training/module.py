"""The LightningModule: one training step, one validation step, the optimiser and its schedule.

Everything else (devices, precision, checkpoints, logging, progress) belongs to the Lightning Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from smokeseg import __version__
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.augment import mix_batch
from smokeseg.errors import ConfigError
from smokeseg.inference.predictor import combine_context
from smokeseg.metrics import OverlapScores
from smokeseg.model.factory import build_model, split_outputs
from smokeseg.model.losses import create_loss
from smokeseg.model.precision import mixed_precision_dtype

VALIDATION_LOSSES_KEY = "validation_losses"
# Batch entries that are image tensors (N, C, H, W): training crops, validation frames, context views.
_IMAGE_KEYS = ("image", "context")
# Combined probabilities become logits again for the loss; this keeps 0 and 1 finite.
_LOGIT_EPS = 1e-6

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "AdamW": torch.optim.AdamW,
    "Adam": torch.optim.Adam,
    "SGD": partial(torch.optim.SGD, momentum=0.9, nesterov=True),
    "RMSprop": torch.optim.RMSprop,
}


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES: dict[str, Callable[[float], float]] = {
    "Cosine": _cosine,
    "Linear": lambda progress: 1.0 - progress,
    "Constant": lambda progress: 1.0,
}


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Hydrogen Torch's per-batch schedule: linear warmup, then a decay that reaches 0 after the last step."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return SCHEDULES[schedule](progress)


class SmokeSegmentationModule(L.LightningModule):
    """Binary smoke segmentation with an smp model, trained on logits against 0/1 masks."""

    weights_source: str  # where a fresh run's starting weights came from, set by run.py for its log

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "smokeseg_version": __version__})
        self.config = ExperimentConfig.model_validate(config)
        # Bare: a fresh run's starting weights come from run.py (initialize_weights), a resumed one's from
        # its checkpoint, so building the module never reads init_from or downloads weights.
        self.model = build_model(self.config.architecture)
        self._check_differential_layers()
        self.loss = create_loss(self.config.training)
        threshold = self.config.prediction.probability_threshold
        self.validation_scores = OverlapScores(threshold)
        self.train_scores = OverlapScores(threshold)
        self.validation_losses: dict[int, float] = {}
        self.validation_losses_step: int | None = None
        self.samples_seen = 0
        self.mix_generator = torch.Generator().manual_seed(max(self.config.environment.seed, 0))

    def setup(self, stage: str) -> None:
        """Channels-last weights where CPU training runs that layout (``_channels_last``): oneDNN's
        convolutions run faster on that layout (see ``on_after_batch_transfer``). Before the optimiser
        exists, which then holds the same parameters."""
        if self._channels_last():
            self.model.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Images in the channels-last layout the weights have, when they have it (``setup``)."""
        if not self._channels_last():
            return batch
        return {
            key: value.contiguous(memory_format=torch.channels_last) if key in _IMAGE_KEYS else value
            for key, value in batch.items()
        }

    def _channels_last(self) -> bool:
        if self.trainer.strategy.root_device.type != "cpu":
            return False
        asked = self.config.environment.channels_last_training
        if asked is not None:
            return asked
        # Unset: channels-last where the CPU trains in float32, where it keeps the numbers (bfloat16's
        # rounding differs by layout, and that cost grouped validation accuracy).
        return mixed_precision_dtype(self.config.environment.mixed_precision_training, "cpu") is None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask logits, image logits or None without a classification head), in float32 under any
        autocast precision, so losses and metrics are computed exactly."""
        masks, labels = split_outputs(self.model(images))
        return masks.float(), None if labels is None else labels.float()

    def _loss(
        self, logits: torch.Tensor, label_logits: torch.Tensor | None, masks: torch.Tensor
    ) -> torch.Tensor:
        """The mask loss, plus the head's BCE against "this image holds smoke" when there is a head."""
        loss = self.loss(logits, masks)
        if label_logits is None:
            return loss
        holds_smoke = (masks.flatten(1).amax(1, keepdim=True) > 0.5).float()
        classification = F.binary_cross_entropy_with_logits(label_logits, holds_smoke)
        return loss + self.config.training.classification_weight * classification

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        images, masks = mix_batch(batch["image"], batch["mask"], self.config.augmentation, self.mix_generator)
        logits, label_logits = self(images)
        loss = self._loss(logits, label_logits, masks)
        self.samples_seen += len(images)
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(images))
        if self.config.training.calculate_train_metric:
            self.train_scores.update(torch.sigmoid(logits.detach()), masks)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.config.training.calculate_train_metric:
            metric = self.config.prediction.metric
            self.log(f"train_{metric}", self.train_scores.compute()[metric])
            self.train_scores.reset()

    def on_validation_epoch_start(self) -> None:
        self.validation_scores.reset()
        self.validation_losses.clear()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> None:
        images, masks = batch["image"], batch["mask"]
        logits, label_logits = self(images)
        if "context" in batch:
            logits = self._with_context_pass(logits, batch["context"], batch["size"])
        labels = [None] * len(images) if label_logits is None else label_logits.split(1)
        per_image_loss = torch.stack(
            [
                self._loss(logit, label, mask)
                for logit, label, mask in zip(logits.split(1), labels, masks.split(1), strict=True)
            ]
        )
        self.validation_scores.update(torch.sigmoid(logits), masks)
        for index, loss in zip(batch["index"].tolist(), per_image_loss.tolist(), strict=True):
            self.validation_losses[index] = loss

    def _with_context_pass(
        self, logits: torch.Tensor, context_images: torch.Tensor, sizes: torch.Tensor
    ) -> torch.Tensor:
        """``image.context_pass`` as the Predictor scores it (without its test-time augmentations), so
        the per-epoch metric and loss judge the combined scores: each frame's own pixels combine the
        native and the context pass; the stride padding beyond them keeps the native pass's."""
        probabilities = torch.sigmoid(logits)
        context = torch.sigmoid(self(context_images)[0])
        for index, (height, width) in enumerate(sizes.tolist()):
            frame = probabilities[index : index + 1, :, :height, :width]
            probabilities[index : index + 1, :, :height, :width] = combine_context(
                frame, context[index : index + 1], self.config.image.context_pass
            )
        return torch.logit(probabilities, eps=_LOGIT_EPS)

    def on_validation_epoch_end(self) -> None:
        if not self.validation_losses:
            return
        self.validation_losses_step = self.global_step
        scores = self.validation_scores.compute()
        self.log("validation_loss", float(np.mean(list(self.validation_losses.values()))))
        for name, value in scores.items():
            self.log(f"validation_{name}", value, prog_bar=name == self.config.prediction.metric)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        training = self.config.training
        optimizer = OPTIMIZERS[training.optimizer](
            self._parameter_groups(), lr=training.learning_rate, weight_decay=training.weight_decay
        )
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup_steps = round(training.warmup_epochs * total_steps / training.epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            partial(
                learning_rate_factor,
                total_steps=total_steps,
                warmup_steps=warmup_steps,
                schedule=training.schedule,
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _check_differential_layers(self) -> None:
        """A name in ``differential_learning_rate_layers`` that starts no parameter's name would leave every
        layer at the main rate without a word; stop before training instead."""
        names = [name for name, _ in self.model.named_parameters()]
        unmatched = [
            prefix
            for prefix in self.config.training.differential_learning_rate_layers
            if not any(name.startswith(prefix) for name in names)
        ]
        if unmatched:
            layers = ", ".join(dict.fromkeys(name.split(".")[0] for name in names))
            raise ConfigError(
                f"training.differential_learning_rate_layers: {unmatched} names no layer of this "
                f"{self.config.architecture.architecture}; its parameters' names start with {layers} "
                "(e.g. [encoder] trains the encoder at training.differential_learning_rate)."
            )

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """Layers named in ``differential_learning_rate_layers`` train at their own learning rate."""
        training = self.config.training
        prefixes = tuple(training.differential_learning_rate_layers)
        named = list(self.model.named_parameters())
        differential = [p for name, p in named if prefixes and name.startswith(prefixes)]
        regular = [p for name, p in named if not (prefixes and name.startswith(prefixes))]
        groups: list[dict[str, Any]] = [{"params": regular}]
        if differential:
            groups.append({"params": differential, "lr": training.differential_learning_rate})
        return groups

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint saved right after a validation keeps its per-image losses, so the fold's end need
        not validate the kept checkpoint again."""
        checkpoint["samples_seen"] = self.samples_seen
        if self.validation_losses_step == checkpoint["global_step"]:
            checkpoint[VALIDATION_LOSSES_KEY] = dict(self.validation_losses)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.samples_seen = checkpoint.get("samples_seen", 0)
