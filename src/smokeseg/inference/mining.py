"""``smokeseg mine-negatives``: smoke-free crops of labelled frames, written as a Hydrogen Torch dataset.

Each frame is brought to the scale the model scores it at (``image.long_side`` / ``image.max_side`` for a
native-resolution model, as ``Predictor`` does), scored there (the hard rule only), and its windows are
cut at that scale, so training can use the crops as they are. The output folder holds ``images/*.png``
(lossless), ``negatives.csv`` (image_id, class_id, an empty rle_mask, and where each crop came from:
source_image, x, y, probability_max) and ``negatives.json`` (model, scale, rule, counts). It is written
under a temporary name and renamed when complete, so a folder with the real name is always whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smokeseg.data.dataset import fit_with_mask
from smokeseg.data.formats import TABLE_SUFFIXES, Sample, split_zip_path
from smokeseg.data.images import encode_png
from smokeseg.data.negatives import MINING_RULES, Window, WindowSpec, frame_location
from smokeseg.errors import DataError, OutputError, SmokesegError
from smokeseg.inference.evaluate import labelled_samples
from smokeseg.inference.predictor import Predictor
from smokeseg.storage import atomic_folder, ensure_writable_folder, reporting_write_errors

logger = logging.getLogger(__name__)

TABLE_NAME = "negatives.csv"
SUMMARY_NAME = "negatives.json"
IMAGES_FOLDER = "images"
COLUMNS = ["image_id", "class_id", "rle_mask", "source_image", "x", "y", "probability_max"]
CLASS_NAME = "smoke"


@dataclass(frozen=True)
class MiningRun:
    """Where the dataset went, and what it holds: ``summary`` is ``negatives.json``'s content."""

    folder: Path
    summary: dict[str, Any]

    @property
    def crops(self) -> int:
        return int(self.summary["crops"])


def mine_negatives(
    model: str | Path,
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    rule: str = "hard",
    spec: WindowSpec = WindowSpec(),
    seed: int = 0,
    data_folder: str | Path | Sequence[str | Path] | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> MiningRun:
    """Cut ``spec.count`` smoke-free crops per frame of ``sources`` into the new folder ``out``.

    ``data_folder``: the images of every table, or one folder per source in order (sources from
    different datasets keep their images apart); ``None`` finds them beside each table.
    ``rule``: a name from ``MINING_RULES``; the hard rule takes ``spec.threshold``, or where that is None
    the model's own. A frame that
    cannot be read, or whose mask does not fit it, is skipped with a warning naming it; a source
    without masks is a DataError, since its frames cannot be known to be smoke-free.
    ``progress(done, total)`` is called after each frame.
    """
    if rule not in MINING_RULES:
        raise SmokesegError(f"Unknown mining rule {rule!r}: choose from {', '.join(MINING_RULES)}.")
    threshold = spec.threshold
    if threshold is not None and not MINING_RULES[rule].scored:
        raise SmokesegError(f"The {rule} rule scores nothing, so a threshold has no effect: leave it out.")
    if threshold is not None and not 0 <= threshold <= 1:
        raise SmokesegError(f"The mining threshold is a probability between 0 and 1; got {threshold}.")
    out = Path(out)
    _check_sources(sources)
    folders = _folders_of(sources, data_folder)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputError(
            f"{out} already exists: give a new --out folder (mining never overwrites a dataset)."
        )
    ensure_writable_folder(out.parent)
    predictor = Predictor.from_path(model, device)
    if threshold is None:
        spec = replace(spec, threshold=predictor.threshold)
    dataset_cfg = predictor.config.dataset
    samples = [
        sample
        for source, folder in zip(sources, folders, strict=True)
        for sample in labelled_samples(Path(source), folder, dataset_cfg, "mine-negatives")
    ]
    image_cfg = predictor.config.image
    fit = image_cfg.native_fit() if image_cfg.resolution == "native" else None
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    with reporting_write_errors(out.parent), atomic_folder(out) as folder:
        (folder / IMAGES_FOLDER).mkdir()
        for index, sample in enumerate(samples):
            try:
                image = predictor.load_image(sample)
                view, mask = fit_with_mask(
                    image,
                    sample.load_true_mask(*image.shape[:2]),
                    (fit[0], fit[0]) if fit else None,
                    bool(fit and fit[1]),
                )
            except SmokesegError as error:
                logger.warning("Not mined: %s", error)  # every SmokesegError names its file
                skipped.append(sample.image_location)
            else:
                windows = _windows(predictor, rule, view, mask, spec, np.random.default_rng([seed, index]))
                rows.extend(_write_crops(folder / IMAGES_FOLDER, index, sample, view, windows, spec.size))
            if progress is not None:
                progress(index + 1, len(samples))
        summary = {
            "model": str(Path(model).resolve()),
            "sources": [str(Path(source).resolve()) for source in sources],
            "data_folders": [None if folder is None else str(Path(folder).resolve()) for folder in folders],
            "rule": rule,
            "long_side": image_cfg.long_side if fit else None,
            "max_side": image_cfg.max_side if fit else None,
            "size": spec.size,
            "margin": spec.margin,
            "count_per_frame": spec.count,
            "threshold": spec.threshold if MINING_RULES[rule].scored else None,
            "seed": seed,
            "frames": len(samples) - len(skipped),
            "frames_skipped": skipped,
            "frames_with_crops": len({row["source_image"] for row in rows}),
            "crops": len(rows),
        }
        pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / TABLE_NAME, index=False)
        (folder / SUMMARY_NAME).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return MiningRun(out, summary)


