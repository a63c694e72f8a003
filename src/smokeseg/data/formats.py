"""Every dataset shape users bring, loaded to one list of samples.

Supported shapes, each from a folder or a ``.zip`` (read in place, never extracted):

* a Hydrogen Torch table (Parquet or CSV: image file name, class name, RLE mask) plus the folder of
  images it names; cells may be plain strings or Hydrogen Torch's nested lists, and several rows for
  one image are merged;
* an ``images/`` + ``masks/`` folder pair, ``images/<sub>/X.jpg`` with ``masks/<sub>/X.png``;
* a folder or zip holding exactly one table and the images it names.

Bad samples (a missing image, a malformed RLE, an image without a mask) are found up front and either
stop the run with a message naming each file, or, with ``dataset.on_bad_sample: skip``, are left out
with a warning.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
import pyarrow
import yaml

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.images import encode_png, image_size, read_image, read_mask
from smokeseg.data.rle import Order, cell_strings, rle_decode, rle_encode, validate_rle
from smokeseg.errors import ConfigError, DataError
from smokeseg.storage import atomic_path, write_bytes_atomic, write_text_atomic

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
TABLE_SUFFIXES = (".pq", ".parquet", ".csv")
# The config `convert` writes beside a table it made.
EXPERIMENT_CONFIG_NAME = "experiment.yaml"
# Samples whose ids are probed to find which folder of an archive a table's images sit in.
_ROOT_PROBE_SIZE = 20
# How many problems an error message lists before summarising the rest as a count.
_PROBLEMS_SHOWN = 10
# Decoding releases the GIL and reading is I/O, so a few more threads than cores keeps them busy.
_THREADS = min(16, 2 * (os.cpu_count() or 1))

T = TypeVar("T")
R = TypeVar("R")


# --- image stores ---------------------------------------------------------------------------------


def safe_relative_name(name: str, container: str) -> str:
    """``name`` as a normalised relative POSIX path, refusing any that could reach outside ``container``.

    Image ids come from user tables and member names from user archives; neither may name
    ``/etc/passwd`` or ``../../x`` (zip path traversal), since converters write files under these names.
    """
    text = str(name).replace("\\", "/")
    path = PurePosixPath(text)
    if not text.strip() or path.is_absolute() or ".." in path.parts or PureWindowsPath(text).drive:
        raise DataError(
            f"Refusing {name!r} in {container}: it points outside it (an absolute path or '..'). "
            "Image names must be paths relative to the data folder or archive; fix the table or re-create "
            "the archive with relative paths."
        )
    return path.as_posix()


class ImageStore(ABC):
    """Files addressed by relative POSIX names: a folder, or a folder inside a zip."""

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The file's bytes; DataError naming it if it is absent or unreadable."""

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def names(self) -> list[str]:
        """Every file below the store, sorted."""

    @abstractmethod
    def child(self, folder: str) -> ImageStore:
        """The store of a subfolder."""

    @abstractmethod
    def subfolders(self) -> list[str]:
        """The names of the folders directly below the store, sorted."""

    @abstractmethod
    def __str__(self) -> str:
        """Where the store is, as a user would type it: ``/data/images`` or ``/data/set.zip/images``."""

    def describe(self, name: str) -> str:
        """The full location of ``name``, for messages."""
        return f"{self}/{name}"


