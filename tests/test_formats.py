"""Dataset shapes, image decoding, bad inputs and conversion: all on tiny images made in tmp_path."""

from __future__ import annotations

import io
import itertools
import logging
import pickle
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from PIL import Image, features
from typer.testing import CliRunner

from conftest import png_claiming
from smokeseg.cli import app
from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import (
    FolderStore,
    Sample,
    ZipStore,
    convert_dataset,
    convert_folders_to_table,
    convert_table_to_folders,
    load_samples,
    open_store,
    read_table,
    samples_from_folders,
    samples_from_table,
)
from smokeseg.data.images import encode_png, image_size, read_image, read_mask
from smokeseg.data.rle import decodes_more_plausibly_in, rle_encode
from smokeseg.errors import ConfigError, DataError
from smokeseg.training.run import ExperimentData
from test_training import TINY

# --- every shape loads to the same masks -----------------------------------------------------------


def _build(shape: str, toy) -> tuple[Path, Path | None]:
    """(table_or_folder, data_folder) for one dataset shape holding the toy pairs."""
    if shape.startswith("table_"):
        fmt = "csv" if shape.endswith("csv") else "pq"
        cells = "lists" if "lists" in shape else "rows" if "rows" in shape else "plain"
        return toy.table(fmt=fmt, cells=cells)
    if shape == "table_and_images_in_zip":
        table, _ = toy.table()
        archive = toy.zip(table.parent)
        return archive / "train.pq", archive / "images"
    if shape == "zip_holding_table_and_images":
        table, _ = toy.table()
        return toy.zip(table.parent), None
    if shape == "folder_holding_table_and_images":
        table, _ = toy.table()
        return table.parent, None
    if shape == "image_and_mask_folders":
        return toy.folders(), None
    if shape == "image_and_mask_folders_zipped":
        return toy.zip(toy.folders()), None
    if shape == "image_and_mask_folders_zipped_in_a_folder":
        return toy.zip(toy.folders(), inside="my_dataset"), None
    raise ValueError(shape)


SHAPES = [
    "table_pq",
    "table_csv",
    "table_lists_pq",
    "table_lists_csv",
    "table_rows_pq",
    "table_and_images_in_zip",
    "zip_holding_table_and_images",
    "folder_holding_table_and_images",
    "image_and_mask_folders",
    "image_and_mask_folders_zipped",
    "image_and_mask_folders_zipped_in_a_folder",
]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_loads_identical_images_and_masks(shape: str, toy_datasets, toy_pairs) -> None:
    samples = load_samples(*_build(shape, toy_datasets), DatasetConfig(), require_masks=True)
    by_stem = {PurePosixPath(sample.image_id).stem: sample for sample in samples}
    assert sorted(by_stem) == sorted(pair.stem for pair in toy_pairs)
    for pair in toy_pairs:
        sample = by_stem[pair.stem]
        image = sample.load_image()
        np.testing.assert_array_equal(image, pair.image)
        np.testing.assert_array_equal(sample.load_mask(*image.shape[:2]), pair.mask)
        assert sample.has_mask


def test_rows_of_one_image_are_merged(toy_datasets) -> None:
    table, images = toy_datasets.table(cells="rows")
    samples = load_samples(table, images, DatasetConfig(), require_masks=True)
    assert len(samples) == len(toy_datasets.pairs) == len(pd.read_parquet(table)) // 3
    assert "rows 0, 1, 2 (image_id=a.png)" in samples[0].source


def test_unlabeled_test_table_has_no_masks(toy_datasets) -> None:
    table, images = toy_datasets.table()
    pd.read_parquet(table).drop(columns=["rle_mask", "class_id"]).to_parquet(table)
    samples = load_samples(table, images, DatasetConfig(), require_masks=False)
    assert [sample.has_mask for sample in samples] == [False] * 4
    assert samples[0].load_mask(24, 40) is None
    with pytest.raises(DataError, match=r"no column 'rle_mask' \(dataset.rle_mask_column\)"):
        load_samples(table, images, DatasetConfig(), require_masks=True)


