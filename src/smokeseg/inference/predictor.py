"""THE scoring path: load a model or an ensemble, preprocess, test-time augment, score at native size.

Validation inside training, ``predict``, ``evaluate`` and the exported package all produce their
probabilities this way, so one image gets one answer everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample
from smokeseg.data.normalization import normalize
from smokeseg.errors import ModelError
from smokeseg.model.factory import create_model

CHECKPOINT_NAME = "checkpoint.ckpt"

TensorMap = Callable[[torch.Tensor], torch.Tensor]

# name -> (transform the input, map the output back); each pair is exact, so averaging is sound.
TEST_TIME_AUGMENTATIONS: dict[str, tuple[TensorMap, TensorMap]] = {
    "horizontal_flip": (lambda x: x.flip(-1), lambda y: y.flip(-1)),
    "vertical_flip": (lambda x: x.flip(-2), lambda y: y.flip(-2)),
    "transpose": (lambda x: x.transpose(-1, -2), lambda y: y.transpose(-1, -2)),
    "rotate90": (lambda x: x.rot90(1, (-2, -1)), lambda y: y.rot90(-1, (-2, -1))),
    "rotate180": (lambda x: x.rot90(2, (-2, -1)), lambda y: y.rot90(-2, (-2, -1))),
    "rotate270": (lambda x: x.rot90(3, (-2, -1)), lambda y: y.rot90(-3, (-2, -1))),
}


def find_checkpoints(path: str | Path) -> list[Path]:
    """A checkpoint file, a fold folder, or an experiment folder (every fold: an ensemble)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / CHECKPOINT_NAME).is_file():
        return [path / CHECKPOINT_NAME]
    folds = sorted(path.glob(f"fold*/{CHECKPOINT_NAME}"))
    if folds:
        return folds
    raise ModelError(
        f"No model found at {path}. Give a checkpoint file, a fold folder holding {CHECKPOINT_NAME}, "
        "or an experiment folder from `smokeseg train`."
    )


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, ExperimentConfig]:
    """Rebuild the model from a smokeseg checkpoint alone: no training data, no pretrained download."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = ExperimentConfig.model_validate(checkpoint["hyper_parameters"]["config"])
        state = checkpoint["state_dict"]
    except Exception as error:
        raise ModelError(
            f"{path} is not a smokeseg checkpoint ({type(error).__name__}: {error}). "
            "Give the checkpoint.ckpt written by `smokeseg train`, or its fold or experiment folder."
        ) from None
    architecture = config.architecture.model_copy(update={"init_from": None})
    model = create_model(architecture, load_pretrained=False)
    model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
    return model.eval(), config


@dataclass
class Prediction:
    sample: Sample
    image: np.ndarray
    probabilities: np.ndarray


class Predictor:
    """Scores images of any size: resize to the model size, average TTA and folds, resize back."""

    def __init__(
        self,
        models: Sequence[torch.nn.Module],
        config: ExperimentConfig,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
    ) -> None:
        self.models = [model.to(device).eval() for model in models]
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size or config.prediction.batch_size_inference or config.training.batch_size
        self.augmentations = [
            TEST_TIME_AUGMENTATIONS[name] for name in config.prediction.test_time_augmentations
        ]

    @classmethod
    def from_path(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        loaded = [load_checkpoint(checkpoint) for checkpoint in find_checkpoints(path)]
        return cls([model for model, _ in loaded], loaded[0][1], device=device)

    @property
    def threshold(self) -> float:
        return self.config.prediction.probability_threshold

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        height, width = self.config.image.image_height, self.config.image.image_width
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return normalize(resized, self.config.image.image_normalization).transpose(2, 0, 1)

    @torch.inference_mode()
    def probabilities_at_model_size(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid over models and test-time augmentations, for a preprocessed batch."""
        batch = batch.to(self.device)
        views = [(lambda x: x, lambda y: y), *self.augmentations]
        total = torch.zeros((len(batch), 1, *batch.shape[-2:]), device=self.device)
        for model in self.models:
            for forward, inverse in views:
                total += inverse(torch.sigmoid(model(forward(batch)).float()))
        return (total / (len(self.models) * len(views))).cpu()

    def predict_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps (HxW float32) at each image's own size."""
        batch = torch.from_numpy(np.stack([self.preprocess(image) for image in images]))
        probabilities = self.probabilities_at_model_size(batch)[:, 0].numpy()
        return [
            cv2.resize(p, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
            for p, image in zip(probabilities, images, strict=True)
        ]

    def predict_samples(self, samples: Iterable[Sample]) -> Iterator[Prediction]:
        pending: list[tuple[Sample, np.ndarray]] = []
        for sample in samples:
            pending.append((sample, sample.load_image()))
            if len(pending) == self.batch_size:
                yield from self._flush(pending)
                pending = []
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[tuple[Sample, np.ndarray]]) -> Iterator[Prediction]:
        maps = self.predict_images([image for _, image in pending])
        for (sample, image), probabilities in zip(pending, maps, strict=True):
            yield Prediction(sample, image, probabilities)
