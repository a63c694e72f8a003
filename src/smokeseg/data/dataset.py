"""A torch Dataset over loaded samples: decode once, augment each time."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from smokeseg.data.formats import Sample
from smokeseg.data.normalization import normalize


def limit_opencv_threads() -> None:
    """Run OpenCV single-threaded beside torch.

    OpenCV's own thread pool keeps spinning after a resize and starves torch's threads: on 2 cores a
    training step ran 3-6x slower once images had been decoded and resized. Loader workers already
    give the data side its parallelism.
    """
    cv2.setNumThreads(1)


def fit_scale(height: int, width: int, size: tuple[int, int], enlarge: bool = False) -> float:
    """The factor ``fit_to_size`` scales a ``height`` x ``width`` image by (1.0: left as it is)."""
    scale = min(size[0] / height, size[1] / width)
    return scale if scale < 1.0 or enlarge else 1.0


def fit_to_size(image: np.ndarray, size: tuple[int, int], enlarge: bool = False) -> np.ndarray:
    """Scale keeping the aspect ratio until height or width meets ``size`` (both within it).

    Smaller images are left as they are unless ``enlarge``. Shrinking averages areas, so thin, faint
    smoke stays visible; enlarging is bilinear.
    """
    height, width = image.shape[:2]
    return scale_image(image, fit_scale(height, width, size, enlarge))


def scale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Scale both sides by ``scale`` (rounded, at least one pixel): areas averaged when shrinking,
    bilinear when enlarging."""
    if scale == 1.0:
        return image
    height, width = image.shape[:2]
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, target, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def fit_with_mask(
    image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int] | None, enlarge: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``fit_to_size`` for an image and its mask alike (None: left as they are), the mask as 0/1 uint8,
    zeros where none is known. The mask is scaled as 0/255 and cut at half, so its edge moves with the
    image's."""
    mask = np.zeros(image.shape[:2], np.uint8) if mask is None else mask.astype(np.uint8) * 255
    if size is not None:
        image = fit_to_size(image, size, enlarge)
        mask = fit_to_size(mask, size, enlarge)
    return image, (mask > 127).astype(np.uint8)


class SegmentationDataset(Dataset):
    """Yields ``{"image": 3xHxW float, "mask": 1xHxW float, "index": int}`` at the model size.

    With ``context_transform`` (validation with ``image.context_pass``) also ``"context"``, the image
    as that transform makes it, and ``"size"``, the (height, width) of the image before ``transform``
    padded it, so validation can combine the two passes as scoring does.

    Decoded images and masks are kept in memory: smoke datasets are small, and decoding multi-megapixel
    camera JPEGs would otherwise dominate each epoch. With ``max_size`` the cached copies are shrunk
    to at most that size (``fit_to_size``), or brought to it with ``enlarge``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: A.BasicTransform | A.Compose,
        normalization: str,
        max_size: tuple[int, int] | None = None,
        enlarge: bool = False,
        context_transform: A.BasicTransform | A.Compose | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.context_transform = context_transform
        self.normalization = normalization
        self.max_size = max_size
        self.enlarge = enlarge
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def preload(self, threads: int = 4) -> None:
        """Decode everything up front (in threads: decoding releases the GIL), before workers fork."""
        with ThreadPoolExecutor(threads) as pool:
            for index, pair in zip(range(len(self)), pool.map(self._decode, range(len(self))), strict=True):
                self._cache[index] = pair

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image = sample.load_image()
        return fit_with_mask(image, sample.load_mask(*image.shape[:2]), self.max_size, self.enlarge)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (possibly shrunk) image, HxWx3 uint8, and its 0/1 mask, zeros where none is known."""
        if index not in self._cache:
            self._cache[index] = self._decode(index)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        out = self.transform(image=image, mask=mask)
        item = {
            "image": self._tensor(out["image"]),
            "mask": torch.from_numpy(out["mask"][None].astype(np.float32)),
            "index": index,
        }
        if self.context_transform is not None:
            item["context"] = self._tensor(self.context_transform(image=image)["image"])
            item["size"] = torch.tensor(image.shape[:2])
        return item

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        pixels = normalize(image, self.normalization)
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
