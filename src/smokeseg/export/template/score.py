"""Score images with this exported smoke segmentation model: the table ``smokeseg predict`` writes.

    python score.py IMAGE_OR_FOLDER [...] --output DIR [--format csv|parquet]

Needs only onnxruntime, numpy and pillow (requirements.txt): no torch, no smokeseg. Each step mirrors
smokeseg's scoring path, so an image gets the same mask here as there: decode upright RGB, resize to the
model size with OpenCV's own arithmetic (area averaging or bilinear, bit for bit) or, for native-resolution
models, pad whole frames (with test-time scales, also score them scaled and average the maps brought back;
with a context pass, also score them resized to the model size and combine the two maps by their mean or
maximum); normalise, average the test-time augmentations (model.onnx already averages the folds), resize
the probabilities back to the image's own size, threshold, run-length encode, and give the image-level
smoke verdict.

Row ids are a file's name, or its path relative to the folder given. One table row per image: image_id,
class_id, rle_mask (1-indexed ``start length`` pairs in ``rle_order``, at the image's own size), height,
width, smoke_fraction, probability_max, probability_mean, smoke, confidence, boxes (``[x0, y0, x1, y1,
area, mean_probability]`` per region, x1/y1 exclusive) and error (why an image could not be scored).
CSV cells holding lists are JSON. Parquet needs ``pip install pandas pyarrow``.

Images above 89,478,485 pixels (about 9459x9459) are refused before decoding, as smokeseg refuses them;
the environment variable SMOKESEG_MAX_IMAGE_PIXELS changes the limit (at most 178,956,970).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime
from PIL import Image, ImageOps, UnidentifiedImageError

HERE = Path(__file__).resolve().parent
SETTINGS_NAME = "scoring.json"
TABLE_STEM = "predictions"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Images above this many pixels are refused from their header, before decoding (a 10000x10000 PNG can be
# a few hundred KB on disk and over a gigabyte decoded), as smokeseg refuses them; the default is Pillow's
# own decompression-bomb threshold, and Pillow refuses more than twice it whatever is set.
MAX_PIXELS_VARIABLE = "SMOKESEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485
_PILLOW_HARD_LIMIT = 2 * DEFAULT_MAX_PIXELS
# The table's columns, in order, as `smokeseg predict` writes them.
TABLE_COLUMNS = (
    "image_id",
    "class_id",
    "rle_mask",
    "height",
    "width",
    "smoke_fraction",
    "probability_max",
    "probability_mean",
    "smoke",
    "confidence",
    "boxes",
    "error",
)
# Types of the columns a failed row leaves empty, so that a Parquet table of failures alone keeps them.
_COLUMN_TYPES = {
    "height": "Int64",
    "width": "Int64",
    "smoke_fraction": "float64",
    "probability_max": "float64",
    "probability_mean": "float64",
    "confidence": "float64",
}
# A write probe the size of a file system block: a full disk refuses it, where an empty file still fits.
_PROBE_BYTES = 4096
# Modes whose values span 0..65535; Pillow's own convert("RGB") would clip them instead of scaling.
_WIDE_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
# OpenCV's fixed-point bilinear weights for 8-bit images: 11 fractional bits.
_WEIGHT_ONE = 2048
# Per-image normalisation floors the standard deviation here, so a flat image does not divide by zero.
_MIN_STD = 1e-6

ArrayMap = Callable[[np.ndarray], np.ndarray]


class ScoringError(Exception):
    """An input that cannot be scored; the message says which and why."""


# --- images --------------------------------------------------------------------------------------


def max_pixels() -> int:
    """The most pixels an image may decode to: ``SMOKESEG_MAX_IMAGE_PIXELS``, else the default."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    limit = int(text) if text.isdigit() else 0
    if not 0 < limit <= _PILLOW_HARD_LIMIT:
        raise ScoringError(
            f"{MAX_PIXELS_VARIABLE}={text} is not a number of pixels from 1 to {_PILLOW_HARD_LIMIT} (above "
            f"that Pillow refuses to decode). Set it within that range, or unset it for {DEFAULT_MAX_PIXELS}."
        )
    return limit