def _check_sources(sources: Sequence[str | Path]) -> None:
    """A missing source fails before the model loads, in the words of this command."""
    if not sources:
        raise DataError("Give at least one SOURCE of labelled frames.")
    for source in sources:
        if not Path(source).exists() and split_zip_path(source) is None:
            raise DataError(
                f"{source} does not exist. Give labelled frames: a Hydrogen Torch table "
                f"({', '.join(TABLE_SUFFIXES)}; its images beside it or in --data-folder), an images/ + "
                "masks/ folder, or a .zip of either."
            )


def _folders_of(
    sources: Sequence[str | Path], data_folder: str | Path | Sequence[str | Path] | None
) -> list[str | Path | None]:
    """Each source's image folder: the one given for all, or the one given for it by position."""
    if data_folder is None or isinstance(data_folder, str | Path):
        return [data_folder] * len(sources)
    folders: list[str | Path | None] = list(data_folder) or [None]
    if len(folders) == 1:
        return folders * len(sources)
    if len(folders) != len(sources):
        raise DataError(
            f"{len(folders)} data folders for {len(sources)} sources: give one --data-folder for "
            "every source (in the same order), or one for all of them."
        )
    return folders


def _windows(
    predictor: Predictor,
    rule: str,
    view: np.ndarray,
    mask: np.ndarray,
    spec: WindowSpec,
    rng: np.random.Generator,
) -> list[Window]:
    """The frame's windows by ``rule``; a scored rule sees the model's probabilities of ``view``, which
    is already at the model's scale, so the Predictor scores it as it is."""
    mining = MINING_RULES[rule]
    probabilities = predictor.predict_images([view])[0] if mining.scored else None
    return mining.choose(mask, probabilities, spec, rng)


def _write_crops(
    images: Path, index: int, sample: Sample, view: np.ndarray, windows: list[Window], size: int
) -> list[dict[str, Any]]:
    """Write each window's crop as PNG; its table row. Names start with the frame's position, so frames
    of the same name from different folders or sources stay apart."""
    rows = []
    for window in windows:
        name = f"{index:05d}_{Path(sample.image_id).stem}_y{window.y}_x{window.x}.png"
        crop = view[window.y : window.y + size, window.x : window.x + size]
        (images / name).write_bytes(encode_png(np.ascontiguousarray(crop)))
        rows.append(
            {
                "image_id": name,
                "class_id": CLASS_NAME,
                "rle_mask": "",
                "source_image": frame_location(sample.image_location),
                "x": window.x,
                "y": window.y,
                "probability_max": window.probability_max,
            }
        )
    return rows
