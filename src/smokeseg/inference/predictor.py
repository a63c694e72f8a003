"""THE scoring path: load a model or an ensemble, preprocess, test-time augment, score at native size.

Validation inside training, ``predict``, ``evaluate`` and the exported package all produce their
probabilities this way, so one image gets one answer everywhere.

Two ways to score an image: Hydrogen Torch's (the default) resizes it to the model size and the
probabilities back; tiling (``TileSpec``) scores it at native resolution in overlapping model-size
tiles, so distant smoke a few hundred pixels wide is not shrunk away in a 3072x2048 frame. Models
trained at native resolution score whole frames so; with ``image.context_pass`` they also score the
frame resized to the model size and combine both, so large plumes keep their context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.augment import build_context_transform, build_inference_transform
from smokeseg.data.dataset import fit_scale, fit_to_size, limit_opencv_threads, scale_image
from smokeseg.data.formats import Sample
from smokeseg.data.images import image_size, read_image
from smokeseg.data.normalization import normalize
from smokeseg.errors import SmokesegError
from smokeseg.inference.inputs import collect_inputs
from smokeseg.inference.runtimes import Runtime, load_model
from smokeseg.inference.scoring import ImageResult, Prediction
from smokeseg.model.factory import split_outputs
from smokeseg.model.precision import mixed_precision_dtype

# Above this, resizing to the model size discards nearly every pixel and a batch of decoded frames
# costs gigabytes: such images are scored tiled or not at all.
MAX_UNTILED_PIXELS = 100_000_000
# Encoders downsample by 32, so a tile padded up to a multiple of it maps back pixel for pixel.
_SIZE_MULTIPLE = 32

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

# image.context_pass -> how the native pass's probabilities and the context pass's combine, pixelwise.
CONTEXT_PASSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": lambda native, context: (native + context) / 2,
    "max": torch.maximum,
}


def combine_context(native: torch.Tensor, context: torch.Tensor, context_pass: str) -> torch.Tensor:
    """Combine NxCxHxW native-pass probabilities with the context pass's, scored at the model size and
    brought to HxW bilinearly (half-pixel centres, as OpenCV's INTER_LINEAR), as ``context_pass`` says.

    Scoring and the per-epoch validation both combine here, so the metric that picks a checkpoint
    measures what scoring does.
    """
    upsampled = F.interpolate(context, size=native.shape[-2:], mode="bilinear", align_corners=False)
    return CONTEXT_PASSES[context_pass](native, upsampled)


@dataclass(frozen=True)
class TileSpec:
    """Score at native resolution in overlapping tiles, blended without seams.

    ``size``: the tile side in pixels, a multiple of 32; None takes the model's training size, the
    scale its filters learned. ``overlap``: below 1 a fraction of the tile, from 1 up pixels; at most
    half a tile, since each tile fades out over the overlap on every side that has a neighbour.
    """

    size: int | None = None
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.size is not None and (self.size < _SIZE_MULTIPLE or self.size % _SIZE_MULTIPLE):
            raise SmokesegError(
                f"Tile size {self.size} must be a positive multiple of {_SIZE_MULTIPLE} (the encoder "
                f"downsamples by {_SIZE_MULTIPLE}): use {max(_SIZE_MULTIPLE, _round_up(self.size))}."
            )
        if self.overlap < 0:
            raise SmokesegError(f"Tile overlap {self.overlap} must be >= 0 (a fraction below 1, or pixels).")

    def geometry(self, model_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """((tile height, tile width), (overlap height, overlap width)) in pixels."""
        tile = (self.size, self.size) if self.size else model_size
        overlap = (self._pixels(tile[0]), self._pixels(tile[1]))
        if 2 * overlap[0] > tile[0] or 2 * overlap[1] > tile[1]:
            raise SmokesegError(
                f"Tile overlap {self.overlap} is more than half the {tile[1]}x{tile[0]} tile: "
                "give at most 0.5 (or half the tile size in pixels)."
            )
        return tile, overlap

    def _pixels(self, side: int) -> int:
        return round(self.overlap * side) if self.overlap < 1 else int(self.overlap)


class Predictor:
    """Scores images of any size, averaging TTA and folds: resized to the model size (Hydrogen Torch's
    way, the default) or, with ``tile``, tiled at native resolution."""

    def __init__(
        self,
        models: Sequence[Runtime],
        config: ExperimentConfig,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        tile: TileSpec | None = None,
        max_untiled_pixels: int = MAX_UNTILED_PIXELS,
    ) -> None:
        """``device``: a torch device, or ``auto`` for the GPU when there is one."""
        limit_opencv_threads()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.models = [_ready_for_inference(model, self.device) for model in models]
        self.config = config
        self.autocast_dtype = mixed_precision_dtype(
            config.environment.mixed_precision_inference, self.device.type
        )
        self.batch_size = batch_size or config.prediction.batch_size_inference or config.training.batch_size
        self.augmentations = [
            TEST_TIME_AUGMENTATIONS[name] for name in config.prediction.test_time_augmentations
        ]
        self.tile = tile
        self.max_untiled_pixels = max_untiled_pixels
        self.transform = build_inference_transform(config.augmentation, config.image)
        self.context_transform = build_context_transform(config.image)
        if tile is not None:
            tile.geometry(self.model_size)  # a bad overlap fails now, not at the first image

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        tile: TileSpec | None = None,
        scoring_overrides: Sequence[str] = (),
    ) -> Predictor:
        """A checkpoint, a fold folder, an experiment folder (its folds averaged as an ensemble), or a
        scoring package from `smokeseg export --package` (run on onnxruntime); see ``runtimes.load_model``.

        ``device`` defaults to ``auto``, as in `smokeseg predict`. The operating point stored beside the
        checkpoints by `smokeseg tune-threshold` replaces the config's; ``scoring_overrides`` (such as
        ``"prediction.test_time_augmentations=[horizontal_flip]"``; ``SCORING_KEYS`` only) go on top.
        """
        loaded = load_model(path, scoring_overrides)
        return cls(loaded.runtimes, loaded.config, device, batch_size, tile)

    @property
    def model_size(self) -> tuple[int, int]:
        return self.config.image.image_height, self.config.image.image_width

    @property
    def threshold(self) -> float:
        return self.config.prediction.probability_threshold

    @property
    def image_threshold(self) -> float | None:
        """The classification head's share of the verdict (``prediction.classification_threshold``)."""
        return self.config.prediction.classification_threshold

    def preprocess(self, image: np.ndarray, transform: A.Compose | None = None) -> np.ndarray:
        """The model's view of an image (CxHxW float): the same inference transform as validation saw,
        or ``transform`` (the context pass's)."""
        view = (transform or self.transform)(image=image)["image"]
        return normalize(view, self.config.image.image_normalization).transpose(2, 0, 1)

    def probabilities_at_model_size(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean sigmoid over models and test-time augmentations, for a preprocessed batch (see
        ``scores_at_model_size``)."""
        return self.scores_at_model_size(batch)[0]

    @torch.inference_mode()
    def scores_at_model_size(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(probability maps Nx1xHxW, image smoke probabilities N or None): mean sigmoids over models and
        test-time augmentations, for a preprocessed batch. The image probabilities come from the
        classification head (``architecture.classification_head``), None for models without one.

        The batch may be model-size images or tiles of any size divisible by 32: both scoring modes
        average the ensemble and TTA here, so they cannot drift apart.
        """
        batch = batch.to(self.device)
        views = [(lambda x: x, lambda y: y), *self.augmentations]
        total = torch.zeros((len(batch), 1, *batch.shape[-2:]), device=self.device)
        image_probabilities: list[torch.Tensor] = []  # from the models that have a head
        with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
            for model in self.models:
                for forward, inverse in views:
                    masks, labels = split_outputs(model(forward(batch)))
                    total += inverse(torch.sigmoid(masks.float()))
                    if labels is not None:
                        image_probabilities.append(torch.sigmoid(labels.float()[:, 0]))
        maps = (total / (len(self.models) * len(views))).cpu()
        return maps, torch.stack(image_probabilities).mean(0).cpu() if image_probabilities else None

    def predict_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps (HxW float32) at each image's own size."""
        return [probabilities for probabilities, _ in self.score_images(images)]

    def score_images(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, float | None]]:
        """(probability map at the image's own size, the classification head's smoke probability for the
        whole image or None without a head) per image."""
        if not images:  # a frame with no window to score, say: nothing to stack
            return []
        if self.tile is not None:
            return [self._predict_tiled(image, self.tile) for image in images]
        for image in images:
            height, width = image.shape[:2]
            self._refuse_if_too_large(height, width, "an image")
        if self.config.image.resolution == "native":
            return [self._predict_native(image) for image in images]
        batch = torch.from_numpy(np.stack([self.preprocess(image) for image in images]))
        maps, image_probabilities = self.scores_at_model_size(batch)
        return [
            (
                cv2.resize(p, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR),
                _item(image_probabilities, index),
            )
            for index, (p, image) in enumerate(zip(maps[:, 0].numpy(), images, strict=True))
        ]

    def score_crops(
        self, crops: Sequence[np.ndarray], frame_shapes: Sequence[tuple[int, int]]
    ) -> list[tuple[np.ndarray, float | None]]:
        """Crops of frames scored as images of their own, each at the scale the model gives its whole
        frame (``frame_shapes``: each frame's height and width), as ``score_images`` scores: probabilities
        at the crop's own size, the head's smoke probability.

        A model trained at native resolution sees a crop of a frame that ``image.long_side`` enlarges
        enlarged too (not brought to the long side itself), and by its native pass alone: a crop cannot
        show the model its whole frame for the context pass. Other models score each crop as they would
        any image.
        """
        image_config = self.config.image
        if image_config.resolution != "native":
            return self.score_images(crops)
        fit = image_config.native_fit()
        as_is = self.config.model_copy(
            update={
                "image": image_config.model_copy(
                    update={"long_side": None, "max_side": None, "context_pass": "none"}
                )
            }
        )
        scorer = Predictor(self.models, as_is, self.device, self.batch_size)
        scored = []
        for crop, (frame_height, frame_width) in zip(crops, frame_shapes, strict=True):
            scale = fit_scale(frame_height, frame_width, (fit[0], fit[0]), fit[1]) if fit else 1.0
            size = (round(crop.shape[0] * scale), round(crop.shape[1] * scale))
            [(probabilities, image_probability)] = scorer.score_images(
                [fit_to_size(crop, size, enlarge=True)]
            )
            # Back at the crop's own pixels, as a frame's map is brought back to the frame's size.
            own_size = cv2.resize(probabilities, crop.shape[1::-1], interpolation=cv2.INTER_LINEAR)
            scored.append((own_size, image_probability))
        return scored

    def _predict_native(self, image: np.ndarray) -> tuple[np.ndarray, float | None]:
        """A whole frame at its own resolution (brought to ``image.long_side`` or shrunk to
        ``image.max_side`` first, as in training), probabilities at the frame's own size.

        With ``image.context_pass`` that view is also scored resized to the model size, as
        ``context_probability`` trains it, and both combine at the view's size (``combine_context``).
        """
        height, width = image.shape[:2]
        fit = self.config.image.native_fit()
        view = fit_to_size(image, (fit[0], fit[0]), fit[1]) if fit else image
        scores, image_probabilities = self._view_scores(view)
        if self.context_transform is not None:
            context_batch = torch.from_numpy(self.preprocess(view, self.context_transform)[None])
            scores = combine_context(
                scores, self.probabilities_at_model_size(context_batch), self.config.image.context_pass
            )
        probabilities = scores[0, 0].numpy()
        if view.shape[:2] != (height, width):
            probabilities = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(probabilities), _item(image_probabilities, 0)

    def _view_scores(self, view: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(probabilities 1x1xHxW of a whole-frame view, the head's image probabilities): the view scored
        at its own scale, averaged with its ``prediction.test_time_scales`` passes brought back to it
        (bilinearly, as ``combine_context``); the head answers for the view's own scale."""
        maps, image_probabilities = self.scores_at_model_size(torch.from_numpy(self.preprocess(view)[None]))
        total = maps[..., : view.shape[0], : view.shape[1]]
        factors = self.config.prediction.test_time_scales
        for factor in factors:
            scaled = scale_image(view, factor)
            height, width = scaled.shape[:2]
            self._refuse_if_too_large(height, width, f"an image at test-time scale {factor}")
            scaled_maps = self.probabilities_at_model_size(torch.from_numpy(self.preprocess(scaled)[None]))
            total = total + F.interpolate(
                scaled_maps[..., : scaled.shape[0], : scaled.shape[1]],
                size=view.shape[:2],
                mode="bilinear",
                align_corners=False,
            )
        return total / (1 + len(factors)), image_probabilities

    def load_image(self, sample: Sample) -> np.ndarray:
        """Decode a sample's image; one too large to score untiled is refused from its header alone."""
        data = sample.store.read(sample.image_id)
        if self.tile is None:
            # The pixel count needs no EXIF orientation, whose lookup would decode a PNG a first time.
            height, width = image_size(data, sample.image_location, upright=False)
            self._refuse_if_too_large(height, width, sample.image_location)
        return read_image(data, sample.image_location)

    def predict_samples(
        self,
        samples: Iterable[Sample],
        on_error: Callable[[Sample, SmokesegError], None] | None = None,
    ) -> Iterator[Prediction]:
        """Predictions in order. An image that cannot be loaded raises, or with ``on_error`` is handed
        to it and left out, so one corrupt file does not stop a batch job."""
        # Tiled, one image already fills batches of tiles; grouping frames would only hold more in memory.
        images_per_batch = 1 if self.tile is not None else self.batch_size
        pending: list[tuple[Sample, np.ndarray]] = []
        for sample in samples:
            try:
                pending.append((sample, self.load_image(sample)))
            except SmokesegError as error:
                if on_error is None:
                    raise
                on_error(sample, error)
            if len(pending) == images_per_batch:
                yield from self._flush(pending)
                pending = []
        if pending:
            yield from self._flush(pending)

    def predict_paths(
        self,
        inputs: str | Path | Sequence[str | Path],
        *,
        threshold: float | None = None,
        min_region_pixels: int | None = None,
        data_folder: str | Path | None = None,
    ) -> list[ImageResult]:
        """Score image files, folders, quoted globs, tables or zips (what `smokeseg predict` takes), one
        result per image in input order, with `smokeseg predict`'s verdict; an unreadable image gets a
        result with its ``error`` instead of stopping the others.

        ``threshold`` defaults to the model's; ``min_region_pixels`` to the verdict rule's default.
        """
        samples = collect_inputs([inputs] if isinstance(inputs, str | Path) else inputs, data_folder)
        threshold = self.threshold if threshold is None else threshold
        results: dict[str, ImageResult] = {}

        def unreadable(sample: Sample, error: SmokesegError) -> None:
            results[sample.image_id] = ImageResult(sample.image_id, error=str(error))

        for prediction in self.predict_samples(samples, on_error=unreadable):
            results[prediction.sample.image_id] = ImageResult.scored(prediction, threshold, min_region_pixels)
        return [results[sample.image_id] for sample in samples]

    def _flush(self, pending: list[tuple[Sample, np.ndarray]]) -> Iterator[Prediction]:
        scores = self.score_images([image for _, image in pending])
        for (sample, image), (probabilities, image_probability) in zip(pending, scores, strict=True):
            yield Prediction(sample, image, probabilities, image_probability, self.image_threshold)

    def _refuse_if_too_large(self, height: int, width: int, where: str) -> None:
        if height * width > self.max_untiled_pixels:
            raise SmokesegError(
                f"{where} is {width}x{height} ({height * width / 1e6:.0f} megapixels). Above "
                f"{self.max_untiled_pixels / 1e6:.0f} megapixels an image is scored only tiled, at "
                "native resolution: add --tile to `smokeseg predict` (in Python: Predictor(..., "
                "tile=TileSpec())), or downscale it."
            )

    def _predict_tiled(self, image: np.ndarray, spec: TileSpec) -> tuple[np.ndarray, float | None]:
        """Native-resolution probabilities from overlapping tiles, streamed through the model in batches,
        and the highest image smoke probability of any tile (None without a classification head).

        Each tile's probabilities are weighted by a window that fades (raised cosine) to nearly zero
        towards its neighbours, where the model saw no context, and the sum is divided by the summed
        weights. Memory is the image, its normalised copy and one accumulator: O(image), not O(tiles).

        ``image.context_pass`` does not apply here: tiles are scored as they are, at the image's own
        resolution, without the whole-frame view.
        """
        height, width = image.shape[:2]
        normalized = normalize(image, self.config.image.image_normalization)  # whole-image statistics
        (tile_h, tile_w), (overlap_h, overlap_w) = spec.geometry(self.model_size)
        # An image smaller than a tile is scored as one tile of its own size, padded up to a multiple of 32.
        tile_h, tile_w = min(tile_h, _round_up(height)), min(tile_w, _round_up(width))
        padded_h, padded_w = max(height, tile_h), max(width, tile_w)
        if (padded_h, padded_w) != (height, width):
            normalized = cv2.copyMakeBorder(
                normalized, 0, padded_h - height, 0, padded_w - width, cv2.BORDER_REFLECT_101
            )
        rows = _tile_windows(padded_h, tile_h, overlap_h)
        columns = _tile_windows(padded_w, tile_w, overlap_w)
        total = np.zeros((padded_h, padded_w), np.float32)
        tiles = [(top, left) for top in rows for left in columns]
        image_probability: float | None = None
        for start in range(0, len(tiles), self.batch_size):
            origins = tiles[start : start + self.batch_size]
            batch = np.stack(
                [
                    normalized[top : top + tile_h, left : left + tile_w].transpose(2, 0, 1)
                    for top, left in origins
                ]
            )
            maps, tile_image_probabilities = self.scores_at_model_size(torch.from_numpy(batch))
            if tile_image_probabilities is not None:
                image_probability = max(float(tile_image_probabilities.max()), image_probability or 0.0)
            for (top, left), tile_probabilities in zip(origins, maps[:, 0].numpy(), strict=True):
                weight = np.outer(rows[top], columns[left])
                total[top : top + tile_h, left : left + tile_w] += tile_probabilities * weight
        # The tile grid is separable, so the summed weights are the outer product of the per-axis sums.
        total /= np.outer(_summed_windows(rows, padded_h), _summed_windows(columns, padded_w))
        return total[:height, :width], image_probability


def _ready_for_inference(model: Runtime, device: torch.device) -> Runtime:
    """On the device, in eval mode; torch models on CPU also channels-last, which scored a 1280x960
    frame 1.7x faster there with the same numbers (up to float rounding)."""
    model = model.to(device).eval()
    if isinstance(model, torch.nn.Module) and device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def _item(values: torch.Tensor | None, index: int) -> float | None:
    return None if values is None else float(values[index])


def _round_up(length: int) -> int:
    return -(-length // _SIZE_MULTIPLE) * _SIZE_MULTIPLE


def _tile_windows(length: int, tile: int, overlap: int) -> dict[int, np.ndarray]:
    """Tile origin -> 1-D blending weights along one axis.

    Tiles step by ``tile - overlap``; the last is moved back flush with the end, so no tile is padded.
    Each fades in and out over ``overlap`` pixels on the sides that meet a neighbour (a raised cosine:
    smooth, never exactly zero, and two facing ramps sum to 1) and keeps full weight at the image border.
    """
    starts = [*range(0, length - tile, tile - overlap), length - tile]
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)).astype(np.float32)
    windows = {}
    for start in starts:
        window = np.ones(tile, np.float32)
        if overlap and start > 0:
            window[:overlap] = ramp
        if overlap and start + tile < length:
            window[-overlap:] = ramp[::-1]
        windows[start] = window
    return windows


def _summed_windows(windows: dict[int, np.ndarray], length: int) -> np.ndarray:
    summed = np.zeros(length, np.float32)
    for start, window in windows.items():
        summed[start : start + len(window)] += window
    return summed
