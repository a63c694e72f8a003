"""Shared fixtures."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smokeseg.data.rle import rle_encode

# --- data I/O: tiny generated datasets in every supported shape (test_rle, test_formats, test_check) ---

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclass(frozen=True)
class ToyPair:
    """An image file name, its pixels, and its true mask."""

    name: str
    image: np.ndarray
    mask: np.ndarray

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def ellipse_mask(
    height: int, width: int, centre: tuple[float, float], radii: tuple[float, float]
) -> np.ndarray:
    """A smoke-like compact blob."""
    rows, cols = np.ogrid[:height, :width]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1


@pytest.fixture
def toy_pairs() -> list[ToyPair]:
    """Non-square sizes (so a wrong RLE order shows), a square one, an empty and a full mask."""
    rng = np.random.default_rng(0)
    specs = [
        ("a.png", 24, 40, ellipse_mask(24, 40, (10, 25), (6, 11))),
        ("b.png", 31, 17, ellipse_mask(31, 17, (20, 5), (9, 4)) | ellipse_mask(31, 17, (4, 14), (2, 2))),
        ("c.png", 16, 16, np.zeros((16, 16), bool)),
        ("d.png", 9, 33, np.ones((9, 33), bool)),
    ]
    return [
        ToyPair(name, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mask)
        for name, height, width, mask in specs
    ]


class ToyDatasets:
    """Writes the same toy pairs in each dataset shape smokeseg reads, under ``root``."""

    def __init__(self, root: Path, pairs: list[ToyPair]) -> None:
        self.root = root
        self.pairs = pairs

    def images(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for pair in self.pairs:
            Image.fromarray(pair.image).save(folder / pair.name)
        return folder

    def folders(self, name: str = "folders", sub: str = "train") -> Path:
        """``name/images/<sub>/X.png`` with ``name/masks/<sub>/X.png`` (0/255)."""
        root = self.root / name
        self.images(root / "images" / sub)
        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
        for pair in self.pairs:
            Image.fromarray(pair.mask.astype(np.uint8) * 255).save(root / "masks" / sub / f"{pair.stem}.png")
        return root

    def frame(self, cells: str = "plain") -> pd.DataFrame:
        """The Hydrogen Torch table: ``plain`` strings, ``lists`` (``[[rle]]``), or ``rows`` (each mask
        split over two rows, plus a verbatim repeated row)."""
        rows = []
        for pair in self.pairs:
            rle = rle_encode(pair.mask)
            if cells == "plain":
                rows.append({"image_id": pair.name, "class_id": "smoke", "rle_mask": rle})
            elif cells == "lists":
                rows.append(
                    {"image_id": pair.name, "class_id": [["smoke"]], "rle_mask": [[rle]] if rle else []}
                )
            elif cells == "rows":
                top, bottom = pair.mask.copy(), pair.mask.copy()
                top[pair.mask.shape[0] // 2 :] = False
                bottom[: pair.mask.shape[0] // 2] = False
                for part in (top, bottom, top):
                    rows.append({"image_id": pair.name, "class_id": "smoke", "rle_mask": rle_encode(part)})
            else:
                raise ValueError(cells)
        return pd.DataFrame(rows)

    def table(self, name: str = "table", fmt: str = "pq", cells: str = "plain") -> tuple[Path, Path]:
        """``(table path, image folder)``: ``name/train.<fmt>`` beside ``name/images/``."""
        root = self.root / name
        images = self.images(root / "images")
        path = root / f"train.{fmt}"
        frame = self.frame(cells)
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return path, images

    def zip(self, folder: Path, inside: str = "") -> Path:
        """``folder.zip`` beside ``folder`` with its contents, each member under ``inside/`` when given."""
        target = folder.with_suffix(".zip")
        with zipfile.ZipFile(target, "w") as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    archive.write(path, (Path(inside) / path.relative_to(folder)).as_posix())
        return target


@pytest.fixture
def toy_datasets(tmp_path: Path, toy_pairs: list[ToyPair]) -> ToyDatasets:
    return ToyDatasets(tmp_path, toy_pairs)


@pytest.fixture
def smoke_ht_config_path() -> Path:
    path = SHARED_DATASETS / "smoke-ht" / "smoke_segmentation.yaml"
    if not path.is_file():
        pytest.skip(f"needs the shared smoke-ht dataset at {path.parent}, which is not beside this checkout")
    return path


@pytest.fixture
def smoke5k_root() -> Path:
    path = SHARED_DATASETS / "smoke5k"
    if not (path / "images").is_dir():
        pytest.skip(f"needs the shared smoke5k dataset at {path}, which is not beside this checkout")
    return path


# --- images too large to decode (data, predict, score.py) -------------------------------------------


def png_claiming(width: int, height: int) -> bytes:
    """A 16x16 gray PNG whose header claims ``width`` x ``height``: a reader that decodes it before checking
    its size fails on truncated data (or allocates the claimed size) instead of refusing it as too large."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[start + 17 : start + 21] = zlib.crc32(bytes(data[start : start + 17])).to_bytes(4, "big")
    return bytes(data)


# --- output folders that cannot take the outputs (predict, score.py) ---------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``mount(free_bytes=None, read_only=False)``: a fresh small tmpfs with about ``free_bytes`` left
    (None: all of its 256 KB), or mounted read-only. Root bypasses file permissions, so only a real
    file system shows a full or read-only disk; where mounting is not allowed (not root, no
    CAP_SYS_ADMIN, not Linux) the test is skipped."""
    mounted: list[Path] = []

    def mount(free_bytes: int | None = None, read_only: bool = False) -> Path:
        target = tmp_path / f"mount{len(mounted)}"
        target.mkdir()
        options = "size=256k" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip() or 'mount failed'})")
        mounted.append(target)
        if free_bytes is not None:
            stats = os.statvfs(target)
            (target / "filler").write_bytes(b"\0" * (stats.f_bavail * stats.f_frsize - free_bytes))
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)
