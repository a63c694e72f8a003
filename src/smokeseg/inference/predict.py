"""``smokeseg predict``: score images into a Hydrogen Torch-format table, plus optional per-image files.

The output folder holds ``predictions.parquet`` (or ``.csv``) and, on request, ``masks/<id>.png``
(0/255), ``probabilities/<id>.png`` (probability x 255) and ``overlays/<id>.jpg`` (mask tinted and
outlined, each smoke region boxed). Every file is written atomically and the table last, so a table
on disk means a finished run. An image that cannot be read gets a row with its ``error`` (and a
logged error); the others are still scored.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from smokeseg.data.formats import Sample, safe_relative_name
from smokeseg.data.images import encode_png
from smokeseg.errors import SmokesegError
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.scoring import Prediction, failed_row, prediction_row, write_table
from smokeseg.report.html import PREDICTED_COLOR
from smokeseg.report.overlay import overlay_mask
from smokeseg.storage import write_bytes_atomic

logger = logging.getLogger(__name__)

TABLE_STEM = "predictions"
TableFormat = Literal["parquet", "csv"]
# Pixel columns that failed rows leave empty: kept integer (nullable) rather than turned into floats.
_SIZE_COLUMNS = ("height", "width")
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
    ``prediction.probability_threshold``; ``min_region_pixels`` to the verdict rule's default.
    """
    unknown = set(image_outputs) - IMAGE_OUTPUTS.keys()
    if unknown:
        raise SmokesegError(f"Unknown image outputs {sorted(unknown)}: choose from {sorted(IMAGE_OUTPUTS)}.")
    output_dir = Path(output_dir)
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
            write_bytes_atomic(
                _image_output_path(output_dir, name, prediction.sample, suffix), encode(prediction, mask, row)
            )
        finished(row)

    order = {sample.image_id: index for index, sample in enumerate(samples)}
    frame = pd.DataFrame(sorted(rows, key=lambda row: order[row["image_id"]]))
    frame = frame.astype({column: "Int64" for column in _SIZE_COLUMNS if column in frame})
    table = output_dir / f"{TABLE_STEM}.{table_format}"
    return PredictionRun(table, write_table(frame, table))


def _image_output_path(output_dir: Path, folder: str, sample: Sample, suffix: str) -> Path:
    name = PurePosixPath(sample.image_id).with_suffix(suffix).as_posix()
    return output_dir / folder / safe_relative_name(name, str(output_dir / folder))
