"""Model runtimes behind one interface, and the registry ``Predictor.from_path`` loads a model path with.

A runtime is a torch module or an exported package's ONNX graph: the Predictor calls ``model(batch) ->
logits``. A package's graph returns probabilities (its folds already averaged), so the ONNX runtime
hands back their logits, and the Predictor's sigmoid, test-time augmentation and resizing stay the one
scoring path for both. This module imports nothing of scoring, so everything that scores may import it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from smokeseg.config.load import load_config, scoring_values, with_scoring_overrides
from smokeseg.config.schema import ExperimentConfig
from smokeseg.errors import ModelError, SmokesegError
from smokeseg.layout import CONFIG_NAME, PACKAGE_MODEL_NAME, THRESHOLD_NAME
from smokeseg.model.checkpoints import (
    MODEL_PATH_HELP,
    checkpoint_files,
    find_checkpoints,
    is_package,
    no_model_error,
)
from smokeseg.model.factory import build_model

# Probabilities are clipped this far from 0 and 1 before the logit: sigmoid(logit(p)) gives p back
# to well within the 1e-3 the export is held to.
_PROBABILITY_EPSILON = 1e-7
logger = logging.getLogger(__name__)


class Runtime(Protocol):
    """What the Predictor runs: logits for a preprocessed Bx3xHxW batch. A torch module is one."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> Runtime: ...

    def eval(self) -> Runtime: ...


@dataclass(frozen=True)
class LoadedModel:
    """The runtimes of a model path (one per fold) and the config they score with."""

    runtimes: list[Runtime]
    config: ExperimentConfig


class OnnxRuntimeModel:
    """An exported package's ``model.onnx`` on onnxruntime, called like a torch module."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        try:
            self.session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        except Exception as error:
            raise ModelError(
                f"{model_path} could not be loaded by onnxruntime ({error}); export it again with "
                "`smokeseg export MODEL --package DIR`."
            ) from None
        self.input_name = self.session.get_inputs()[0].name

    def to(self, device: torch.device) -> OnnxRuntimeModel:
        return self  # onnxruntime runs on the CPU here; the Predictor moves results back to the CPU anyway

    def eval(self) -> OnnxRuntimeModel:
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        probabilities = self.session.run(None, {self.input_name: batch.cpu().numpy()})[0]
        return torch.logit(torch.from_numpy(probabilities), eps=_PROBABILITY_EPSILON).to(batch.device)


def load_package(path: Path) -> LoadedModel:
    """The graph and the effective config of a package written by ``smokeseg export --package``."""
    return LoadedModel([OnnxRuntimeModel(path / PACKAGE_MODEL_NAME)], load_config(path / CONFIG_NAME))


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ExperimentConfig]:
    """Rebuild the model from a smokeseg checkpoint alone: no training data, no pretrained download."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # torch's own message suggests weights_only=False, which would run code from a file of unknown origin.
        raise ModelError(
            f"{path} is not a checkpoint: PyTorch cannot read it (another kind of file, or a damaged one). "
            f"{MODEL_PATH_HELP}"
        ) from None
    try:
        config = ExperimentConfig.model_validate(checkpoint["hyper_parameters"]["config"])
        state = checkpoint["state_dict"]
    except (KeyError, TypeError, ValueError):
        raise ModelError(
            f"{path} is a PyTorch file but not a smokeseg checkpoint (it holds no smokeseg config and "
            f"state_dict). {MODEL_PATH_HELP} Weights from elsewhere can start a run through "
            "architecture.init_from or architecture.pretrained_weights."
        ) from None
    model = build_model(config.architecture)
    model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    return model.eval(), config


def load_checkpoints(path: Path) -> LoadedModel:
    """Every fold of a checkpoint path, at the operating point `smokeseg tune-threshold` stored beside it."""
    checkpoints = find_checkpoints(path)
    loaded = [load_checkpoint(checkpoint) for checkpoint in checkpoints]
    records = {
        checkpoint.parent / CONFIG_NAME: fold_config
        for checkpoint, (_, fold_config) in zip(checkpoints, loaded, strict=True)
    }
    if path.is_dir():  # an experiment folder records the run's config above its folds' too
        records.setdefault(path / CONFIG_NAME, loaded[0][1])
    for record, stored_config in records.items():
        _warn_on_edited_scoring(stored_config, record)
    config = with_stored_operating_point(loaded[0][1], checkpoints[0].parent)
    return LoadedModel([model for model, _ in loaded], config)