def test_groups_come_from_the_group_column(toy_datasets) -> None:
    frame = toy_datasets.frame()
    frame["camera"] = ["north", "north", None, "south"]
    config = DatasetConfig(group_fold_column="camera")
    samples = samples_from_table(frame, FolderStore("."), config, "train.pq", require_masks=True)
    assert [sample.group for sample in samples] == ["north", "north", "c.png", "south"]
    frame.loc[len(frame)] = {"image_id": "a.png", "class_id": "smoke", "rle_mask": "", "camera": "south"}
    with pytest.raises(DataError, match=r"image a.png appears in rows 0 and 4 with different camera values"):
        samples_from_table(frame, FolderStore("."), config, "train.pq", require_masks=True)
    with pytest.raises(DataError, match=r"dataset.group_fold_column"):
        samples_from_table(frame, FolderStore("."), DatasetConfig(group_fold_column="site"), "t.pq", True)


def test_several_classes_are_refused(toy_datasets) -> None:
    frame = toy_datasets.frame()
    frame.loc[1, "class_id"] = "cloud"
    with pytest.raises(DataError, match="several classes in column 'class_id': cloud, smoke"):
        samples_from_table(frame, FolderStore("."), DatasetConfig(), "train.pq", require_masks=True)


def test_rle_order_c_tables_load_with_rle_order_c(toy_datasets, toy_pairs) -> None:
    out = toy_datasets.root / "c_order"
    table = convert_folders_to_table(toy_datasets.folders(), out, rle_order="C")
    samples = load_samples(table, out / "images", DatasetConfig(rle_order="C"), require_masks=True)
    for sample, pair in zip(samples, toy_pairs, strict=True):
        np.testing.assert_array_equal(sample.load_mask(*pair.mask.shape), pair.mask)
    assert decodes_more_plausibly_in(samples[0].rles, *toy_pairs[0].mask.shape, "F") == "C"


# --- bad inputs: a DataError naming the file or row ------------------------------------------------


def test_malformed_rle_names_the_row_or_is_skipped(toy_datasets, caplog) -> None:
    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    frame.loc[1, "rle_mask"] = "5 3 7"
    frame.to_parquet(table)
    with pytest.raises(DataError, match=r"train.pq row 1 \(image_id=b.png\): odd number of values") as caught:
        load_samples(table, images, DatasetConfig(), require_masks=True)
    assert "on_bad_sample: skip" in str(caught.value)
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        samples = load_samples(table, images, DatasetConfig(on_bad_sample="skip"), require_masks=True)
    assert [sample.image_id for sample in samples] == ["a.png", "c.png", "d.png"]
    assert "b.png" in caplog.text


def test_runs_past_the_image_name_the_row(toy_datasets) -> None:
    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    frame.loc[2, "rle_mask"] = "200 100"  # c.png is 16x16 = 256 pixels
    frame.to_parquet(table)
    sample = load_samples(table, images, DatasetConfig(), require_masks=True)[2]
    with pytest.raises(
        DataError, match=r"train.pq row 2 \(image_id=c.png\).*past the end of the 16x16 image"
    ):
        sample.load_mask(16, 16)


def test_missing_image_column_lists_the_columns(toy_datasets) -> None:
    table, images = toy_datasets.table(fmt="csv")
    pd.read_csv(table).rename(columns={"image_id": "file"}).to_csv(table, index=False)
    with pytest.raises(DataError) as caught:
        load_samples(table, images, DatasetConfig(), require_masks=True)
    message = str(caught.value)
    assert "train.csv has no column 'image_id' (dataset.image_column)" in message
    assert "Columns found: file, class_id, rle_mask" in message


def test_missing_image_names_the_file_and_folder_or_is_skipped(toy_datasets, caplog) -> None:
    table, images = toy_datasets.table()
    (images / "b.png").unlink()
    with pytest.raises(
        DataError, match=rf"Image b.png \(train.pq row 1 \(image_id=b.png\)\) is not in {images}"
    ):
        load_samples(table, images, DatasetConfig(), require_masks=True)
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        samples = load_samples(table, images, DatasetConfig(on_bad_sample="skip"), require_masks=True)
    assert len(samples) == 3
    assert "b.png" in caplog.text


def test_corrupt_image_names_the_file(toy_datasets) -> None:
    table, images = toy_datasets.table()
    (images / "a.png").write_bytes(b"not a png at all")
    sample = load_samples(table, images, DatasetConfig(), require_masks=True)[0]
    with pytest.raises(DataError, match=rf"Image {images / 'a.png'} is not an image.*Re-export the file"):
        sample.load_image()


