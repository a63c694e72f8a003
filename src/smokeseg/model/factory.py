"""Build a binary smoke segmentation model from the ``architecture`` config section.

Names follow Hydrogen Torch (case-insensitive, ``Unet++`` and ``DeepLabV3+`` included) and are checked
before training starts, so a typo costs a second, not a data-loading run.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from smokeseg.config.schema import ArchitectureConfig
from smokeseg.errors import ConfigError, ModelError
from smokeseg.model.weights import (
    BACKBONE_ALIASES,
    InitReport,
    canonical_backbone,
    load_matching,
    load_pretrained_encoder,
    read_state_dict,
)

logger = logging.getLogger("smokeseg")

# smp class -> the further names Hydrogen Torch configs use for it.
_ARCHITECTURE_ALIASES: dict[str, tuple[str, ...]] = {
    "Unet": (),
    "UnetPlusPlus": ("Unet++",),
    "FPN": (),
    "DeepLabV3": (),
    "DeepLabV3Plus": ("DeepLabV3+",),
    "Linknet": (),
    "MAnet": (),
    "PSPNet": (),
    "PAN": (),
    "UPerNet": (),
    "Segformer": (),
}

# Config name -> smp class; classes an older smp lacks are left out rather than failing at import.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    name: getattr(smp, class_name)
    for class_name, aliases in _ARCHITECTURE_ALIASES.items()
    if hasattr(smp, class_name)
    for name in (class_name, *aliases)
}

_CHECKPOINT_PATTERNS = ("*.ckpt", "checkpoint.pt")
# Lightning saves the LightningModule's state; its segmentation network is the attribute ``model``.
_LIGHTNING_PREFIX = "model."


def unknown_name_error(
    key: str, value: str, known: Iterable[str], *, listing: str | None = None
) -> ConfigError:
    """A ConfigError naming the bad value, the closest known names, and the known names (or ``listing``)."""
    known = list(known)
    by_lower = {name.lower(): name for name in known}
    closest = [by_lower[name] for name in difflib.get_close_matches(value.lower(), by_lower, n=3, cutoff=0.6)]
    message = f"{key}={value!r} is unknown."
    if closest:
        message += f" Did you mean {' or '.join(repr(name) for name in closest)}?"
    return ConfigError(f"{message} Known: {listing or ', '.join(known)}")


def resolve_architecture(name: str) -> type[nn.Module]:
    """The smp class for a Hydrogen Torch architecture name, case-insensitive."""
    by_lower = {key.lower(): cls for key, cls in ARCHITECTURES.items()}
    try:
        return by_lower[name.strip().lower()]
    except KeyError:
        raise unknown_name_error("architecture.architecture", name, ARCHITECTURES) from None


def resolve_backbone(name: str) -> str:
    """The smp encoder name for a backbone: an smp encoder, an alias, or ``tu-<timm model>``."""
    backbone = canonical_backbone(name)
    if backbone in smp.encoders.encoders or (backbone.startswith("tu-") and _is_timm_model(backbone[3:])):
        return backbone
    known = [*smp.encoders.encoders, *BACKBONE_ALIASES, *(f"tu-{model}" for model in timm.list_models())]
    raise unknown_name_error(
        "architecture.backbone",
        name,
        known,
        listing="the keys of segmentation_models_pytorch.encoders.encoders, or tu-<name> for a name in "
        "timm.list_models()",
    )


def _is_timm_model(name: str) -> bool:
    """timm.is_model ignores a ``.tag`` suffix; a tag must name one of the model's pretrained weights."""
    base, _, tag = name.partition(".")
    return timm.is_model(base) and (not tag or name in timm.list_pretrained(f"{base}.*"))


