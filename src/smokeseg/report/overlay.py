"""Draw a segmentation mask over a photo: a translucent tint plus a solid outline.

The outline matters because a faint tint vanishes over grey smoke; the edge stays visible at any size.
"""

from __future__ import annotations

import numpy as np


def mask_edge(mask: np.ndarray, line_width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` within ``line_width`` pixels of its boundary.

    Eroding with numpy shifts keeps this free of scipy/opencv. The image border does not count as a
    boundary: smoke cut off by the frame is not outlined along the frame.
    """
    mask = np.asarray(mask, dtype=bool)
    eroded = mask
    for _ in range(line_width):
        padded = np.pad(eroded, 1, mode="edge")
        eroded = eroded & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~eroded


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    color: tuple[int, int, int],
    alpha: float = 0.45,
    line_width: int = 2,
) -> np.ndarray:
    """A copy of ``image`` (HxWx3 uint8) with ``mask`` (HxW) tinted in ``color`` and outlined in it."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    mask = np.asarray(mask, dtype=bool)
    out = image.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = (1.0 - alpha) * out[mask] + alpha * tint
    out[mask_edge(mask, line_width)] = tint
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