def test_mask_of_another_size_names_both_files(toy_datasets) -> None:
    root = toy_datasets.folders()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks/train/a.png")
    sample = samples_from_folders(root)[0]
    with pytest.raises(
        DataError, match=r"Mask .*masks/train/a.png is 5x5 but its image .*images/train/a.png is 40x24"
    ):
        sample.load_mask(24, 40)


def test_duplicate_image_id_in_folders(toy_datasets) -> None:
    root = toy_datasets.folders()
    Image.fromarray(toy_datasets.pairs[0].image).save(root / "images/train/a.jpg")
    with pytest.raises(DataError, match=r"Duplicate image id train/a: .*a.jpg and .*a.png"):
        load_samples(root, None, DatasetConfig(), require_masks=True)


def test_image_without_mask_is_an_error_or_skipped(toy_datasets, caplog) -> None:
    root = toy_datasets.folders()
    (root / "masks/train/b.png").unlink()
    with pytest.raises(DataError, match=r"images/train/b.png has no mask .*masks/train/b.png"):
        load_samples(root, None, DatasetConfig(), require_masks=True)
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        samples = load_samples(root, None, DatasetConfig(on_bad_sample="skip"), require_masks=True)
    assert len(samples) == 3


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda root: root / "nope.pq", "nope.pq does not exist"),
        (lambda root: (root / "t.xlsx").write_bytes(b"x") and root / "t.xlsx", "use Parquet"),
        (
            lambda root: (root / "bad.pq").write_bytes(b"garbage") and root / "bad.pq",
            "cannot be read as Parquet",
        ),
    ],
)
def test_unreadable_tables(tmp_path: Path, make, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        read_table(make(tmp_path))


def test_missing_data_folder_and_unknown_layout(toy_datasets, tmp_path: Path) -> None:
    table, _ = toy_datasets.table()
    with pytest.raises(DataError, match="nowhere does not exist"):
        load_samples(table, tmp_path / "nowhere", DatasetConfig(), require_masks=True)
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"not a dataset smokeseg can read.*no table"):
        load_samples(tmp_path / "stuff", None, DatasetConfig(), require_masks=True)


# --- zip stores and path traversal -----------------------------------------------------------------


def test_zip_member_climbing_out_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("images/ok.png", encode_png(np.zeros((2, 2), bool)))
        handle.writestr("../evil.jpg", b"x")
    with pytest.raises(DataError, match=r"Refusing '../evil.jpg'.*zip path traversal"):
        open_store(archive)


@pytest.mark.parametrize("image_id", ["../../etc/passwd", "/etc/passwd", "..\\..\\secret.png"])
@pytest.mark.parametrize("zipped", [False, True])
def test_image_ids_climbing_out_are_refused(toy_datasets, image_id: str, zipped: bool) -> None:
    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    frame.loc[0, "image_id"] = image_id
    frame.to_parquet(table)
    data_folder = toy_datasets.zip(table.parent) / "images" if zipped else images
    with pytest.raises(DataError, match="points outside it"):
        load_samples(table, data_folder, DatasetConfig(), require_masks=True)


def test_paths_inside_a_zip(toy_datasets) -> None:
    archive = toy_datasets.zip(toy_datasets.folders())
    store = open_store(archive / "images" / "train")
    assert store.names() == ["a.png", "b.png", "c.png", "d.png"]
    assert store.describe("a.png") == f"{archive}/images/train/a.png"
    with pytest.raises(
        DataError, match=r"holds nothing under images/test/. Its top level holds: images, masks"
    ):
        open_store(archive / "images" / "test")


def test_zip_store_survives_pickling(toy_datasets, toy_pairs) -> None:
    """DataLoader workers receive samples pickled (spawn) and must reopen the archive themselves."""
    archive = toy_datasets.zip(toy_datasets.folders())
    sample = samples_from_folders(archive)[0]
    sample.load_image()  # opens the archive in this process
    restored: Sample = pickle.loads(pickle.dumps(sample))
    assert isinstance(restored.store, ZipStore)
    np.testing.assert_array_equal(restored.load_image(), toy_pairs[0].image)


# --- image decoding --------------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


