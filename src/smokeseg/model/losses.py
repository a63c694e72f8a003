"""Binary segmentation losses by Hydrogen Torch name.

A name is one registered part or several concatenated (``BCEDice`` = BCE + Dice), each part weighted by
``training.<part>_weight``. Every loss takes raw logits and float targets in [0, 1], both Bx1xHxW; soft
targets (mixup) are fine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from segmentation_models_pytorch.losses import BINARY_MODE, DiceLoss, FocalLoss, LovaszLoss
from torch import nn

from smokeseg.config.schema import TrainingConfig
from smokeseg.errors import ConfigError
from smokeseg.model.factory import unknown_name_error

_DICE_EPSILON = 1e-7  # smp's DiceLoss eps


class ImageDiceLoss(nn.Module):
    """1 - soft Dice of each image that holds smoke, averaged over those images. Batch Dice pools every
    pixel of the batch, so a plume of a hundred pixels next to one of ten thousand barely counts; here
    each plume's image counts the same. Images without smoke are left to the other parts (BCE), as smp's
    Dice leaves a batch without smoke."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probabilities, targets = logits.sigmoid().flatten(1), targets.flatten(1)
        holds_smoke = targets.sum(1) > 0
        if not holds_smoke.any():
            return (logits * 0).sum()  # zero, and still part of the graph
        intersection = (probabilities * targets).sum(1)
        cardinality = (probabilities + targets).sum(1).clamp_min(_DICE_EPSILON)
        return (1 - 2 * intersection / cardinality)[holds_smoke].mean()


def _dice(cfg: TrainingConfig) -> nn.Module:
    return ImageDiceLoss() if cfg.dice_per_image else DiceLoss(BINARY_MODE, from_logits=True)


# Each part built from the training config. No part name starts another's, so a name splits into parts
# in exactly one way.
LOSS_PARTS: dict[str, Callable[[TrainingConfig], nn.Module]] = {
    "BCE": lambda cfg: nn.BCEWithLogitsLoss(),
    "Dice": _dice,
    "Focal": lambda cfg: FocalLoss(BINARY_MODE),
    "Lovasz": lambda cfg: LovaszLoss(BINARY_MODE, from_logits=True),
}


class WeightedSumLoss(nn.Module):
    """The weighted sum of loss parts; :meth:`components` gives each part alone, for logging."""

    def __init__(self, parts: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.weights = weights
        self.parts = nn.ModuleDict(parts)

    def components(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        # float32 even under autocast: Dice's sums over a batch of pixels overflow float16.
        logits, targets = logits.float(), targets.float()
        return {name: part(logits, targets) for name, part in self.parts.items()}

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        components = self.components(logits, targets)
        return torch.stack([self.weights[name] * value for name, value in components.items()]).sum()


def parse_loss_name(name: str) -> list[str]:
    """Split a loss name into registered parts, case-insensitively: ``"bcedice"`` -> ``["BCE", "Dice"]``."""
    by_lower = {part.lower(): part for part in LOSS_PARTS}
    rest, parts = name.strip().lower(), []
    while rest:
        part = next((part for lower, part in by_lower.items() if rest.startswith(lower)), None)
        if part is None or part in parts:
            raise unknown_name_error(
                "training.loss_function",
                name,
                _example_names(),
                listing=f"{', '.join(LOSS_PARTS)}, or several of them concatenated such as BCEDice",
            )
        parts.append(part)
        rest = rest[len(part) :]
    if not parts:
        raise ConfigError(
            f"training.loss_function is empty; use one of {', '.join(LOSS_PARTS)} or e.g. BCEDice"
        )
    return parts


def check_loss_name(name: str) -> None:
    """Fail before training on a loss name :func:`create_loss` would reject."""
    parse_loss_name(name)


def create_loss(cfg: TrainingConfig) -> WeightedSumLoss:
    """The loss named by ``cfg.loss_function``; parts weighted 0 are left out, not computed."""
    parts = parse_loss_name(cfg.loss_function)
    weights = {part: float(getattr(cfg, f"{part.lower()}_weight")) for part in parts}
    if not any(weights.values()):
        keys = ", ".join(f"training.{part.lower()}_weight" for part in parts)
        raise ConfigError(f"every part of loss {cfg.loss_function!r} has weight 0; set one of {keys} above 0")
    weights = {part: weight for part, weight in weights.items() if weight}
    return WeightedSumLoss({part: LOSS_PARTS[part](cfg) for part in weights}, weights)


def _example_names() -> list[str]:
    """Every combination of parts in registry order (BCE, Dice, BCEDice, ...), for suggestions."""
    return [
        "".join(combination)
        for size in range(1, len(LOSS_PARTS) + 1)
        for combination in itertools.combinations(LOSS_PARTS, size)
    ]