def _too_large(path: Path, size: str) -> ScoringError:
    return ScoringError(
        f"{path} is too large to decode safely ({size}; the limit is {max_pixels():,} pixels). If it is a "
        "genuine photo, downscale it (smoke segmentation works at a few hundred to a few thousand pixels "
        f"a side), or raise the limit with {MAX_PIXELS_VARIABLE} (at most {_PILLOW_HARD_LIMIT})."
    )


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, upright as a viewer shows it (EXIF applied), whatever the file's mode; an image
    above ``max_pixels()`` is refused from its header, before its pixels are allocated."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from the header at its own threshold; max_pixels() is the limit applied below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(path.read_bytes()))
        width, height = image.size
        if width * height > max_pixels():
            raise _too_large(path, f"{width}x{height}, {width * height:,} pixels")
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError:
        raise _too_large(path, f"more than {_PILLOW_HARD_LIMIT:,} pixels") from None
    except (OSError, ValueError, SyntaxError) as error:
        # Pillow names the in-memory stream, not the file, when it recognises no format.
        reason = "not a format it knows" if isinstance(error, UnidentifiedImageError) else error
        raise ScoringError(f"{path} is not an image Pillow can read ({reason}).") from None
    if image.mode in _WIDE_INTEGER_MODES:
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        gray = ((wide + 128) // 257).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _bilinear_taps(
    source: int, target: int, area_weights: bool, clamp_weights: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's two taps per output pixel and the second one's float32 weight, edge pixels repeated.

    Bilinear samples at half-pixel centres; INTER_AREA, when one side grows, weights by cell overlap.
    Along x OpenCV zeroes the weight of a tap outside the image; along y it only clamps the row index.
    """
    inverse = target / source
    scale = 1.0 / inverse  # OpenCV's own double arithmetic, so positions round alike
    index = np.arange(target, dtype=np.float64)
    if area_weights:
        first = np.floor(index * scale)
        weight = ((index + 1) - (first + 1) * inverse).astype(np.float32)
        weight = np.where(weight <= 0, np.float32(0), weight - np.floor(weight))
    else:
        position = ((index + 0.5) * scale - 0.5).astype(np.float32)
        first = np.floor(position)
        weight = position - first
    first = first.astype(np.int64)
    if clamp_weights:
        weight[(first < 0) | (first >= source - 1)] = 0
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), weight


def _bilinear_uint8(image: np.ndarray, height: int, width: int, area_weights: bool) -> np.ndarray:
    """OpenCV's 8-bit bilinear: 11-bit fixed-point weights, the vertical pass rounded as its SIMD kernel."""
    x0, x1, wx = _bilinear_taps(image.shape[1], width, area_weights, clamp_weights=True)
    y0, y1, wy = _bilinear_taps(image.shape[0], height, area_weights, clamp_weights=False)
    ax1 = np.rint(wx * _WEIGHT_ONE).astype(np.int32)[:, None]
    ax0 = np.rint((1 - wx) * _WEIGHT_ONE).astype(np.int32)[:, None]
    by1 = np.rint(wy * _WEIGHT_ONE).astype(np.int32)[:, None, None]
    by0 = np.rint((1 - wy) * _WEIGHT_ONE).astype(np.int32)[:, None, None]
    pixels = image.astype(np.int32)
    rows = (pixels[:, x0] * ax0 + pixels[:, x1] * ax1) >> 4
    out = ((rows[y0] * by0) >> 16) + ((rows[y1] * by1) >> 16)
    return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def _area_taps(source: int, target: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's INTER_AREA table: for each output pixel, the source pixels its cell covers and their
    float32 shares, in OpenCV's order (padded with zero shares, which add exactly nothing)."""
    taps = []
    for cell_index in range(target):
        start = cell_index * scale
        end = start + scale
        cell = min(scale, source - start)
        first, last = math.ceil(start), min(math.floor(end), source - 1)
        first = min(first, last)
        pixel_taps = []
        if first - start > 1e-3:
            pixel_taps.append((first - 1, (first - start) / cell))
        pixel_taps += [(pixel, 1.0 / cell) for pixel in range(first, last)]
        if end - last > 1e-3:
            pixel_taps.append((last, min(end - last, 1.0, cell) / cell))
        taps.append(pixel_taps)
    indices = np.zeros((target, max(map(len, taps))), np.int64)
    shares = np.zeros(indices.shape, np.float32)
    for cell_index, pixel_taps in enumerate(taps):
        for k, (pixel, share) in enumerate(pixel_taps):
            indices[cell_index, k], shares[cell_index, k] = pixel, share
    return indices, shares


def _area_uint8(image: np.ndarray, height: int, width: int, scale_y: float, scale_x: float) -> np.ndarray:
    """OpenCV's INTER_AREA shrink: float32 sums of covered pixels times their shares, rows then columns."""
    x_indices, x_shares = _area_taps(image.shape[1], width, scale_x)
    y_indices, y_shares = _area_taps(image.shape[0], height, scale_y)
    rows = np.zeros((image.shape[0], width, image.shape[2]), np.float32)
    for k in range(x_indices.shape[1]):
        rows += image[:, x_indices[:, k]].astype(np.float32) * x_shares[:, k, None]
    out = np.zeros((height, width, image.shape[2]), np.float32)
    for k in range(y_indices.shape[1]):
        out += rows[y_indices[:, k]] * y_shares[:, k, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _block_mean_uint8(image: np.ndarray, factor_y: int, factor_x: int) -> np.ndarray:
    """OpenCV's INTER_AREA shrink by whole factors: integer block sums, rounded as OpenCV rounds them."""
    height, width = image.shape[0] // factor_y, image.shape[1] // factor_x
    blocks = image[: height * factor_y, : width * factor_x].reshape(height, factor_y, width, factor_x, -1)
    sums = blocks.sum(axis=(1, 3), dtype=np.int32)
    if factor_y == factor_x == 2:
        return ((sums + 2) >> 2).astype(np.uint8)
    mean = sums.astype(np.float32) * (np.float32(1) / np.float32(factor_y * factor_x))
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


def resize_image(image: np.ndarray, height: int, width: int, shrink: str = "area") -> np.ndarray:
    """smokeseg's resize to the model size, bit for bit: OpenCV INTER_LINEAR, or INTER_AREA (``shrink=
    "area"``) when either side shrinks, on uint8 HxWxC, as albumentations' Resize calls OpenCV."""
    source_height, source_width = image.shape[:2]
    if (height, width) == (source_height, source_width):
        return image
    if shrink != "area" or (height >= source_height and width >= source_width):
        return _bilinear_uint8(image, height, width, area_weights=False)
    scale_y, scale_x = 1.0 / (height / source_height), 1.0 / (width / source_width)
    if scale_y < 1 or scale_x < 1:  # one side grows: OpenCV blends bilinearly with area weights
        return _bilinear_uint8(image, height, width, area_weights=True)
    factor_y, factor_x = round(scale_y), round(scale_x)
    if abs(scale_y - factor_y) < sys.float_info.epsilon and abs(scale_x - factor_x) < sys.float_info.epsilon:
        return _block_mean_uint8(image, factor_y, factor_x)
    return _area_uint8(image, height, width, scale_y, scale_x)


def resize_probabilities(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)`` for float32 HxW."""
    x0, x1, wx = _bilinear_taps(values.shape[1], width, area_weights=False, clamp_weights=True)
    y0, y1, wy = _bilinear_taps(values.shape[0], height, area_weights=False, clamp_weights=False)
    rows = values[:, x0] * (1 - wx) + values[:, x1] * wx
    return rows[y0] * (1 - wy)[:, None] + rows[y1] * wy[:, None]


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom and right up to a multiple of ``multiple``, mirrored without repeating the edge pixel
    (OpenCV's BORDER_REFLECT_101): how native-resolution models see a whole frame."""
    padding = ((0, -image.shape[0] % multiple), (0, -image.shape[1] % multiple), (0, 0))
    return np.pad(image, padding, mode="reflect")


def fit_to_side(image: np.ndarray, side: int | None, enlarge: bool = False) -> np.ndarray:
    """Native resolution: scale a frame, keeping its aspect ratio, so that its longer side is ``side``.

    Smaller frames stay as they are unless ``enlarge``. Shrinking averages areas (INTER_AREA),
    enlarging is bilinear, as in training.
    """
    height, width = image.shape[:2]
    scale = min(side / height, side / width) if side else 1.0
    if scale == 1 or (scale > 1 and not enlarge):
        return image
    return resize_image(image, max(1, round(height * scale)), max(1, round(width * scale)), "area")


def normalize(image: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """(pixels / scale - mean) / std per channel; without a mean and std, the image's own statistics."""
    pixels = image.astype(np.float32) / np.float32(normalization["scale"])
    if normalization["mean"] is None:
        mean = pixels.mean(axis=(0, 1), keepdims=True)
        std = np.maximum(pixels.std(axis=(0, 1), keepdims=True), _MIN_STD)
    else:
        mean = np.asarray(normalization["mean"], np.float32)
        std = np.asarray(normalization["std"], np.float32)
    return (pixels - mean) / std


def model_view(image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """The image as the model sees it, before normalisation: resized to the model size, or (native
    resolution) padded to the encoder's stride."""
    if settings["resolution"] == "native":
        return pad_to_multiple(image, settings["pad_multiple"])
    return resize_image(image, settings["image_height"], settings["image_width"], settings["shrink"])


def preprocess(image: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32: the model's input for one image."""
    return normalize(model_view(image, settings), settings["normalization"]).transpose(2, 0, 1)


# name -> (transform the NCHW input, map the output back); each pair is exact, so averaging is sound.
TEST_TIME_AUGMENTATIONS: dict[str, tuple[ArrayMap, ArrayMap]] = {
    "horizontal_flip": (lambda x: x[..., ::-1], lambda y: y[..., ::-1]),
    "vertical_flip": (lambda x: x[..., ::-1, :], lambda y: y[..., ::-1, :]),
    "transpose": (lambda x: x.swapaxes(-1, -2), lambda y: y.swapaxes(-1, -2)),
    "rotate90": (lambda x: np.rot90(x, 1, (-2, -1)), lambda y: np.rot90(y, -1, (-2, -1))),
    "rotate180": (lambda x: np.rot90(x, 2, (-2, -1)), lambda y: np.rot90(y, -2, (-2, -1))),
    "rotate270": (lambda x: np.rot90(x, 3, (-2, -1)), lambda y: np.rot90(y, -3, (-2, -1))),
}


# context_pass -> how the native pass's probabilities and the context pass's combine, pixelwise.
CONTEXT_PASSES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": lambda native, context: (native + context) / 2,
    "max": np.maximum,
}


# --- masks, regions and rows ---------------------------------------------------------------------


def rle_encode(mask: np.ndarray, order: Literal["F", "C"] = "F") -> str:
    """1-indexed ``start length`` pairs walking the pixels in ``order`` (F: column-major); "" if empty."""
    flat = np.asarray(mask).astype(bool).ravel(order=order)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])).astype(np.int8))) + 1
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(map(str, np.column_stack((starts, ends - starts)).ravel().tolist()))


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected regions of a bool mask, numbered 1, 2, ... in raster order of their first pixel (0 is
    background), and one ``[x0, y0, x1, y1, area]`` row per region (x1, y1 exclusive).

    Works on runs, not pixels: each row's runs are joined to the runs below that overlap or touch them
    diagonally, and the joined runs are merged with a vectorised union-find.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = mask
    run_rows, edges = np.nonzero(np.diff(padded, axis=1))  # per row: start, end, start, end, ...
    rows, starts, ends = run_rows[0::2], edges[0::2], edges[1::2]  # ends exclusive
    stride = width + 1
    key_starts, key_ends = rows * stride + starts, rows * stride + ends  # both ascending
    below = (rows + 1) * stride
    first = np.searchsorted(key_ends, below + starts, "left")
    counts = np.maximum(np.searchsorted(key_starts, below + ends, "right") - first, 0)
    upper = np.repeat(np.arange(len(starts)), counts)
    lower = np.repeat(first, counts) + _ranks(counts)
    root = np.arange(len(starts))
    while True:  # hook each larger root under the smaller one, compress, until every joined pair agrees
        while not np.array_equal(root, root[root]):
            root = root[root]
        a, b = root[upper], root[lower]
        if np.array_equal(a, b):
            break
        np.minimum.at(root, np.maximum(a, b), np.minimum(a, b))
    # A root is its region's first run, so numbering the roots in order numbers regions in raster order.
    region = np.unique(root, return_inverse=True)[1].reshape(-1)
    count = int(region.max()) + 1 if len(region) else 0
    stats = np.zeros((count, 5), np.int64)
    stats[:, :2] = np.iinfo(np.int64).max
    np.minimum.at(stats[:, 0], region, starts)
    np.minimum.at(stats[:, 1], region, rows)
    np.maximum.at(stats[:, 2], region, ends)
    np.maximum.at(stats[:, 3], region, rows + 1)
    lengths = ends - starts
    np.add.at(stats[:, 4], region, lengths)
    labels = np.zeros(height * width, np.int32)
    labels[np.repeat(rows * width + starts, lengths) + _ranks(lengths)] = np.repeat(region + 1, lengths)
    return labels.reshape(height, width), stats


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for each n in ``counts``, concatenated."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def default_min_region_pixels(height: int, width: int, rule: dict[str, Any]) -> int:
    return max(rule["floor"], math.ceil(rule["fraction"] * height * width))