_NOISE_JPEG = _encoded(
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)), "JPEG"
)


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[0, 0] = 255  # mark the top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    data = _encoded(Image.fromarray(pixels), exif=exif)
    image = read_image(data, "rotated.png")
    np.testing.assert_array_equal(image, np.rot90(pixels, k=-1))
    assert image_size(data, "rotated.png") == (6, 4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_common_formats_read_as_rgb(fmt: str) -> None:
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    image = read_image(_encoded(Image.new("RGB", (5, 3), (200, 30, 30)), fmt), f"x.{fmt.lower()}")
    assert image.shape == (3, 5, 3) and image.dtype == np.uint8
    assert abs(int(image[1, 2, 0]) - 200) < 8


def test_image_modes_become_rgb() -> None:
    gray = Image.fromarray(np.array([[0, 128, 255]], np.uint8))
    np.testing.assert_array_equal(read_image(_encoded(gray), "g.png")[0, :, 1], [0, 128, 255])

    wide = np.array([[0, 257 * 100, 65535]], np.uint16)
    sixteen_bit = Image.fromarray(wide)
    assert sixteen_bit.mode == "I;16"
    np.testing.assert_array_equal(read_image(_encoded(sixteen_bit), "w.png")[0, :, 2], [0, 100, 255])
    thirty_two_bit = Image.fromarray(wide.astype(np.int32))
    assert thirty_two_bit.mode == "I"
    np.testing.assert_array_equal(
        read_image(_encoded(thirty_two_bit, "TIFF"), "i.tif")[0, :, 0], [0, 100, 255]
    )

    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    np.testing.assert_array_equal(read_image(_encoded(rgba), "a.png")[0, 0], [10, 20, 30])

    palette = Image.new("RGB", (2, 2), (0, 0, 255)).convert("P")
    palette.info["transparency"] = 0
    assert read_image(_encoded(palette, transparency=0), "p.png")[0, 0].tolist() == [0, 0, 255]


def test_masks_are_thresholded_gray() -> None:
    rgb_mask = np.zeros((2, 3, 3), np.uint8)
    rgb_mask[0, 1] = 255
    np.testing.assert_array_equal(
        read_mask(_encoded(Image.fromarray(rgb_mask)), "m.png"), [[0, 1, 0], [0, 0, 0]]
    )
    sixteen_bit = Image.fromarray(np.array([[0, 40000]], np.uint16))
    np.testing.assert_array_equal(read_mask(_encoded(sixteen_bit), "m16.png"), [[False, True]])
    mask = np.eye(3, 4, dtype=bool)
    np.testing.assert_array_equal(read_mask(encode_png(mask), "eye.png"), mask)
    with pytest.raises(ValueError, match="bool or uint8"):
        encode_png(np.zeros((2, 2), np.float32))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "is empty"),
        (b"GIF89 nonsense", "is not an image Pillow can read"),
        (_NOISE_JPEG[: len(_NOISE_JPEG) // 2], "is truncated or corrupt"),
    ],
)
def test_unreadable_images_name_the_file(data: bytes, expected: str) -> None:
    """The file and its fix only: no setting of one command (dataset.on_bad_sample is training's), and no
    in-memory stream (``<_io.BytesIO object at 0x...>``) where the file is meant."""
    with pytest.raises(DataError, match=rf"Image photos/x.jpg {expected}.*Re-export the file") as caught:
        read_image(data, "photos/x.jpg")
    assert "on_bad_sample" not in str(caught.value) and "BytesIO" not in str(caught.value)


def test_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "x.png", str(tmp_path / "x.png"))


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_images_above_the_pixel_limit_are_refused_from_the_header(monkeypatch) -> None:
    """A 10000x10000 PNG is refused with the limit and how to change it, not decoded with Pillow's warning."""
    with pytest.raises(DataError, match=r"big.png is too large.*10000x10000.*SMOKESEG_MAX_IMAGE_PIXELS"):
        read_image(png_claiming(10000, 10000), "big.png")
    small = _encoded(Image.new("RGB", (40, 40)))
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", "1599")
    with pytest.raises(DataError, match=r"40x40, 1,600 pixels; the limit is 1,599 pixels"):
        read_image(small, "small.png")
    with pytest.raises(DataError, match=r"too large"):
        read_mask(small, "small_mask.png")
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", "1600")
    assert read_image(small, "small.png").shape == (40, 40, 3)
    for wrong in ("lots", "0", "200000000"):
        monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", wrong)
        with pytest.raises(ConfigError, match=rf"SMOKESEG_MAX_IMAGE_PIXELS={wrong} is not"):
            read_image(small, "small.png")


