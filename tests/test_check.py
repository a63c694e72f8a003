"""``check_dataset``: counts and sizes of a healthy dataset, and every problem of a broken one, by file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig, ExperimentConfig
from smokeseg.data.check import DatasetReport, check_dataset, render_report
from smokeseg.data.rle import rle_encode
from smokeseg.errors import ConfigError


def _config(**dataset: object) -> ExperimentConfig:
    return ExperimentConfig(dataset=DatasetConfig(**dataset))


def _rendered(report: DatasetReport) -> str:
    console = Console(width=200, record=True)
    console.print(render_report(report))
    return console.export_text()


def test_healthy_dataset_is_summarised(toy_datasets, toy_pairs) -> None:
    table, images = toy_datasets.table()
    folders = toy_datasets.folders()
    report = check_dataset(_config(train_dataframe=table, data_folder=images, test_dataframe=folders))
    assert report.problems == [] and report.notes == []
    train, test = report.splits
    assert (train.name, train.images, train.labelled, train.empty_masks) == ("train", 4, 4, 1)
    assert test.images == 4
    assert train.sizes == {(40, 24): 1, (17, 31): 1, (16, 16): 1, (33, 9): 1}
    assert train.mean_smoke_fraction == pytest.approx(np.mean([pair.mask.mean() for pair in toy_pairs]))
    text = _rendered(report)
    assert "16x16 .. 40x24" in text
    assert f"{train.mean_smoke_fraction:.4f}" in text


def test_every_problem_is_listed_by_file(toy_datasets) -> None:
    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    frame.loc[1, "rle_mask"] = "1 99999"  # past the end of b.png
    frame.loc[len(frame)] = {"image_id": "gone.png", "class_id": "smoke", "rle_mask": ""}
    frame.to_parquet(table)
    (images / "a.png").write_bytes(b"\x89PNG broken")
    report = check_dataset(_config(train_dataframe=table, data_folder=images))
    problems = "\n".join(report.problems)
    assert len(report.problems) == 3, problems
    assert "gone.png" in problems
    assert f"{images / 'a.png'} is not an image" in problems
    assert "train.pq row 1 (image_id=b.png)" in problems and "past the end" in problems
    assert report.splits[0].images == 2  # c.png and d.png still checked
    assert "gone.png" in _rendered(report)


def test_unloadable_split_is_a_problem_not_a_crash(toy_datasets) -> None:
    table, images = toy_datasets.table()
    pd.read_parquet(table).drop(columns=["rle_mask"]).to_parquet(table)
    folders = toy_datasets.folders()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(folders / "masks/train/d.png")
    report = check_dataset(_config(train_dataframe=table, data_folder=images, test_dataframe=folders))
    assert len(report.problems) == 2
    assert "train: train.pq has no column 'rle_mask'" in report.problems[0]
    assert "test: Mask" in report.problems[1] and "masks/train/d.png is 3x3" in report.problems[1]


def test_wrong_rle_order_is_noted(toy_datasets) -> None:
    table, images = toy_datasets.table()
    report = check_dataset(_config(train_dataframe=table, data_folder=images, rle_order="C"))
    assert report.notes == [
        f"{table}: RLE order is C but 2 of 3 masks decode far more plausibly as F (stripes instead of "
        "shapes); set dataset.rle_order: F"
    ]
    assert "set dataset.rle_order: F" in _rendered(report)


def test_each_tables_rle_order_is_checked_on_its_own(toy_datasets, toy_pairs) -> None:
    """A row-major test table beside a column-major train table: pooled, their votes would cancel."""
    train, images = toy_datasets.table()
    test = train.with_name("test.pq")
    shaped = toy_pairs[0]  # a.png: big enough to tell the orders apart
    frame = pd.DataFrame([{"image_id": shaped.name, "rle_mask": rle_encode(shaped.mask, "C")}])
    frame.to_parquet(test, index=False)
    config = _config(train_dataframe=train, data_folder=images, test_dataframe=test)
    report = check_dataset(config)
    assert len(report.notes) == 1 and report.notes[0].startswith(f"{test}: RLE order is F")
    assert report.notes[0].endswith("set dataset.test_rle_order: C")
    config.dataset.test_rle_order = "C"
    assert check_dataset(config).notes == []


def test_validation_and_extra_tables_are_checked_too(toy_datasets) -> None:
    """Every table a run reads: a broken image in the extra frames stops training as surely as one in
    the train table."""
    table, images = toy_datasets.table()
    frame = pd.read_parquet(table)
    validation, extra = table.with_name("validation.pq"), table.with_name("extra.pq")
    frame.iloc[:1].to_parquet(validation, index=False)
    frame.iloc[1:].to_parquet(extra, index=False)
    extra_images = images.parent / "extra_images"
    extra_images.mkdir()
    for name in frame["image_id"].iloc[1:]:
        (extra_images / name).write_bytes((images / name).read_bytes())
    (extra_images / frame["image_id"].iloc[1]).write_bytes(b"\x89PNG broken")
    config = _config(
        train_dataframe=table,
        data_folder=images,
        validation_strategy="custom",
        validation_dataframe=validation,
        extra_train_dataframe=extra,
        extra_data_folder=extra_images,
    )
    report = check_dataset(config)
    assert [(split.name, split.images) for split in report.splits] == [
        ("train", 4),
        ("validation", 1),
        ("extra", 2),
    ]
    [problem] = report.problems
    assert problem.startswith(f"extra: Image {extra_images / frame['image_id'].iloc[1]} is not an image")
    assert "extra: Image" in _rendered(report)


@pytest.mark.parametrize(
    ("dataset", "named"),
    [
        ({}, "dataset.train_dataframe"),
        ({"train_dataframe": Path("t.pq"), "validation_strategy": "custom"}, "dataset.validation_dataframe"),
    ],
)
def test_a_table_the_config_needs_but_does_not_name_is_the_training_error(dataset, named) -> None:
    with pytest.raises(ConfigError, match=named):
        check_dataset(_config(**dataset))


@pytest.mark.shared
def test_smoke_ht_checks_clean(smoke_ht_config_path: Path) -> None:
    report = check_dataset(load_config(smoke_ht_config_path))
    assert report.problems == [] and report.notes == []
    assert [(split.images, split.empty_masks) for split in report.splits] == [(64, 0), (49, 0)]
