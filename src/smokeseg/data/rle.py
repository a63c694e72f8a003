"""Run-length encoded masks as Hydrogen Torch and Kaggle write them: 1-indexed ``start length`` pairs.

``order`` is the pixel order the runs walk: ``F`` (column-major, top to bottom then left to right;
Hydrogen Torch and Kaggle) or ``C`` (row-major). Table cells may hold a plain string, or the nested
lists Hydrogen Torch's own preparation writes (``[[rle]]``), which Parquet returns as numpy arrays and
CSV as their text; every run of every string in a cell is unioned.
"""

from __future__ import annotations

import ast
from typing import Literal

import numpy as np

from smokeseg.errors import DataError

Order = Literal["F", "C"]

# A mask whose configured-order decoding has this many times the edge length of the other order's is
# stripes rather than a shape: the runs were written in the other order.
_IMPLAUSIBLE_EDGE_RATIO = 3.0
# Below this many smoke pixels every shape looks plausible; say nothing.
_MIN_PIXELS_FOR_ORDER_GUESS = 16


def rle_encode(mask: np.ndarray, order: Order = "F") -> str:
    """Encode a 2-D mask (non-zero = smoke) as ``start length`` pairs; ``""`` for an empty mask."""
    flat = np.asarray(mask).astype(bool).ravel(order=order)
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-indexed: starts and one-past-ends
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(map(str, np.column_stack((starts, ends - starts)).ravel().tolist()))


def rle_decode(rle: object, height: int, width: int, order: Order = "F", where: str = "") -> np.ndarray:
    """Decode a table cell to a ``height`` x ``width`` bool mask; empty, None and NaN are empty masks.

    ``where`` names the cell (``"train.pq row 12 (image_id=x.jpg)"``) in the error a bad RLE raises.
    """
    pixels = height * width
    starts, ends = _runs(rle, where)
    if ends.size and ends.max() > pixels:
        last = int(ends.argmax())
        raise DataError(
            f"{_label(where)}: the run starting at pixel {starts[last] + 1} with length "
            f"{ends[last] - starts[last]} ends at pixel {ends[last]}, past the end of the {width}x{height} "
            f"image ({pixels} pixels). The mask was encoded for a larger image: check that the row names "
            "the right image file."
        )
    starts, ends = _merge_overlaps(starts, ends)
    # Alternate background and smoke stretches: gap, run, gap, run, ..., final gap.
    lengths = np.diff(np.concatenate(([0], np.column_stack((starts, ends)).ravel(), [pixels])))
    is_smoke = np.zeros(lengths.size, bool)
    is_smoke[1::2] = True
    return np.repeat(is_smoke, lengths).reshape((height, width), order=order)


def validate_rle(rle: object, where: str = "") -> None:
    """Raise DataError if the cell is not well-formed RLE, before any image size is known."""
    _runs(rle, where)


def cell_strings(cell: object, where: str = "") -> tuple[str, ...]:
    """The non-empty strings in a table cell: a string, NaN/None, or (nested) lists of those.

    The same flattening serves RLE cells and class-name cells (``[['smoke']]``).
    """
    if cell is None:
        return ()
    if isinstance(cell, str):
        text = cell.strip()
        if text.startswith("["):  # a list cell that went through CSV as its repr
            try:
                return cell_strings(ast.literal_eval(text), where)
            except (ValueError, SyntaxError):
                raise DataError(
                    f"Cannot read the cell in {where or 'the table'}: it starts with '[' but is not a valid "
                    f"list: {_preview(text)}"
                ) from None
        return (text,) if text else ()
    if isinstance(cell, bytes):
        return cell_strings(cell.decode("utf-8", errors="replace"), where)
    if isinstance(cell, list | tuple | np.ndarray):
        return tuple(text for item in cell for text in cell_strings(item, where))
    if _is_missing(cell):
        return ()
    raise DataError(
        f"Cannot read the cell in {where or 'the table'}: expected text or a list of texts, "
        f"got {type(cell).__name__} {_preview(repr(cell))}."
    )


def decodes_more_plausibly_in(rle: object, height: int, width: int, order: Order) -> Order | None:
    """The other order, if the configured one turns this mask into stripes and the other into a shape.

    Smoke is a few compact regions; decoding runs in the wrong order scatters them into thin
    stripes with far more edge per pixel. A square image gives the transpose either way, so it
    cannot tell and returns None, as it does for masks too small to judge.
    """
    other: Order = "C" if order == "F" else "F"
    configured = rle_decode(rle, height, width, order)
    if height == width or configured.sum() < _MIN_PIXELS_FOR_ORDER_GUESS:
        return None
    alternative = rle_decode(rle, height, width, other)
    if _edge_length(configured) > _IMPLAUSIBLE_EDGE_RATIO * max(_edge_length(alternative), 1):
        return other
    return None


def _runs(rle: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    """0-indexed run starts and one-past-ends of every string in the cell, checked for form."""
    texts = cell_strings(rle, where)
    if not texts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tokens = " ".join(texts).split()
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(token for token in tokens if not _fits_int64(token))
        raise DataError(
            f"{_label(where)}: {_preview(bad)} is not a whole number of pixels; RLE must be space-separated "
            f"'start length' integer pairs: {_preview(' '.join(texts))}"
        ) from None
    if values.size % 2:
        raise DataError(
            f"{_label(where)}: odd number of values ({values.size}); RLE must be 'start length' pairs. "
            f"The text may be cut off: {_preview(' '.join(texts))}"
        )
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise DataError(
            f"{_label(where)}: run start {starts[starts < 1][0]} is below 1; starts are 1-indexed "
            "(the first pixel is 1). If the table was written 0-indexed, add 1 to every start."
        )
    if (lengths < 1).any():
        raise DataError(
            f"{_label(where)}: run length {lengths[lengths < 1][0]} is below 1; lengths must be >= 1."
        )
    return starts - 1, starts - 1 + lengths


def _merge_overlaps(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint runs covering the same pixels: the union of several RLE strings may overlap."""
    if starts.size < 2:
        return starts, ends
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], np.maximum.accumulate(ends[order])
    opens_run = np.concatenate(([True], starts[1:] > ends[:-1]))
    closes_run = np.concatenate((opens_run[1:], [True]))
    return starts[opens_run], ends[closes_run]


def _edge_length(mask: np.ndarray) -> int:
    """Number of smoke/background boundaries between neighbouring pixels, across and down."""
    return int(np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1]))


def _is_missing(value: object) -> bool:
    """NaN, NaT and pandas' NA, without importing pandas."""
    try:
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    except (TypeError, ValueError):
        return type(value).__name__ in {"NAType", "NaTType"}


def _fits_int64(token: str) -> bool:
    try:
        return abs(int(token)) < 2**63
    except ValueError:
        return False


def _label(where: str) -> str:
    return f"Bad RLE mask in {where}" if where else "Bad RLE mask"


def _preview(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
