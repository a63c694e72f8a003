"""Segmentation networks, their starting weights, and their losses."""

from smokeseg.model.checkpoints import find_checkpoints, init_checkpoint
from smokeseg.model.factory import (
    ARCHITECTURES,
    build_model,
    check_architecture,
    initialize_weights,
    resolve_architecture,
    resolve_backbone,
)
from smokeseg.model.losses import LOSS_PARTS, check_loss_name, create_loss, parse_loss_name
from smokeseg.model.weights import InitReport, load_pretrained_encoder

__all__ = [
    "ARCHITECTURES",
    "LOSS_PARTS",
    "InitReport",
    "build_model",
    "check_architecture",
    "check_loss_name",
    "create_loss",
    "find_checkpoints",
    "init_checkpoint",
    "initialize_weights",
    "load_pretrained_encoder",
    "parse_loss_name",
    "resolve_architecture",
    "resolve_backbone",
]
