"""RLE encode/decode: round trips for any shape and order, Hydrogen Torch's cell forms, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from smokeseg.data.rle import cell_strings, decodes_more_plausibly_in, rle_decode, rle_encode, validate_rle
from smokeseg.errors import DataError

masks = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda shape: arrays(bool, shape))
orders = st.sampled_from(["F", "C"])


@settings(max_examples=200, deadline=None)
@given(mask=masks, order=orders)
def test_round_trip_any_shape_and_order(mask: np.ndarray, order: str) -> None:
    rle = rle_encode(mask, order)
    decoded = rle_decode(rle, *mask.shape, order=order)
    assert decoded.dtype == bool
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("shape", [(1, 7), (7, 1), (1, 1), (5, 3)])
@pytest.mark.parametrize("order", ["F", "C"])
def test_edge_shapes_empty_and_full(shape: tuple[int, int], order: str) -> None:
    empty, full = np.zeros(shape, bool), np.ones(shape, bool)
    assert rle_encode(empty, order) == ""
    assert rle_encode(full, order) == f"1 {shape[0] * shape[1]}"
    np.testing.assert_array_equal(rle_decode("", *shape, order=order), empty)
    np.testing.assert_array_equal(rle_decode(rle_encode(full, order), *shape, order=order), full)


def test_column_major_is_the_default() -> None:
    mask = np.array([[1, 1, 0], [0, 0, 0]], bool)
    assert rle_encode(mask) == "1 1 3 1"  # down the first column, then the second
    assert rle_encode(mask, "C") == "1 2"


@pytest.mark.parametrize(
    "cell", ["", "   ", None, float("nan"), np.float32("nan"), [], [[]], [[""]], np.array([])]
)
def test_empty_cells_are_empty_masks(cell: object) -> None:
    assert not rle_decode(cell, 3, 4).any()


def test_list_cells_are_flattened_and_unioned() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    upper, lower = mask.copy(), mask.copy()
    upper[2:] = False
    lower[:2] = False
    nested_numpy = np.array(
        [np.array([rle_encode(upper)], dtype=object), np.array([rle_encode(lower)], dtype=object)]
    )
    cells = [
        [[rle_encode(mask)]],
        [rle_encode(upper), rle_encode(lower)],
        nested_numpy,
        f"[['{rle_encode(upper)}', '{rle_encode(lower)}']]",  # a list cell after a trip through CSV
        [rle_encode(mask), rle_encode(upper)],  # overlapping runs
    ]
    for cell in cells:
        np.testing.assert_array_equal(rle_decode(cell, 4, 5), mask)


def test_cell_strings_reads_class_cells() -> None:
    assert cell_strings([["smoke"]]) == ("smoke",)
    assert cell_strings("['smoke', 'smoke']") == ("smoke", "smoke")
    assert cell_strings(None) == ()


@pytest.mark.parametrize(
    ("rle", "expected"),
    [
        ("1 2 3", "odd number of values"),
        ("1 x", "'x' is not a whole number"),
        ("1 2.5", "'2.5' is not a whole number"),
        ("0 3", "start 0 is below 1"),
        ("-4 3", "start -4 is below 1"),
        ("2 0", "length 0 is below 1"),
        ("[['1 2']", "not a valid list"),
        (7, "expected text"),
    ],
)
def test_malformed_rle_names_the_row(rle: object, expected: str) -> None:
    where = "train.pq row 12 (image_id=x.jpg)"
    with pytest.raises(DataError, match=expected) as caught:
        rle_decode(rle, 3, 4, where=where)
    assert where in str(caught.value)
    with pytest.raises(DataError):
        validate_rle(rle, where)


def test_runs_past_the_end_of_the_image() -> None:
    validate_rle("10 5")  # well-formed: only the image size makes it wrong
    with pytest.raises(DataError, match=r"ends at pixel 14, past the end of the 4x3 image") as caught:
        rle_decode("1 2 10 5", 3, 4, where="train.pq row 3 (image_id=y.jpg)")
    assert "train.pq row 3 (image_id=y.jpg)" in str(caught.value)


@pytest.mark.parametrize("order", ["F", "C"])
def test_wrong_order_is_detected_from_the_stripes(order: str, toy_pairs) -> None:
    blob = toy_pairs[0].mask  # an ellipse in a 24x40 image
    other = "C" if order == "F" else "F"
    rle = rle_encode(blob, other)
    assert decodes_more_plausibly_in(rle, *blob.shape, order) == other
    assert decodes_more_plausibly_in(rle, *blob.shape, other) is None


def test_order_guess_stays_quiet_when_it_cannot_tell(toy_pairs) -> None:
    square = toy_pairs[0].mask[:, :24]
    assert decodes_more_plausibly_in(rle_encode(square, "C"), 24, 24, "F") is None  # a transpose looks fine
    assert decodes_more_plausibly_in("", 30, 50, "F") is None
    assert decodes_more_plausibly_in("5 3", 30, 50, "F") is None  # too small to judge