def smoke_verdict(
    probabilities: np.ndarray, threshold: float, min_region_pixels: int
) -> tuple[bool, float, list[list[float]]]:
    """(smoke, confidence, boxes): smoke when an 8-connected region above the threshold has at least
    ``min_region_pixels`` pixels; confidence is the highest probability in such regions, else 1 - the
    image's highest; one ``[x0, y0, x1, y1, area, mean_probability]`` box per region, largest first and
    equal areas in raster order of their first pixel, as smokeseg orders them."""
    labels, stats = label_regions(probabilities > threshold)
    keyed, peak = [], 0.0
    for label in np.flatnonzero(stats[:, 4] >= min_region_pixels):
        x0, y0, x1, y1, area = (int(value) for value in stats[label])
        window = (slice(y0, y1), slice(x0, x1))
        region = labels[window] == label + 1
        inside = probabilities[window][region]
        first_x = x0 + int(np.argmax(region[0]))  # the region's first pixel in raster order is in its top row
        keyed.append(((-area, y0, first_x), [x0, y0, x1, y1, area, float(inside.mean())]))
        peak = max(peak, float(inside.max()))
    boxes = [box for _, box in sorted(keyed)]  # largest first; equal areas in raster order of first pixel
    confidence = peak if boxes else 1.0 - float(probabilities.max())
    return bool(boxes), confidence, boxes


