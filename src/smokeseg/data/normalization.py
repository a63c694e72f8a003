"""Pixel normalisation, by Hydrogen Torch's names; shared by training, prediction and the export.

The exported scoring package re-implements these few lines in numpy; a test proves both agree.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _simple(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def _imagenet(image: np.ndarray) -> np.ndarray:
    return (_simple(image) - IMAGENET_MEAN) / IMAGENET_STD


def _per_image(image: np.ndarray) -> np.ndarray:
    pixels = image.astype(np.float32)
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    std = pixels.std(axis=(0, 1), keepdims=True)
    return (pixels - mean) / np.maximum(std, 1e-6)


def _raw(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32)


NORMALIZATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "Simple": _simple,
    "ImageNet": _imagenet,
    "Image": _per_image,
    "None": _raw,
}


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
    """uint8 HxWx3 -> float32 HxWx3 by the config's ``image.image_normalization``."""
    return NORMALIZATIONS[mode](image)