def test_decompression_bombs_are_refused(monkeypatch) -> None:
    data = _encoded(Image.new("L", (20, 20)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"huge.png is too large to decode safely"):
        read_image(data, "huge.png")


# --- conversion ------------------------------------------------------------------------------------


def test_folders_to_table_to_folders_is_lossless(toy_datasets, toy_pairs) -> None:
    source = toy_datasets.folders()
    table_dir = toy_datasets.root / "as_table"
    table = convert_folders_to_table(source, table_dir)
    assert table == table_dir / "train.pq"
    frame = pd.read_parquet(table)
    assert frame.columns.tolist() == ["image_id", "class_id", "rle_mask"]
    assert frame.image_id.tolist() == [f"train/{pair.name}" for pair in toy_pairs]

    back = convert_table_to_folders(table, table_dir / "images", toy_datasets.root / "back", DatasetConfig())
    for pair in toy_pairs:
        relative = Path("train") / pair.name
        assert (back / "images" / relative).read_bytes() == (source / "images" / relative).read_bytes()
        mask_path = back / "masks" / relative.with_suffix(".png")
        np.testing.assert_array_equal(read_mask(mask_path, str(mask_path)), pair.mask)
    assert not [path for path in back.rglob("*") if path.name.endswith(".tmp")]
    # and the converted table loads as a folder holding one table
    assert len(load_samples(table_dir, None, DatasetConfig(), require_masks=True)) == len(toy_pairs)


def _masks_by_id(samples: list[Sample]) -> dict[str, np.ndarray]:
    masks = {}
    for sample in samples:
        height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
        masks[sample.image_id] = sample.load_mask(height, width)
    return masks


@pytest.mark.parametrize("rle_order", ["F", "C"])
def test_what_convert_wrote_reads_as_it_is(toy_datasets, toy_pairs, rle_order: str) -> None:
    """The folder, its table alone, and its experiment.yaml each load, convert back, and train."""
    source = toy_datasets.folders()
    out = toy_datasets.root / "out"
    assert convert_dataset(source, out, rle_order=rle_order) == [out / "train.pq", out / "experiment.yaml"]
    expected = {f"train/{pair.name}": pair.mask for pair in toy_pairs}
    dataset = DatasetConfig(rle_order=rle_order)
    for path, require_masks in itertools.product([out, out / "train.pq"], [True, False]):
        masks = _masks_by_id(load_samples(path, None, dataset, require_masks=require_masks))
        assert masks.keys() == expected.keys(), (path, require_masks)
        for image_id, mask in masks.items():
            np.testing.assert_array_equal(mask, expected[image_id])

    for name, converted in (("back", out), ("back_from_table", out / "train.pq")):
        back = toy_datasets.root / name
        assert convert_dataset(converted, back, rle_order=rle_order) == [back]
        assert _masks_by_id(samples_from_folders(back)).keys() == expected.keys()

    moved = shutil.move(out, toy_datasets.root / "moved")  # the config's paths are relative to it
    config = load_config(Path(moved) / "experiment.yaml")
    assert (config.dataset.train_dataframe, config.dataset.data_folder) == (
        Path(moved).resolve() / "train.pq",
        Path(moved).resolve() / "images",
    )
    assert config.dataset.rle_order == rle_order and config.experiment_name == "out"
    data = ExperimentData.load(config)
    assert _masks_by_id(data.train).keys() == expected.keys()


def test_a_table_without_a_data_folder_finds_its_images_or_says_to_give_them(toy_datasets) -> None:
    table, images = toy_datasets.table()
    assert len(load_samples(table, None, DatasetConfig(), require_masks=True)) == len(toy_datasets.pairs)
    shutil.rmtree(images)
    with pytest.raises(DataError, match=r"None of the images named in .*table.*--data-folder"):
        load_samples(table, None, DatasetConfig(), require_masks=True)


def test_zipped_folders_convert_to_a_table(toy_datasets, toy_pairs) -> None:
    table = convert_folders_to_table(toy_datasets.zip(toy_datasets.folders()), toy_datasets.root / "out")
    samples = load_samples(table, table.parent / "images", DatasetConfig(), require_masks=True)
    np.testing.assert_array_equal(samples[1].load_mask(*toy_pairs[1].mask.shape), toy_pairs[1].mask)


def test_failed_conversions_write_nothing(toy_datasets) -> None:
    source = toy_datasets.folders()
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(source / "masks/train/c.png")
    out = toy_datasets.root / "out"
    with pytest.raises(DataError, match=r"masks/train/c.png is 5x5"):
        convert_folders_to_table(source, out)
    assert not out.exists()

    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    frame.loc[3, "rle_mask"] = "1 100000"
    frame.to_parquet(table)
    with pytest.raises(DataError, match=r"row 3 \(image_id=d.png\).*past the end"):
        convert_table_to_folders(table, images, out, DatasetConfig())
    assert not out.exists()


def test_table_ids_sharing_a_mask_name_are_refused(toy_datasets) -> None:
    table, images = toy_datasets.table()
    Image.fromarray(toy_datasets.pairs[0].image).save(images / "a.jpg")
    frame = pd.read_parquet(table)
    frame.loc[len(frame)] = {"image_id": "a.jpg", "class_id": "smoke", "rle_mask": ""}
    frame.to_parquet(table)
    out = toy_datasets.root / "out"
    with pytest.raises(
        DataError, match=r"Duplicate image id a: a.png and a.jpg would share the mask file masks/a.png"
    ):
        convert_table_to_folders(table, images, out, DatasetConfig())
    assert not out.exists()


# --- the shared reference datasets -----------------------------------------------------------------


@pytest.mark.shared
def test_smoke_ht_tables_load_with_the_seed_config(smoke_ht_config_path: Path) -> None:
    dataset = load_config(smoke_ht_config_path).dataset
    train = load_samples(dataset.train_dataframe, dataset.data_folder, dataset, require_masks=True)
    test = load_samples(dataset.test_dataframe, dataset.data_folder_test, dataset, require_masks=False)
    assert (len(train), len(test)) == (64, 49)
    for sample in train + test:
        height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
        assert sample.load_mask(height, width).any(), sample.image_id
    sample = train[0]
    height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
    assert decodes_more_plausibly_in(sample.rles, height, width, "F") is None
    assert decodes_more_plausibly_in(sample.rles, height, width, "C") == "F"


@pytest.mark.shared
def test_smoke5k_folders_pair_up(smoke5k_root: Path) -> None:
    samples = samples_from_folders(smoke5k_root)
    assert len(samples) == 5058
    sample = next(s for s in samples if s.image_id == "train/6_3351.jpg")  # the one all-smoke mask
    image = sample.load_image()
    assert sample.load_mask(*image.shape[:2]).all()
    assert rle_encode(sample.load_mask(*image.shape[:2])) == f"1 {image.shape[0] * image.shape[1]}"


def test_convert_output_converts_back_checks_and_trains_from_the_command_line(toy_datasets, tmp_path) -> None:
    """`smokeseg convert my_folders/ out/`, then `convert out/ back/` and `train out/experiment.yaml`."""
    out, back = tmp_path / "out", tmp_path / "back"
    runner = CliRunner()
    for arguments in (
        ["convert", str(toy_datasets.folders()), str(out)],
        ["convert", str(out), str(back)],
        ["data", "check", str(out / "experiment.yaml")],
        ["train", str(out / "experiment.yaml"), "--output-dir", str(tmp_path / "run"), "--no-progress"]
        + [
            f"--set={override}"
            for override in (
                *TINY,
                "architecture.pretrained=false",
                "training.epochs=1",
                "dataset.validation_size=0.5",
            )
        ],
    ):
        result = runner.invoke(app, arguments)
        assert result.exit_code == 0, f"{arguments[:2]}: {result.output}{result.exception!r}"
    assert sorted(path.name for path in (back / "masks/train").iterdir()) == [
        f"{pair.stem}.png" for pair in toy_datasets.pairs
    ]
    assert (tmp_path / "run/fold0/checkpoint.ckpt").is_file()


def test_a_truncated_png_is_a_data_error_when_only_its_size_is_read(tmp_path: Path) -> None:
    """image_size reads EXIF, which makes Pillow decode a PNG to its end: a cut file must still be named."""
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"Image cut.png is truncated or corrupt"):
        image_size(path.read_bytes(), "cut.png")
