"""Decode images and masks to numpy the same way everywhere, so training, checking and prediction agree.

Every image becomes HxWx3 uint8 RGB in its displayed orientation (EXIF applied), whatever its mode:
grayscale, palette, RGBA, 16-bit. A file Pillow cannot read becomes a DataError that names it.

An image above ``SMOKESEG_MAX_IMAGE_PIXELS`` pixels (default 89,478,485, Pillow's own decompression-bomb
threshold, about 9459x9459) is refused from its header, before its pixels are allocated: a 10000x10000
PNG can be a few hundred KB on disk and over a gigabyte decoded. Pillow itself refuses more than twice
its threshold, so the variable can raise the limit up to 178,956,970 pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smokeseg.errors import ConfigError, DataError

# Modes whose values span 0..65535; Pillow's own convert("RGB") would clip them instead of scaling.
_WIDE_INTEGER_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
# EXIF orientations that swap width and height (the transposing and the 90-degree rotations).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112
MAX_PIXELS_VARIABLE = "SMOKESEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS's default: where Pillow starts to warn
# Pillow refuses images above twice its threshold whatever smokeseg allows.
_PILLOW_HARD_LIMIT = 2 * DEFAULT_MAX_PIXELS
# Only the file's fix: which setting (if any) leaves the file out depends on the command that read it.
_REEXPORT_HINT = "Re-export the file (e.g. open and save it again)."


def read_image(data: bytes | Path, name: str) -> np.ndarray:
    """Decode to HxWx3 uint8 RGB, upright as a viewer shows it; ``name`` identifies the file in errors."""
    image = _decode(data, name)
    if image.mode in _WIDE_INTEGER_MODES:
        gray = _scale_to_uint8(np.asarray(image))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return np.asarray(image.convert("RGB"))


def read_mask(data: bytes | Path, name: str) -> np.ndarray:
    """Decode a mask image to HxW bool: gray value > 127 is smoke (colour masks are taken as gray)."""
    image = _decode(data, name)
    if image.mode in _WIDE_INTEGER_MODES:
        return _scale_to_uint8(np.asarray(image)) > 127
    return np.asarray(image.convert("L")) > 127


def image_size(data: bytes | Path, name: str, upright: bool = True) -> tuple[int, int]:
    """(height, width) as ``read_image`` will return it; an image above the pixel limit is refused from
    its header (Pillow decodes a whole PNG to look for EXIF after its pixels). ``upright=False`` gives the
    size as stored, from the header alone: enough for a pixel count, without that decoding."""
    with _opened(data, name) as image:
        width, height = image.size
        _refuse_above_limit(width, height, name)  # before getexif, which decodes a whole PNG to find EXIF
        if not upright:
            return height, width
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        except (OSError, ValueError, SyntaxError) as error:
            raise _corrupt(name, error) from None
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def encode_png(mask_or_image: np.ndarray) -> bytes:
    """Lossless PNG bytes: a bool mask as 0/255 gray, uint8 HxW as gray, HxWx3 as RGB, HxWx4 as RGBA."""
    array = np.asarray(mask_or_image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"encode_png takes a bool or uint8 HxW, HxWx3 or HxWx4 array, not {array.dtype} {array.shape}"
        )
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def max_image_pixels() -> int:
    """The most pixels an image may decode to: ``SMOKESEG_MAX_IMAGE_PIXELS``, else the default."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    limit = int(text) if text.isdigit() else 0
    if not 0 < limit <= _PILLOW_HARD_LIMIT:
        raise ConfigError(
            f"{MAX_PIXELS_VARIABLE}={text} is not a number of pixels from 1 to {_PILLOW_HARD_LIMIT} (above "
            f"that Pillow refuses to decode). Set it within that range, or unset it for {DEFAULT_MAX_PIXELS}."
        )
    return limit


def _decode(data: bytes | Path, name: str) -> Image.Image:
    """Fully decoded and upright, so a truncated file fails here rather than half-way through training;
    one above ``max_image_pixels()`` is refused from its header, before its pixels are allocated."""
    with _opened(data, name) as image:
        width, height = image.size
        _refuse_above_limit(width, height, name)
        try:
            image.load()
            return ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError) as error:
            raise _corrupt(name, error) from None


def _corrupt(name: str, error: Exception) -> DataError:
    return DataError(f"Image {name} is truncated or corrupt ({error}). {_REEXPORT_HINT}")


def _opened(data: bytes | Path, name: str) -> Image.Image:
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except FileNotFoundError:
            raise DataError(f"Image {name} does not exist. Check the dataset paths in the config.") from None
        except OSError as error:
            raise DataError(f"Image {name} cannot be read: {error}.") from None
    try:
        with warnings.catch_warnings():
            # Pillow warns from the header at its own threshold; _decode applies smokeseg's limit instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _too_large(name, f"more than {_PILLOW_HARD_LIMIT:,} pixels") from None
    except (OSError, ValueError, SyntaxError) as error:
        kind = "is empty" if not data else f"is not an image Pillow can read ({_reason(error)})"
        raise DataError(f"Image {name} {kind}. {_REEXPORT_HINT}") from None


def _refuse_above_limit(width: int, height: int, name: str) -> None:
    if width * height > max_image_pixels():
        raise _too_large(name, f"{width}x{height}, {width * height:,} pixels")


def _too_large(name: str, size: str) -> DataError:
    """One message for every image too large to decode, whichever check found it."""
    return DataError(
        f"Image {name} is too large to decode safely ({size}; the limit is {max_image_pixels():,} pixels). "
        "If it is a genuine photo, downscale it (smoke segmentation works at a few hundred to a few "
        f"thousand pixels a side), or raise the limit with {MAX_PIXELS_VARIABLE} (at most "
        f"{_PILLOW_HARD_LIMIT})."
    )


def _reason(error: Exception) -> str:
    """Pillow's reason, less the in-memory stream it names when it recognises no format."""
    return "not a format it knows" if isinstance(error, UnidentifiedImageError) else str(error)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 0..65535 onto 0..255 with rounding (x * 257 maps back to x)."""
    wide = np.clip(values, 0, 65535).astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)
