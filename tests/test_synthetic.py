"""The procedural demo dataset: deterministic, exact masks, and a config that loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smokeseg.config.load import load_config
from smokeseg.data.rle import rle_decode
from smokeseg.data.synthetic import generate_demo_dataset

SIZE = (96, 128)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo"), n_train=20, n_test=7, size=SIZE, seed=0)


def test_same_seed_same_bytes_other_seed_differs(demo: Path, tmp_path: Path) -> None:
    again = generate_demo_dataset(tmp_path / "again", n_train=20, n_test=7, size=SIZE, seed=0)
    other = generate_demo_dataset(tmp_path / "other", n_train=20, n_test=7, size=SIZE, seed=1)
    assert _files(again.parent) == _files(demo.parent)
    assert _files(other.parent)["images/train_000.jpg"] != _files(demo.parent)["images/train_000.jpg"]


def test_config_loads_and_points_at_the_data(demo: Path) -> None:
    config = load_config(demo)
    assert demo.name == "smoke_demo.yaml"
    assert config.dataset.train_dataframe == demo.parent / "train.pq"
    assert config.dataset.test_dataframe == demo.parent / "test.pq"
    assert config.dataset.data_folder == demo.parent / "images"
    assert config.architecture.pretrained is False
    assert config.environment.seed == 0
    assert config.training.batch_size == 8
    assert config.image.image_height % 32 == 0 and config.image.image_width % 32 == 0
    assert "train.pq" in demo.read_text() and str(demo.parent) not in demo.read_text()  # relative paths


@pytest.mark.parametrize(("table", "rows"), [("train.pq", 20), ("test.pq", 7)])
def test_tables_and_masks(demo: Path, table: str, rows: int) -> None:
    frame = pd.read_parquet(demo.parent / table)
    assert list(frame.columns) == ["image_id", "class_id", "rle_mask"]
    assert len(frame) == rows and set(frame["class_id"]) == {"smoke"}
    areas = []
    for image_id, rle in zip(frame["image_id"], frame["rle_mask"], strict=True):
        with Image.open(demo.parent / "images" / image_id) as image:
            assert (image.height, image.width) == SIZE and image.mode == "RGB"
        areas.append(rle_decode(rle, *SIZE, order="F").mean())
    areas = np.asarray(areas)
    assert (areas == 0).sum() == round(rows * 0.15)  # the no-smoke images
    assert areas[areas > 0].min() > 0.005  # every smoke image has a plume worth finding
    assert areas.max() < 0.5
