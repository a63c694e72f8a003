"""``smokeseg predict``: score images into a Hydrogen Torch-format table, plus optional per-image files.

The output folder holds ``predictions.parquet`` (or ``.csv``) and, on request, ``masks/<name>.png``
(0/255), ``probabilities/<name>.png`` (probability x 255) and ``overlays/<name>.jpg`` (mask tinted and
outlined, each smoke region boxed), where ``<name>`` is the image id less its extension, or the whole
id where two ids share that stem (``image.bmp`` and ``image.tiff`` write ``masks/image.bmp.png`` and
``masks/image.tiff.png``). Every file is written atomically and the table last, so a table on disk
means a finished run. An image that cannot be read gets a row with its ``error`` (and a
logged error); the others are still scored.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from smokeseg.data.formats import Sample, safe_relative_name
from smokeseg.data.images import encode_png, max_image_pixels
from smokeseg.errors import DataError, SmokesegError
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.scoring import Prediction, failed_row, prediction_row, write_table
from smokeseg.report.html import PREDICTED_COLOR
from smokeseg.report.overlay import overlay_mask
from smokeseg.storage import ensure_writable_folder, reporting_write_errors, write_bytes_atomic

logger = logging.getLogger(__name__)

TABLE_STEM = "predictions"
TableFormat = Literal["parquet", "csv"]
# Types of the columns failed rows leave empty, so that a table of failures alone keeps them: sizes stay
# integers (nullable) rather than turning into floats.
_COLUMN_TYPES = {
    "height": "Int64",
    "width": "Int64",
    "smoke_fraction": "float64",
    "probability_max": "float64",
    "probability_mean": "float64",
    "confidence": "float64",
}
_JPEG_QUALITY = 90

ImageEncoder = Callable[[Prediction, np.ndarray, dict[str, Any]], bytes]


def _overlay_jpeg(prediction: Prediction, mask: np.ndarray, row: dict[str, Any]) -> bytes:
    """The mask over the photo, and a box around each region that made the verdict."""
    image = overlay_mask(prediction.image, mask, PREDICTED_COLOR)
    thickness = max(2, min(mask.shape) // 300)
    for x0, y0, x1, y1, *_ in row["boxes"]:
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), PREDICTED_COLOR, thickness)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return buffer.getvalue()


# Optional per-image outputs: name (also the subfolder) -> (file suffix, encoder).
IMAGE_OUTPUTS: dict[str, tuple[str, ImageEncoder]] = {
    "masks": (".png", lambda prediction, mask, row: encode_png(mask)),
    "probabilities": (
        ".png",
        lambda prediction, mask, row: encode_png(np.rint(prediction.probabilities * 255).astype(np.uint8)),
    ),
    "overlays": (".jpg", _overlay_jpeg),
}


@dataclass(frozen=True)
class PredictionRun:
    table: Path
    rows: pd.DataFrame

    @property
    def images(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> int:
        return int(self.rows["error"].notna().sum())

    @property
    def with_smoke(self) -> int:
        return int(self.rows["smoke"].eq(True).sum()) if "smoke" in self.rows else 0


def predict(
    predictor: Predictor,
    samples: Sequence[Sample],
    output_dir: str | Path,
    table_format: TableFormat = "parquet",
    image_outputs: Collection[str] = (),
    threshold: float | None = None,
    min_region_pixels: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PredictionRun:
    """Score ``samples`` into ``output_dir``; ``progress(done, total)`` is called after each image.

    ``image_outputs``: names from ``IMAGE_OUTPUTS``. ``threshold`` defaults to the model's
    ``prediction.probability_threshold``; ``min_region_pixels`` to the verdict rule's default. An output
    folder that cannot be written (read-only, full) is an OutputError before any scoring, and a write
    that fails later is one too.
    """
    unknown = set(image_outputs) - IMAGE_OUTPUTS.keys()
    if unknown:
        raise SmokesegError(f"Unknown image outputs {sorted(unknown)}: choose from {sorted(IMAGE_OUTPUTS)}.")
    output_dir = Path(output_dir)
    names = output_names(samples, output_dir) if image_outputs else {}
    ensure_writable_folder(output_dir)
    max_image_pixels()  # a wrong SMOKESEG_MAX_IMAGE_PIXELS stops the run here, not in every row
    threshold = predictor.threshold if threshold is None else threshold
    rows: list[dict[str, Any]] = []

    def finished(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress(len(rows), len(samples))

    def failed(sample: Sample, error: SmokesegError) -> None:
        logger.error("Not scored: %s", error)  # every SmokesegError names its file
        finished(failed_row(sample, str(error)))

    for prediction in predictor.predict_samples(samples, on_error=failed):
        row = prediction_row(
            prediction, threshold, predictor.config.dataset.rle_order, min_region_pixels=min_region_pixels
        ) | {"error": None}
        mask = prediction.probabilities > threshold
        for name in image_outputs:
            suffix, encode = IMAGE_OUTPUTS[name]
            target = output_dir / name / f"{names[prediction.sample.image_id]}{suffix}"
            with reporting_write_errors(output_dir):
                write_bytes_atomic(target, encode(prediction, mask, row))
        finished(row)

    order = {sample.image_id: index for index, sample in enumerate(samples)}
    rows.sort(key=lambda row: order[row["image_id"]])
    frame = pd.DataFrame(rows)
    frame = frame.astype({column: kind for column, kind in _COLUMN_TYPES.items() if column in frame})
    table = output_dir / f"{TABLE_STEM}.{table_format}"
    with reporting_write_errors(output_dir):
        return PredictionRun(table, write_table(frame, table))


def output_names(samples: Sequence[Sample], output_dir: Path) -> dict[str, str]:
    """Each image id's per-image file name, less suffix: the id less its extension, or the whole id where
    another id has the same stem, so that no image's files overwrite another's. Names that point outside
    ``output_dir``, or that still collide, are a DataError before any scoring."""
    ids = {sample.image_id: safe_relative_name(sample.image_id, str(output_dir)) for sample in samples}
    stems = {image_id: PurePosixPath(name).with_suffix("").as_posix() for image_id, name in ids.items()}
    shared = {stem for stem, count in Counter(stems.values()).items() if count > 1}
    owners: dict[str, str] = {}
    for image_id, stem in stems.items():
        name = ids[image_id] if stem in shared else stem
        if name in owners:
            raise DataError(
                f"Images {owners[name]} and {image_id} would both write masks/{name}.png (and the other "
                "per-image files). Rename one of them."
            )
        owners[name] = image_id
    return {image_id: name for name, image_id in owners.items()}