class FolderStore(ImageStore):
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / safe_relative_name(name, str(self.root))

    def read(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise DataError(
                f"{path} does not exist. Check the name and the dataset paths in the config."
            ) from None
        except OSError as error:
            raise DataError(f"{path} cannot be read: {error}") from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def names(self) -> list[str]:
        return sorted(
            path.relative_to(self.root).as_posix() for path in self.root.rglob("*") if path.is_file()
        )

    def child(self, folder: str) -> FolderStore:
        return FolderStore(self._path(folder))

    def subfolders(self) -> list[str]:
        # Not names(): beside a table given by path may lie a whole disk of unrelated files.
        return sorted(path.name for path in self.root.iterdir() if path.is_dir())

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"FolderStore({str(self.root)!r})"


class ZipStore(ImageStore):
    """Members of a zip below ``prefix``, read without extracting.

    The archive is opened lazily and reopened in each process, so a store survives pickling and
    forking into DataLoader workers (a shared file offset across processes would mix up reads).
    """

    def __init__(self, zip_path: str | Path, prefix: str = "") -> None:
        self.zip_path = Path(zip_path)
        self.prefix = safe_relative_name(prefix, str(self.zip_path)) + "/" if prefix.strip("/") else ""
        self._members = self._index()
        self._archive: zipfile.ZipFile | None = None
        self._archive_pid = -1
        self._lock = threading.Lock()

    def _index(self) -> dict[str, zipfile.ZipInfo]:
        try:
            with zipfile.ZipFile(self.zip_path) as archive:
                infos = archive.infolist()
        except FileNotFoundError:
            raise DataError(
                f"Archive {self.zip_path} does not exist. Check the dataset paths in the config."
            ) from None
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(
                f"Archive {self.zip_path} is not a readable zip file ({error}). Re-create it."
            ) from None
        members = {}
        for info in infos:
            name = safe_relative_name(info.filename, f"archive {self.zip_path} (zip path traversal)")
            if info.is_dir() or name.startswith("__MACOSX/") or not name.startswith(self.prefix):
                continue
            members[name[len(self.prefix) :]] = info
        return members

    def _open_archive(self) -> zipfile.ZipFile:
        with self._lock:
            if self._archive is None or self._archive_pid != os.getpid():
                self._archive = zipfile.ZipFile(self.zip_path)
                self._archive_pid = os.getpid()
            return self._archive

    def read(self, name: str) -> bytes:
        info = self._members.get(safe_relative_name(name, str(self)))
        if info is None:
            raise DataError(
                f"{self.describe(name)} is not in the archive. "
                "Check the name and the dataset paths in the config."
            )
        try:
            with self._open_archive().open(info) as member:
                return member.read()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise DataError(
                f"{self.describe(name)} cannot be read from the archive ({error}). Re-create it."
            ) from None

    def exists(self, name: str) -> bool:
        return safe_relative_name(name, str(self)) in self._members

    def names(self) -> list[str]:
        return sorted(self._members)

    def child(self, folder: str) -> ZipStore:
        return ZipStore(self.zip_path, self.prefix + safe_relative_name(folder, str(self)))

    def subfolders(self) -> list[str]:
        return sorted({name.split("/")[0] for name in self._members if "/" in name})

    def __str__(self) -> str:
        return f"{self.zip_path}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        return f"ZipStore({str(self.zip_path)!r}, prefix={self.prefix!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_archive=None, _archive_pid=-1, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def check_table_exists(table: Path | None, key: str, fix: str) -> None:
    """A ConfigError, before any data is read, where the table ``dataset.<key>`` names is not there (a
    table inside a .zip counts as there); ``fix`` says what to do."""
    if table is not None and not table.exists() and split_zip_path(table) is None:
        raise ConfigError(f"dataset.{key} {table} does not exist. {fix}")


def split_zip_path(path: str | Path) -> tuple[Path, str] | None:
    """``(archive, inner path)`` for a path at or inside a ``.zip`` file, such as ``set.zip/images``."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.suffix.lower() == ".zip" and candidate.is_file():
            inner = path.relative_to(candidate).as_posix()
            return candidate, "" if inner == "." else inner
    return None


def open_store(path: str | Path) -> ImageStore:
    """A folder, a ``.zip``, or a folder inside a zip (``archive.zip/images/train``)."""
    path = Path(path)
    if path.is_dir():
        return FolderStore(path)
    located = split_zip_path(path)
    if located is None:
        what = "is a file, not a folder or a .zip" if path.exists() else "does not exist"
        raise DataError(
            f"{path} {what}. Expected a folder of images, a .zip, or a folder inside a .zip such as "
            "archive.zip/images; check the dataset paths in the config."
        )
    archive, inner = located
    store = ZipStore(archive, inner)
    if inner and not store.names():
        top = sorted({name.split("/")[0] for name in ZipStore(archive).names()})
        raise DataError(
            f"Archive {archive} holds nothing under {inner}/. Its top level holds: {_listing(top)}."
        )
    return store


# --- samples --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image and where its mask comes from: RLE strings from a table, or a mask file.

    ``rles`` is None when the table has no mask column (an unlabeled test set); ``()`` is an empty mask.
    ``source`` says where the sample was listed, for error messages.
    """

    image_id: str
    store: ImageStore = field(repr=False)
    group: str
    rles: tuple[str, ...] | None = field(default=None, repr=False)
    rle_order: Order = "F"
    mask_name: str | None = None
    mask_store: ImageStore | None = field(default=None, repr=False)
    source: str = ""

    @property
    def has_mask(self) -> bool:
        return self.rles is not None or self.mask_name is not None

    @property
    def image_location(self) -> str:
        return self.store.describe(self.image_id)

    def load_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB."""
        return read_image(self.store.read(self.image_id), self.image_location)

    def load_mask(self, height: int, width: int) -> np.ndarray | None:
        """HxW bool for an image of that size; None if the sample has no mask information."""
        if self.rles is not None:
            return rle_decode(self.rles, height, width, self.rle_order, where=self.source)
        if self.mask_name is None or self.mask_store is None:
            return None
        mask_location = self.mask_store.describe(self.mask_name)
        mask = read_mask(self.mask_store.read(self.mask_name), mask_location)
        if mask.shape != (height, width):
            raise DataError(
                f"Mask {mask_location} is {mask.shape[1]}x{mask.shape[0]} but its image "
                f"{self.image_location} is {width}x{height}. A mask must have its image's size: re-export it."
            )
        return mask

    def load_true_mask(self, height: int, width: int) -> np.ndarray:
        """``load_mask`` for a sample that must be labelled (loaded with ``require_masks``, or checked
        with ``has_mask``): a sample without mask information is an error, not an empty mask."""
        mask = self.load_mask(height, width)
        if mask is None:
            raise DataError(f"{self.source or self.image_location} has no mask, but a mask is needed here.")
        return mask


def read_table(path: str | Path) -> pd.DataFrame:
    """A Parquet (``.pq``, ``.parquet``) or CSV table, also one inside a zip (``set.zip/train.pq``).

    CSV cells are read as text, so ids such as ``001`` or ``NA`` keep their spelling; empty cells are NaN.
    """
    path = Path(path)
    if path.is_file():
        return _parse_table(path, path.suffix, str(path))
    located = split_zip_path(path)
    if located is None or not located[1]:
        raise DataError(
            f"Table {path} does not exist. Check dataset.train_dataframe / test_dataframe (relative paths "
            "are taken from the config file's folder)."
        )
    archive, inner = located
    return _parse_table(io.BytesIO(ZipStore(archive).read(inner)), path.suffix, str(path))


def _parse_table(source: Path | io.BytesIO, suffix: str, label: str) -> pd.DataFrame:
    suffix = suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"Table {label}: cannot read {suffix or 'a file without extension'}; use Parquet (.pq, .parquet) "
            "or CSV (.csv)."
        )
    try:
        if suffix == ".csv":
            return pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
        return pd.read_parquet(source)
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise DataError(f"Table {label} cannot be read as {kind}: {error}. Re-export it.") from None


def samples_from_table(
    frame: pd.DataFrame, store: ImageStore, dataset_cfg: DatasetConfig, table_name: str, require_masks: bool
) -> list[Sample]:
    """One sample per image id, in first-appearance order; the RLEs of repeated rows are unioned.

    A table without the mask column is valid unless ``require_masks`` (an unlabeled test table). The
    group (for fold splits) is the ``group_fold_column`` value, else the image id.
    """
    _require_column(frame, dataset_cfg.image_column, "dataset.image_column", table_name, "image file names")
    has_masks = dataset_cfg.rle_mask_column in frame.columns
    if require_masks:
        _require_column(
            frame, dataset_cfg.rle_mask_column, "dataset.rle_mask_column", table_name, "RLE masks"
        )
    group_column = dataset_cfg.group_fold_column
    if group_column and group_column not in frame.columns:
        if require_masks:
            _require_column(frame, group_column, "dataset.group_fold_column", table_name, "fold groups")
        group_column = None
    _require_single_class(frame, dataset_cfg.class_name_column, table_name)

    rows = len(frame)
    image_cells = frame[dataset_cfg.image_column].tolist()
    mask_cells = frame[dataset_cfg.rle_mask_column].tolist() if has_masks else [None] * rows
    group_cells = frame[group_column].tolist() if group_column else [None] * rows
    merged: dict[str, _MergedRows] = {}
    for row, (image_cell, mask_cell, group_cell) in enumerate(
        zip(image_cells, mask_cells, group_cells, strict=True)
    ):
        image_id = _image_id(image_cell, f"{table_name} row {row}", dataset_cfg.image_column)
        group = image_id if _is_missing(group_cell) else str(group_cell)
        rles = cell_strings(mask_cell, f"{table_name} row {row} (image_id={image_id})")
        entry = merged.setdefault(image_id, _MergedRows(group=group))
        if entry.group != group:
            raise DataError(
                f"{table_name}: image {image_id} appears in rows {entry.rows[0]} and {row} with different "
                f"{group_column} values ({entry.group!r}, {group!r}). One image must be in one group."
            )
        entry.rows.append(row)
        entry.rles.extend(rles)
    return [
        Sample(
            image_id=image_id,
            store=store,
            group=entry.group,
            rles=tuple(entry.rles) if has_masks else None,
            rle_order=dataset_cfg.rle_order,
            source=f"{table_name} {_rows_label(entry.rows)} (image_id={image_id})",
        )
        for image_id, entry in merged.items()
    ]


@dataclass
class _MergedRows:
    group: str
    rows: list[int] = field(default_factory=list)
    rles: list[str] = field(default_factory=list)


def samples_from_folders(
    root: str | Path | ImageStore, on_bad_sample: Literal["error", "skip"] = "error"
) -> list[Sample]:
    """Pair ``images/**/X.<image suffix>`` with ``masks/**/X.<image suffix>`` at the same sub-path."""
    store = root if isinstance(root, ImageStore) else open_store(root)
    samples, problems = _folder_samples(store, require_masks=True)
    _apply_bad_sample_policy(problems, on_bad_sample)
    return samples


def _folder_samples(store: ImageStore, require_masks: bool) -> tuple[list[Sample], list[str]]:
    images, masks = store.child("images"), store.child("masks")
    image_names = _by_image_key(images, "image")
    if not image_names:
        raise DataError(f"No images under {images} (looked for {', '.join(IMAGE_SUFFIXES)}).")
    mask_names = _by_image_key(masks, "mask")
    samples, problems = [], []
    for key, image_name in image_names.items():
        mask_name = mask_names.get(key)
        if mask_name is None and require_masks:
            problems.append(
                f"Image {images.describe(image_name)} has no mask {masks.describe(key + '.png')}."
            )
            continue
        samples.append(
            Sample(
                image_id=image_name,
                store=images,
                group=image_name,
                mask_name=mask_name,
                mask_store=masks if mask_name else None,
                source=images.describe(image_name),
            )
        )
    orphans = len(mask_names.keys() - image_names.keys())
    if orphans:
        logger.warning("%d masks under %s have no image and are ignored.", orphans, masks)
    return samples, problems


def _by_image_key(store: ImageStore, kind: str) -> dict[str, str]:
    """Image files keyed by sub-path without suffix (``train/X``), the key an image shares with its mask.

    Hidden files are skipped: macOS leaves ``._X.jpg`` metadata files beside images on copied drives.
    """
    by_key: dict[str, str] = {}
    for name in store.names():
        path = PurePosixPath(name)
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        key = path.with_suffix("").as_posix()
        if key in by_key:
            raise DataError(
                f"Duplicate image id {key}: {store.describe(by_key[key])} and {store.describe(name)} would "
                f"share one {'mask' if kind == 'image' else 'image'}. Rename or remove one of the {kind}s."
            )
        by_key[key] = name
    return by_key


def collect_samples(
    table_or_folder: str | Path,
    data_folder: str | Path | None,
    dataset_cfg: DatasetConfig,
    require_masks: bool,
) -> tuple[list[Sample], list[str]]:
    """The usable samples, and one message per bad one left out (missing image, bad RLE, no mask).

    Problems that make the whole dataset unusable (no such table, a missing column) raise DataError.
    """
    path = Path(table_or_folder)
    if path.suffix.lower() in TABLE_SUFFIXES:
        frame = read_table(path)
        store: ImageStore | None
        if data_folder is not None:
            store = open_store(data_folder)
        else:
            store = _find_image_root(open_store(path.parent), ".", _table_ids(frame, dataset_cfg))
        if store is None:
            raise DataError(
                f"None of the images named in {path} are in its folder or a subfolder of it: give the "
                "folder (or .zip) that holds them (--data-folder, or dataset.data_folder in a config)."
            )
        return _screen(samples_from_table(frame, store, dataset_cfg, path.name, require_masks))

    container = _unwrap_single_folder(open_store(path))
    top_level = set(container.subfolders())
    tables = [name for name in container.names() if PurePosixPath(name).suffix.lower() in TABLE_SUFFIXES]
    # `convert` writes one table beside images/: that folder is the table's dataset, not loose images.
    holds_one_table = len(tables) == 1 and "/" not in tables[0]
    if _is_image_mask_pair(container) or (
        "images" in top_level and not require_masks and not holds_one_table
    ):
        return _folder_samples(container, require_masks)
    if len(tables) != 1:
        found = f"{len(tables)} tables ({_listing(tables)})" if tables else "no table"
        raise DataError(
            f"{path} is not a dataset smokeseg can read: expected a Parquet/CSV table, a folder or .zip "
            "with images/ and masks/ subfolders (images/X.jpg with masks/X.png), or one holding exactly one "
            f"table and its images. It holds {found}; top level: {_listing(sorted(top_level))}."
        )
    table = tables[0]
    frame = _parse_table(
        io.BytesIO(container.read(table)), PurePosixPath(table).suffix, container.describe(table)
    )
    store = _find_image_root(
        container, PurePosixPath(table).parent.as_posix(), _table_ids(frame, dataset_cfg)
    )
    if store is None and data_folder is not None:
        store = open_store(data_folder)
    if store is None:
        raise DataError(
            f"None of the images named in {container.describe(table)} are beside it, and no data folder "
            "was given: set dataset.data_folder to the folder (or .zip) that holds them."
        )
    return _screen(samples_from_table(frame, store, dataset_cfg, PurePosixPath(table).name, require_masks))


def load_samples(
    table_or_folder: str | Path,
    data_folder: str | Path | None,
    dataset_cfg: DatasetConfig,
    require_masks: bool,
) -> list[Sample]:
    """Load any supported dataset shape; bad samples raise or are skipped with a warning (on_bad_sample)."""
    samples, problems = collect_samples(table_or_folder, data_folder, dataset_cfg, require_masks)
    _apply_bad_sample_policy(problems, dataset_cfg.on_bad_sample)
    if not samples:
        raise DataError(f"{table_or_folder} holds no usable samples.")
    return samples


def validation_samples_by_id(
    dataset_cfg: DatasetConfig, require_masks: bool
) -> tuple[dict[str, Sample], list[str]]:
    """Every sample a fold of ``dataset_cfg`` may have validated on, by image id (as a fold's validation
    predictions name them; ``DatasetConfig.validation_tables``), and one message per bad one left out:
    the caller says which of its ids are missing."""
    by_id: dict[str, Sample] = {}
    problems: list[str] = []
    for table in dataset_cfg.validation_tables():
        samples, table_problems = collect_samples(
            table.table, table.data_folder, table.settings, require_masks
        )
        by_id.update((sample.image_id, sample) for sample in samples)
        problems += table_problems
    return by_id, problems


def _screen(samples: list[Sample]) -> tuple[list[Sample], list[str]]:
    """Keep the samples whose image exists and whose RLE is well-formed; a message for each other one."""
    kept, problems = [], []
    for sample in samples:
        if not sample.store.exists(sample.image_id):
            problems.append(f"Image {sample.image_id} ({sample.source}) is not in {sample.store}.")
            continue
        try:
            validate_rle(sample.rles, sample.source)
        except DataError as error:
            problems.append(str(error))
            continue
        kept.append(sample)
    return kept, problems


def _apply_bad_sample_policy(problems: list[str], on_bad_sample: Literal["error", "skip"]) -> None:
    if not problems:
        return
    if on_bad_sample == "skip":
        for problem in problems:
            logger.warning("Skipping a bad sample: %s", problem)
        return
    shown = "\n  ".join(problems[:_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - _PROBLEMS_SHOWN} more" if len(problems) > _PROBLEMS_SHOWN else ""
    raise DataError(
        f"{len(problems)} bad sample(s):\n  {shown}{more}\n"
        "Fix them, or set dataset.on_bad_sample: skip to leave them out with a warning."
    )


def _unwrap_single_folder(store: ImageStore) -> ImageStore:
    """Zipping a folder often wraps everything in one top-level folder; look inside it."""
    names = [name for name in store.names() if not name.startswith(".")]
    tops = {name.split("/")[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names) and tops.isdisjoint({"images", "masks"}):
        return store.child(tops.pop())
    return store


def _is_image_mask_pair(container: ImageStore) -> bool:
    return {"images", "masks"} <= set(container.subfolders())


def _table_ids(frame: pd.DataFrame, dataset_cfg: DatasetConfig) -> list[Any]:
    return frame[dataset_cfg.image_column].tolist() if dataset_cfg.image_column in frame.columns else []


def _find_image_root(container: ImageStore, table_folder: str, ids: Sequence[Any]) -> ImageStore | None:
    """The folder beside a table, or one of its subfolders, in which the table's first ids exist."""
    base = container if table_folder == "." else container.child(table_folder)
    subfolders = base.subfolders()
    probe = [str(image_id) for image_id in ids[:_ROOT_PROBE_SIZE] if not _is_missing(image_id)]
    best, best_hits = None, 0
    for candidate in [base, *(base.child(folder) for folder in subfolders)]:
        hits = sum(_exists_safely(candidate, image_id) for image_id in probe)
        if hits > best_hits:
            best, best_hits = candidate, hits
    return best


def _exists_safely(store: ImageStore, name: str) -> bool:
    """Existence while probing: an unsafe id is reported later, against its table row."""
    try:
        return store.exists(name)
    except DataError:
        return False


def _require_column(frame: pd.DataFrame, column: str, config_key: str, table_name: str, holds: str) -> None:
    if column not in frame.columns:
        raise DataError(
            f"{table_name} has no column {column!r} ({config_key}). Columns found: "
            f"{', '.join(map(str, frame.columns)) or 'none'}. "
            f"Set {config_key} to the column holding the {holds}."
        )


def _require_single_class(frame: pd.DataFrame, column: str, table_name: str) -> None:
    """smokeseg trains one class; silently merging the masks of several would train the wrong thing."""
    if column not in frame.columns:
        return
    names = {
        name
        for row, cell in enumerate(frame[column])
        for name in cell_strings(cell, f"{table_name} row {row}")
    }
    if len(names) > 1:
        raise DataError(
            f"{table_name} has masks for several classes in column {column!r}: {_listing(sorted(names))}. "
            f"smokeseg trains one class (smoke): keep only the rows of the smoke class."
        )


def _image_id(cell: object, where: str, column: str) -> str:
    if _is_missing(cell) or not str(cell).strip():
        raise DataError(f"{where}: the {column!r} cell is empty; every row must name an image file.")
    return str(cell)


def _is_missing(value: Any) -> bool:
    """Whether a table cell (of whatever type the table holds) is empty: None, NaN, NA or NaT."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _rows_label(rows: list[int]) -> str:
    if len(rows) == 1:
        return f"row {rows[0]}"
    return "rows " + ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")


def _listing(items: Sequence[str], limit: int = 10) -> str:
    if not items:
        return "nothing"
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --- conversion -----------------------------------------------------------------------------------


def convert_dataset(
    source: str | Path, out_dir: str | Path, data_folder: str | Path | None = None, rle_order: Order = "F"
) -> list[Path]:
    """images/ + masks/ folders to a table (with its experiment YAML); any table dataset to folders.

    So ``convert``'s own output converts back as it is. ``rle_order`` is the order the table is written
    in, or read in. Returns what was written.
    """
    if Path(source).suffix.lower() not in TABLE_SUFFIXES:
        container = _unwrap_single_folder(open_store(source))
        if _is_image_mask_pair(container):
            table = convert_folders_to_table(container, out_dir, rle_order)
            return [table, table.parent / EXPERIMENT_CONFIG_NAME]
    dataset = DatasetConfig(rle_order=rle_order)
    return [convert_table_to_folders(source, data_folder, out_dir, dataset)]


def convert_folders_to_table(
    root: str | Path | ImageStore, out_dir: str | Path, rle_order: Order = "F"
) -> Path:
    """Write ``out_dir/train.pq`` (image_id, class_id, rle_mask), copy the images to ``out_dir/images``,
    and write ``out_dir/experiment.yaml``, a config that trains on them (``smokeseg train`` takes it).

    Image ids are paths relative to ``out_dir/images``, so the result loads with
    ``data_folder: images``. Every mask is encoded before anything is written, the table after the
    images and the config last: a failure never leaves a table or config that looks complete.
    """
    samples = samples_from_folders(root)
    out_dir = Path(out_dir)

    def encode(sample: Sample) -> str:
        height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
        return rle_encode(sample.load_true_mask(height, width), rle_order)

    rles = parallel_map(encode, samples)
    _copy_images(samples, out_dir / "images")
    defaults = DatasetConfig()
    frame = pd.DataFrame(
        {
            defaults.image_column: [sample.image_id for sample in samples],
            defaults.class_name_column: "smoke",
            defaults.rle_mask_column: rles,
        }
    )
    table = out_dir / "train.pq"
    with atomic_path(table) as temporary:
        frame.to_parquet(temporary, index=False)
    _write_experiment_config(out_dir, table.name, "images", rle_order)
    return table


def _write_experiment_config(out_dir: Path, table: str, images: str, rle_order: Order) -> Path:
    """A minimal Hydrogen Torch config beside the table, with paths relative to it, so the folder moves
    as one; every key it leaves out takes its default (``smokeseg config show`` lists them)."""
    config = {
        "experiment_name": out_dir.resolve().name,
        "dataset": {"train_dataframe": table, "data_folder": images, "rle_order": rle_order},
    }
    text = (
        f"# Written by `smokeseg convert`. Train with: smokeseg train {EXPERIMENT_CONFIG_NAME} (from this "
        f"folder; paths are relative to it).\n{yaml.safe_dump(config, sort_keys=False)}"
    )
    return write_text_atomic(out_dir / EXPERIMENT_CONFIG_NAME, text)


def convert_table_to_folders(
    table: str | Path, data_folder: str | Path | None, out_dir: str | Path, dataset_cfg: DatasetConfig
) -> Path:
    """Write ``out_dir/images/<id>`` (byte copies) and ``out_dir/masks/<id stem>.png`` (0/255).

    Every mask is decoded before anything is written, and masks are written after all images: a
    failure leaves images without masks, which loading reports, never a silently partial dataset.
    """
    samples = load_samples(table, data_folder, dataset_cfg, require_masks=True)
    mask_names = [
        PurePosixPath(safe_relative_name(s.image_id, str(s.store))).with_suffix(".png") for s in samples
    ]
    seen: dict[PurePosixPath, str] = {}
    for sample, mask_name in zip(samples, mask_names, strict=True):
        if mask_name in seen:
            raise DataError(
                f"Duplicate image id {mask_name.with_suffix('')}: {seen[mask_name]} and {sample.image_id} "
                f"would share the mask file masks/{mask_name}. Rename one of the images."
            )
        seen[mask_name] = sample.image_id
    out_dir = Path(out_dir)

    def encode(sample: Sample) -> bytes:
        height, width = image_size(sample.store.read(sample.image_id), sample.image_location)
        return encode_png(sample.load_true_mask(height, width))

    pngs = parallel_map(encode, samples)
    _copy_images(samples, out_dir / "images")
    masks = out_dir / "masks"
    parallel_map(
        lambda pair: write_bytes_atomic(masks / pair[0], pair[1]), list(zip(mask_names, pngs, strict=True))
    )
    return out_dir


def _copy_images(samples: Sequence[Sample], target: Path) -> None:
    """Byte-for-byte copies: re-encoding would change the pixels the masks were drawn on."""

    def copy(sample: Sample) -> None:
        write_bytes_atomic(
            target / safe_relative_name(sample.image_id, str(target)), sample.store.read(sample.image_id)
        )

    parallel_map(copy, samples)


def parallel_map(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``map`` in threads, in order; the first failure cancels what has not started and is raised."""
    with ThreadPoolExecutor(_THREADS) as pool:
        try:
            return list(pool.map(function, items))
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