class Scorer:
    """model.onnx with its scoring settings: images in, probability maps at each image's size out."""

    def __init__(
        self,
        folder: Path = HERE,
        threshold: float | None = None,
        min_region_pixels: int | None = None,
    ) -> None:
        self.settings = json.loads((folder / SETTINGS_NAME).read_text(encoding="utf-8"))
        self.threshold = self.settings["probability_threshold"] if threshold is None else threshold
        self.min_region_pixels = min_region_pixels
        self.session = onnxruntime.InferenceSession(
            str(folder / self.settings["model"]), providers=onnxruntime.get_available_providers()
        )
        identity: tuple[ArrayMap, ArrayMap] = (lambda x: x, lambda y: y)
        self.views = [identity] + [
            TEST_TIME_AUGMENTATIONS[name] for name in self.settings["test_time_augmentations"]
        ]

    def probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probability maps (HxW float32), the mean over test-time views, at each image's own size."""
        if self.settings["resolution"] == "native":
            return [self._native_probabilities(image) for image in images]
        batch = np.stack([preprocess(image, self.settings) for image in images])
        maps = self._mean_over_views(batch)[:, 0]
        return [resize_probabilities(p, *image.shape[:2]) for p, image in zip(maps, images, strict=True)]

    def _native_probabilities(self, image: np.ndarray) -> np.ndarray:
        """A whole frame at its own resolution (first brought to ``side``), one at a time, averaged with
        the view scored at each of ``test_time_scales``; with a context pass, combined with the same view
        scored at the model size."""
        view = fit_to_side(image, self.settings["side"], self.settings["enlarge"])
        probabilities = self._view_probabilities(view)
        scales = self.settings.get("test_time_scales", [])
        for scale in scales:
            height, width = (max(1, round(side * scale)) for side in view.shape[:2])
            scaled = self._view_probabilities(resize_image(view, height, width, "area"))
            probabilities = probabilities + resize_probabilities(scaled, *view.shape[:2])
        probabilities = probabilities / (1 + len(scales))
        combine = CONTEXT_PASSES.get(self.settings.get("context_pass", "none"))
        if combine is not None:
            settings = self.settings
            resized = resize_image(view, settings["image_height"], settings["image_width"], "area")
            pixels = normalize(resized, settings["normalization"]).transpose(2, 0, 1)
            context = self._mean_over_views(pixels[None])[0, 0]
            probabilities = combine(probabilities, resize_probabilities(context, *view.shape[:2]))
        if view.shape == image.shape:
            return probabilities
        return resize_probabilities(probabilities, *image.shape[:2])

    def _view_probabilities(self, view: np.ndarray) -> np.ndarray:
        """One whole-frame view padded and scored, probabilities at the view's size."""
        probabilities = self._mean_over_views(preprocess(view, self.settings)[None])[0, 0]
        return np.ascontiguousarray(probabilities[: view.shape[0], : view.shape[1]])

    def _mean_over_views(self, batch: np.ndarray) -> np.ndarray:
        total = np.zeros((len(batch), 1, *batch.shape[-2:]), np.float32)
        for forward, inverse in self.views:
            inputs = {self.settings["input_name"]: np.ascontiguousarray(forward(batch))}
            total += inverse(self.session.run([self.settings["output_name"]], inputs)[0])
        return total / len(self.views)

    def row(self, image_id: str, probabilities: np.ndarray) -> dict[str, Any]:
        predicted = probabilities > self.threshold
        minimum = self.min_region_pixels
        if minimum is None:
            height, width = probabilities.shape
            minimum = default_min_region_pixels(height, width, self.settings["min_region"])
        smoke, confidence, boxes = smoke_verdict(probabilities, self.threshold, minimum)
        return {
            "image_id": image_id,
            "class_id": self.settings["class_name"],
            "rle_mask": rle_encode(predicted, self.settings["rle_order"]),
            "height": predicted.shape[0],
            "width": predicted.shape[1],
            "smoke_fraction": float(predicted.mean()),
            "probability_max": float(probabilities.max()),
            "probability_mean": float(probabilities.mean()),
            "smoke": smoke,
            "confidence": confidence,
            "boxes": boxes,
            "error": None,
        }

    def failed_row(self, image_id: str, error: str) -> dict[str, Any]:
        """Every column of a scored row, empty (no mask, not an empty one), for an image that could not be
        scored, and the reason; so a table of failures alone has the usual columns."""
        row: dict[str, Any] = dict.fromkeys(TABLE_COLUMNS)
        row.update(image_id=image_id, class_id=self.settings["class_name"], error=error)
        return row

    def score(
        self, images: Sequence[tuple[str, Path]], batch_size: int | None = None
    ) -> list[dict[str, Any]]:
        """One row per (image id, file), in order; unreadable files get an error row and are reported."""
        batch_size = batch_size or self.settings["batch_size"]
        rows: list[dict[str, Any]] = []
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> None:
            maps = self.probabilities([image for _, image in pending])
            rows.extend(self.row(image_id, p) for (image_id, _), p in zip(pending, maps, strict=True))
            pending.clear()

        for image_id, path in images:
            try:
                pending.append((image_id, read_image(path)))
            except ScoringError as error:
                print(f"Could not score {path}: {error}", file=sys.stderr)
                rows.append(self.failed_row(image_id, str(error)))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
        order = {image_id: index for index, (image_id, _) in enumerate(images)}
        return sorted(rows, key=lambda row: order[row["image_id"]])


