"""Build a binary smoke segmentation model from the ``architecture`` config section.

Names follow Hydrogen Torch (case-insensitive, ``Unet++`` and ``DeepLabV3+`` included) and are checked
before training starts, so a typo costs a second, not a data-loading run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from smokeseg.config.schema import ArchitectureConfig
from smokeseg.errors import ConfigError, ModelError
from smokeseg.model.checkpoints import init_checkpoint
from smokeseg.model.weights import (
    BACKBONE_ALIASES,
    canonical_backbone,
    load_matching,
    load_pretrained_encoder,
    read_state_dict,
)

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


def check_architecture(cfg: ArchitectureConfig, *, starting_weights: bool = True) -> None:
    """Fail fast on names, paths and architecture-backbone pairs that would fail only after data loading.

    ``starting_weights=False`` (a resume whose folds all continue from checkpoints) skips the weight
    files: ``initialize_weights`` will not read them.
    """
    try:
        # On the meta device building allocates nothing and takes milliseconds.
        with torch.device("meta"):
            build_model(cfg)
    except ModelError:
        # Some encoders' initialisation reads tensor values, which meta tensors lack: build for real.
        build_model(cfg)
    if not starting_weights:
        return
    if cfg.pretrained and cfg.pretrained_weights is not None and not cfg.pretrained_weights.is_file():
        raise ConfigError(f"architecture.pretrained_weights={cfg.pretrained_weights} is not a file")
    if cfg.init_from is not None:
        init_checkpoint(cfg.init_from)


# The image-level head: max-pooled, so one small plume in a large frame weighs as it does in a crop.
CLASSIFICATION_HEAD = {"classes": 1, "pooling": "max", "dropout": 0.2}


def build_model(cfg: ArchitectureConfig) -> nn.Module:
    """The bare network: one output channel of raw logits, randomly initialised; with
    ``classification_head`` it returns ``(mask logits, image logits)`` (see ``split_outputs``)."""
    architecture = resolve_architecture(cfg.architecture)
    backbone = resolve_backbone(cfg.backbone)
    head = CLASSIFICATION_HEAD if cfg.classification_head else None
    try:
        # None always: smp would download on construction, which must not happen offline (see weights.py).
        return architecture(encoder_name=backbone, encoder_weights=None, classes=1, aux_params=head)
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        raise ModelError(
            f"architecture {cfg.architecture!r} cannot be built with backbone {cfg.backbone!r}: {error}. "
            "Choose another backbone or architecture"
        ) from error


def split_outputs(
    output: torch.Tensor | tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mask logits Nx1xHxW, image logits Nx1 or None) of a network's output, with or without the head."""
    if isinstance(output, tuple | list):
        return output[0], output[1]
    return output, None


def initialize_weights(model: nn.Module, cfg: ArchitectureConfig) -> str:
    """Give a freshly built network its starting weights, by the one policy; return where they came from.

    The policy: ``init_from`` (``checkpoints.init_checkpoint`` picks the file) loads every tensor that
    fits; the pretrained encoder goes underneath unless ``init_from`` fills the whole encoder, so such a
    run does not need the network. A resumed fold takes its state from its last checkpoint instead, so
    training calls this only for a fold that starts fresh.
    """
    init_path = init_checkpoint(cfg.init_from) if cfg.init_from is not None else None
    init_state = read_model_state(init_path) if init_path is not None else {}
    sources = []
    if cfg.pretrained and not (init_state and _fills_encoder(model, init_state)):
        sources.append(f"pretrained encoder: {load_pretrained_encoder(model, cfg)}")
    if init_path is not None:
        report = load_matching(model, init_state)
        if not report.loaded:
            raise ModelError(
                f"no tensor of {init_path} fits this model ({report}); is init_from a checkpoint of "
                "another architecture or backbone?"
            )
        sources.append(f"init_from {init_path}: {report}")
    return "; ".join(sources) or "random (architecture.pretrained is false)"


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
