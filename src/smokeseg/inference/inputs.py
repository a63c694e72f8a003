"""What a user hands ``smokeseg predict``, resolved to samples: image files, folders, globs, tables, zips.

Reading goes through ``data.formats`` (stores, tables, samples), so any table or archive that trains
also predicts. Image ids are what the output names rows and files by: a file's name, a path relative to
the folder, glob root or archive given, or a table's own ``image_id``. Samples carry no masks: predict
writes one schema whatever the input (scoring against masks is ``evaluate``'s job).
"""

from __future__ import annotations

import dataclasses
import glob
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import (
    IMAGE_SUFFIXES,
    TABLE_SUFFIXES,
    FolderStore,
    ImageStore,
    Sample,
    collect_samples,
    open_store,
    split_zip_path,
)
from smokeseg.errors import DataError

_GLOB_CHARACTERS = frozenset("*?[")
# How many missing images an error message lists before summarising the rest as a count.
_PROBLEMS_SHOWN = 10

DataFolder = str | Path | None


def collect_inputs(paths: Sequence[str | Path], data_folder: DataFolder = None) -> list[Sample]:
    """Every image the inputs name, in input order; an image named twice is scored once.

    ``data_folder`` holds the images of a table (default: the table's own folder, or the subfolder of
    it that holds them, such as the images/ that ``convert`` writes). An input that
    names no image, or two different images that would share an id, is a DataError.
    """
    samples: list[Sample] = []
    for path in paths:
        found = _resolve(str(path), data_folder)
        if not found:
            raise DataError(
                f"{path} holds no images (looked for {', '.join(IMAGE_SUFFIXES)}). Check the path, or quote "
                "a glob ('frames/**/*.jpg') so that smokeseg, not the shell, expands it."
            )
        samples.extend(found)
    return _unique(samples)


def _resolve(path: str, data_folder: DataFolder) -> list[Sample]:
    for matches, resolve in _RESOLVERS:
        if matches(path):
            return resolve(path, data_folder)
    what = "is a file of a kind smokeseg cannot read" if Path(path).exists() else "does not exist"
    raise DataError(
        f"{path} {what}. Give image files ({', '.join(IMAGE_SUFFIXES)}), folders of them, a quoted glob, "
        f"a Hydrogen Torch table ({', '.join(TABLE_SUFFIXES)}) or a .zip."
    )


def _is_glob(path: str) -> bool:
    return not Path(path).exists() and not _GLOB_CHARACTERS.isdisjoint(path)


def _is_table(path: str) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES


def _is_image_name(name: str) -> bool:
    """Hidden files are skipped: macOS leaves ``._X.jpg`` metadata files beside images on copied drives."""
    pure = PurePosixPath(name)
    return pure.suffix.lower() in IMAGE_SUFFIXES and not pure.name.startswith(".")


def _is_image_file(path: str) -> bool:
    return Path(path).is_file() and _is_image_name(path)


def _image_sample(store: ImageStore, name: str) -> Sample:
    return Sample(image_id=name, store=store, group=name, source=store.describe(name))


def _images_in(store: ImageStore) -> list[Sample]:
    return [_image_sample(store, name) for name in store.names() if _is_image_name(name)]


def _from_image_file(path: str, data_folder: DataFolder) -> list[Sample]:
    file = Path(path)
    return [_image_sample(FolderStore(file.parent), file.name)]


def _from_folder(path: str, data_folder: DataFolder) -> list[Sample]:
    return _images_in(FolderStore(path))


def _from_glob(pattern: str, data_folder: DataFolder) -> list[Sample]:
    """Image files get ids relative to the pattern's fixed leading folder, so ``cam*/0001.jpg`` keeps
    ``cam1/0001.jpg`` and ``cam2/0001.jpg`` apart; other matches resolve as inputs of their own."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if not _GLOB_CHARACTERS.isdisjoint(part))
    root = FolderStore(Path(*parts[:fixed]) if fixed else Path("."))
    samples = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        if _is_image_file(match):
            samples.append(_image_sample(root, Path(match).relative_to(root.root).as_posix()))
        elif Path(match).is_dir() or _is_table(match) or split_zip_path(match):
            samples.extend(_resolve(match, data_folder))
    return samples


def _from_zip(path: str, data_folder: DataFolder) -> list[Sample]:
    """A zip holding a table is a dataset (the table names its images); otherwise, every image in it."""
    store = open_store(path)
    if any(_is_table(name) for name in store.names()):
        return _dataset_samples(path, data_folder)
    return _images_in(store)


def _dataset_samples(path: str, data_folder: DataFolder) -> list[Sample]:
    """The images a table names, read as training reads it; a missing image stops the run, since it
    usually means the wrong data folder, which would otherwise fill the output with errors."""
    samples, problems = collect_samples(path, data_folder, DatasetConfig(), require_masks=False)
    if problems:
        shown = "\n  ".join(problems[:_PROBLEMS_SHOWN])
        more = len(problems) - _PROBLEMS_SHOWN
        raise DataError(
            f"{len(problems)} image(s) named in {path} cannot be used:\n  {shown}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nPass --data-folder with the folder (or .zip) that holds the table's images."
        )
    return [dataclasses.replace(s, rles=None, mask_name=None, mask_store=None) for s in samples]


_RESOLVERS: list[tuple[Callable[[str], bool], Callable[[str, DataFolder], list[Sample]]]] = [
    (_is_glob, _from_glob),
    (_is_table, _dataset_samples),
    (lambda path: split_zip_path(path) is not None, _from_zip),
    (lambda path: Path(path).is_dir(), _from_folder),
    (_is_image_file, _from_image_file),
]


def _unique(samples: list[Sample]) -> list[Sample]:
    """Keep the first mention of each file; refuse two files that would share an id (a table row)."""
    kept: dict[str, Sample] = {}
    by_id: dict[str, Sample] = {}
    for sample in samples:
        if sample.image_location in kept:
            continue
        if sample.image_id in by_id:
            raise DataError(
                f"{by_id[sample.image_id].image_location} and {sample.image_location} would both be row "
                f"{sample.image_id!r} of the predictions table: they were given as separate inputs. Pass the "
                "folder that holds both (ids are then paths relative to it), or rename one of them."
            )
        kept[sample.image_location] = by_id[sample.image_id] = sample
    return list(kept.values())