# --- inputs and outputs --------------------------------------------------------------------------


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def find_images(inputs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(image id, file) for image files and every image under folders, in input order, each once."""
    found: dict[str, Path] = {}
    for given in map(Path, inputs):
        if given.is_dir():
            files = sorted(
                (path.relative_to(given).as_posix(), path)
                for path in given.rglob("*")
                if path.is_file() and _is_image_name(path)
            )
        elif given.is_file() and _is_image_name(given):
            files = [(given.name, given)]
        else:
            what = "is not an image file" if given.exists() else "does not exist"
            raise ScoringError(f"{given} {what}. Give image files ({', '.join(IMAGE_SUFFIXES)}) or folders.")
        if not files:
            raise ScoringError(f"{given} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}).")
        for image_id, path in files:
            seen = found.setdefault(image_id, path)
            if seen.resolve() != path.resolve():
                raise ScoringError(
                    f"{seen} and {path} would both be row {image_id}. Pass their common parent folder "
                    "instead (ids are then paths relative to it), or rename one of them."
                )
    return list(found.items())


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def _write_csv(rows: list[dict[str, Any]], target: Path) -> None:
    with target.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, TABLE_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows({key: _csv_cell(value) for key, value in row.items()} for row in rows)


def _pandas() -> Any:
    """pandas, for Parquet only: requirements.txt stays at what CSV needs."""
    try:
        import pandas
        import pyarrow  # noqa: F401 - pandas writes Parquet through it
    except ImportError:
        raise ScoringError("--format parquet needs pandas and pyarrow: pip install pandas pyarrow") from None
    return pandas


def _write_parquet(rows: list[dict[str, Any]], target: Path) -> None:
    frame = _pandas().DataFrame(rows, columns=TABLE_COLUMNS)
    frame.astype(_COLUMN_TYPES).to_parquet(target, index=False)


TABLE_WRITERS: dict[str, Callable[[list[dict[str, Any]], Path], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def ensure_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and write a probe file in it, so that a read-only or full disk fails
    before the scoring, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-probe.") as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise _write_error(folder, error) from None


def _write_error(folder: Path, error: OSError) -> ScoringError:
    where = folder if error.filename is None else error.filename
    return ScoringError(
        f"Cannot write {where}: {error.strerror or error}. Free space on that disk or make the folder "
        "writable, or give another --output folder."
    )


def write_table(rows: list[dict[str, Any]], output_dir: Path, table_format: str = "csv") -> Path:
    """``output_dir/predictions.<format>``, written to a temporary file first: never half a table."""
    target = output_dir / f"{TABLE_STEM}.{table_format}"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=output_dir)
        os.close(descriptor)
        try:
            TABLE_WRITERS[table_format](rows, Path(temporary))
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a table is shared like any file
            os.replace(temporary, target)
        finally:
            Path(temporary).unlink(missing_ok=True)
    except OSError as error:
        raise _write_error(output_dir, error) from None
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="image files and folders of images")
    parser.add_argument("--output", "-o", type=Path, required=True, help="folder for predictions.<format>")
    parser.add_argument("--format", choices=list(TABLE_WRITERS), default="csv", dest="table_format")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    parser.add_argument(
        "--min-region-pixels", type=int, help="smallest region that makes a smoke verdict (default: by size)"
    )
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the model's)")
    args = parser.parse_args(argv)
    try:
        images = find_images(args.inputs)
        max_pixels()  # a wrong SMOKESEG_MAX_IMAGE_PIXELS stops the run here, not in every row
        if args.table_format == "parquet":
            _pandas()  # a missing pandas fails before the scoring, not after it
        ensure_writable_folder(args.output)
        scorer = Scorer(HERE, args.threshold, args.min_region_pixels)
        rows = scorer.score(images, args.batch_size)
        table = write_table(rows, args.output, args.table_format)
    except ScoringError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    smoke = sum(bool(row["smoke"]) for row in rows)
    failed = sum(row["error"] is not None for row in rows)
    print(f"{len(rows)} images: {smoke} with smoke, {failed} not scored. Predictions: {table}")
    if failed == len(rows):
        print("Error: no image could be scored; each row's error says why.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
