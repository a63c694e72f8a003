"""Model runtimes behind one interface: a torch module, or an exported ONNX package's graph.

The Predictor calls ``model(batch) -> logits``; an exported package's graph returns probabilities
(its folds already averaged), so the ONNX runtime hands back their logits, and the Predictor's
sigmoid, test-time augmentation and resizing stay the one scoring path for both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from smokeseg.config.load import load_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.errors import ModelError
from smokeseg.layout import CONFIG_NAME, PACKAGE_MODEL_NAME

# Probabilities are clipped this far from 0 and 1 before the logit: sigmoid(logit(p)) gives p back
# to well within the 1e-3 the export is held to.
_PROBABILITY_EPSILON = 1e-7


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / PACKAGE_MODEL_NAME).is_file() and (path / CONFIG_NAME).is_file()


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


def load_package(path: Path) -> tuple[OnnxRuntimeModel, ExperimentConfig]:
    """The graph and the effective config of a package written by ``smokeseg export --package``."""
    return OnnxRuntimeModel(path / PACKAGE_MODEL_NAME), load_config(path / CONFIG_NAME)