def check_architecture(cfg: ArchitectureConfig) -> None:
    """Fail fast on names, paths and architecture-backbone pairs that would fail only after data loading."""
    try:
        # On the meta device building allocates nothing and takes milliseconds.
        with torch.device("meta"):
            build_model(cfg)
    except ModelError:
        # Some encoders' initialisation reads tensor values, which meta tensors lack: build for real.
        build_model(cfg)
    if cfg.pretrained and cfg.pretrained_weights is not None and not cfg.pretrained_weights.is_file():
        raise ConfigError(f"architecture.pretrained_weights={cfg.pretrained_weights} is not a file")
    if cfg.init_from is not None:
        find_checkpoint(cfg.init_from)


def build_model(cfg: ArchitectureConfig) -> nn.Module:
    """The bare network: one output channel of raw logits, randomly initialised."""
    architecture = resolve_architecture(cfg.architecture)
    backbone = resolve_backbone(cfg.backbone)
    try:
        # None always: smp would download on construction, which must not happen offline (see weights.py).
        return architecture(encoder_name=backbone, encoder_weights=None, classes=1)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ModelError(
            f"architecture {cfg.architecture!r} cannot be built with backbone {cfg.backbone!r}: {error}. "
            "Choose another backbone or architecture"
        ) from error


def create_model(cfg: ArchitectureConfig, *, load_pretrained: bool = True) -> nn.Module:
    """Build the network and fill in its weights: pretrained encoder, then ``init_from`` on top.

    ``load_pretrained=False`` skips the encoder weights, for a model whose weights a checkpoint replaces
    anyway (inference, export). When ``init_from`` fills the whole encoder, the pretrained encoder is
    skipped too, so such a run does not need the network.
    """
    model = build_model(cfg)
    init_path = find_checkpoint(cfg.init_from) if cfg.init_from is not None else None
    init_state = read_model_state(init_path) if init_path is not None else {}
    if cfg.pretrained and load_pretrained:
        if init_state and _fills_encoder(model, init_state):
            logger.info("Encoder weights: from init_from %s", init_path)
        else:
            logger.info("Encoder weights: %s", load_pretrained_encoder(model, cfg))
    if init_path is not None:
        _report_init(init_path, load_matching(model, init_state))
    return model


def init_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Load the tensors of a checkpoint (file or experiment folder) that fit ``model``; report the rest."""
    checkpoint = find_checkpoint(path)
    report = load_matching(model, read_model_state(checkpoint))
    _report_init(checkpoint, report)
    return report


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file itself, or the one in an experiment folder (fold 0's where folds are saved apart)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ConfigError(
            f"architecture.init_from={path} does not exist: train that experiment first, "
            "or point it at a checkpoint file or an experiment folder"
        )
    found = sorted(file for pattern in _CHECKPOINT_PATTERNS for file in path.rglob(pattern))
    if not found:
        raise ConfigError(
            f"architecture.init_from={path} holds no {' or '.join(_CHECKPOINT_PATTERNS)}; "
            "point it at a checkpoint file"
        )
    fold0 = [
        file for file in found if any(re.fullmatch(r"fold_?0", part) for part in file.relative_to(path).parts)
    ]
    return (fold0 or found)[0]


def read_model_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's network tensors, without the Lightning module's ``model.`` prefix."""
    state = read_state_dict(path)
    if any(name.startswith(_LIGHTNING_PREFIX) for name in state):
        state = {
            name[len(_LIGHTNING_PREFIX) :]: tensor
            for name, tensor in state.items()
            if name.startswith(_LIGHTNING_PREFIX)
        }
    return state


def _fills_encoder(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(
        name in state and state[name].shape == tensor.shape
        for name, tensor in model.state_dict().items()
        if name.startswith("encoder.")
    )


def _report_init(path: Path, report: InitReport) -> None:
    """Log what init_from left out; a checkpoint that fits nothing is a mistake, not a warning."""
    if not report.loaded:
        raise ModelError(
            f"no tensor of {path} fits this model ({report}); is init_from a checkpoint of "
            "another architecture or backbone?"
        )
    level = logging.WARNING if report.skipped_missing or report.skipped_shape else logging.INFO
    logger.log(level, "init_from %s: %s", path, report)