def _warn_on_edited_scoring(config: ExperimentConfig, record: Path) -> None:
    """A fold's config.yaml records its training; the checkpoint's config is what scores. Someone who edits
    the record's scoring keys to try them would see nothing change, so say where they go instead."""
    if not record.is_file():
        return
    try:
        written = load_config(record)
    except SmokesegError as error:  # a damaged record does not stop scoring: the checkpoint holds the config
        logger.warning("%s The model scores with its checkpoint's config, not with this file.", error)
        return
    scoring, recorded = scoring_values(config), scoring_values(written)
    edited = [key for key, value in scoring.items() if recorded[key] != value]
    if edited:
        logger.warning(
            "%s: %s differ from the checkpoint's config, which is what the model scores with: the file "
            "records the training. Give them as --set KEY=VALUE (smokeseg predict, evaluate, "
            "tune-threshold), or as Predictor.from_path(..., scoring_overrides=[...]).",
            record,
            ", ".join(edited),
        )


def with_stored_operating_point(config: ExperimentConfig, folder: Path) -> ExperimentConfig:
    """``config`` at the operating point stored in ``folder/threshold.json``, if there is one: the scoring
    keys the threshold was tuned with (``tune-threshold --set``), then the threshold itself."""
    path = folder / THRESHOLD_NAME
    if not path.is_file():
        return config
    stored = _read_operating_point(path)
    config = with_scoring_overrides(config, stored.get("scoring_overrides", []), str(path))
    threshold = stored["probability_threshold"]
    prediction = config.prediction.model_copy(update={"probability_threshold": threshold})
    return config.model_copy(update={"prediction": prediction})


def stored_threshold(folder: Path) -> float | None:
    """The threshold ``smokeseg tune-threshold`` stored in ``folder``, None when it stored none."""
    path = folder / THRESHOLD_NAME
    return _read_operating_point(path)["probability_threshold"] if path.is_file() else None


def _read_operating_point(path: Path) -> dict[str, Any]:
    retune = f"Run `smokeseg tune-threshold` again, or delete {path} to score with the model's own config."
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        value = float(stored["probability_threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        stored, value = {}, math.nan
    if not 0 <= value <= 1:
        raise ModelError(f"{path} does not hold a probability_threshold between 0 and 1. {retune}")
    overrides = stored.get("scoring_overrides", [])
    if not (isinstance(overrides, list) and all(isinstance(item, str) for item in overrides)):
        raise ModelError(f"{path}: scoring_overrides must be a list of section.key=value strings. {retune}")
    return {**stored, "probability_threshold": value}


@dataclass(frozen=True)
class RuntimeLoader:
    """Recognises one kind of model path and loads it."""

    matches: Callable[[Path], bool]
    load: Callable[[Path], LoadedModel]


# Tried in order by ``load_model``: a package folder first, since it also holds a config but no checkpoint.
RUNTIME_LOADERS: dict[str, RuntimeLoader] = {
    "onnx_package": RuntimeLoader(is_package, load_package),
    "pytorch_checkpoints": RuntimeLoader(lambda path: bool(checkpoint_files(path)), load_checkpoints),
}


def load_model(path: str | Path, scoring_overrides: Sequence[str] = ()) -> LoadedModel:
    """The runtimes and config of any model path, by the first loader in ``RUNTIME_LOADERS`` that takes it;
    ``scoring_overrides`` (``section.key=value``, scoring keys only) change how it scores this time."""
    path = Path(path)
    for loader in RUNTIME_LOADERS.values():
        if loader.matches(path):
            loaded = loader.load(path)
            config = with_scoring_overrides(loaded.config, scoring_overrides, "--set")
            return LoadedModel(loaded.runtimes, config)
    raise no_model_error(path)
