"""The JSON shapes of the API: request bodies and responses, documented in the OpenAPI schema at /docs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from smokeseg.service.datasets import S3Options

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Health(BaseModel):
    status: str = "ok"
    version: str
    models_loaded: list[str]
    jobs_running: int
    jobs_queued: int


class Box(BaseModel):
    """A smoke region: x1 and y1 exclusive, in the image's own pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    area: int
    mean_probability: float


class ImageScore(BaseModel):
    """The per-image fields of ``smokeseg predict``, plus any requested images (base64)."""

    image_id: str
    height: int
    width: int
    smoke: bool = Field(description="the verdict: a region above the threshold of at least the minimum size")
    confidence: float
    smoke_fraction: float = Field(description="share of pixels above the threshold")
    probability_max: float
    probability_mean: float
    threshold: float
    boxes: list[Box]
    rle_mask: str = Field(description="the predicted mask, run-length encoded (order: rle_order)")
    images: dict[str, str] = Field(
        default_factory=dict, description="requested images by name (masks: PNG, overlays: JPEG), base64"
    )


class PredictResponse(BaseModel):
    model: str
    rle_order: str
    predictions: list[ImageScore]


class DatasetImport(BaseModel):
    """Import from a server path (inside the allowed roots), an https:// URL or an s3:// URL."""

    name: str = Field(pattern=NAME_PATTERN)
    source: str = Field(examples=["s3://bucket/smoke-ht/", "https://example.org/smoke.zip", "/data/smoke"])
    s3: S3Options | None = Field(
        None, description="endpoint and credentials for this import only; never stored"
    )


class SplitSummary(BaseModel):
    name: str
    images: int
    with_masks: int
    empty_masks: int
    mean_smoke_fraction: float | None
    smoke_share_histogram: list[int] | None = Field(
        None,
        description="images per tenth of smoke share, 0-10% to 90-100% (none: imported before it was kept)",
    )
    common_sizes: list[dict[str, int]]
    problems: int


class DatasetSummary(BaseModel):
    splits: list[SplitSummary]
    problems: list[str]
    notes: list[str]


class Dataset(BaseModel):
    id: str
    name: str
    source: str
    created_at: datetime
    summary: DatasetSummary


class DatasetDetail(Dataset):
    dataset_config: dict[str, Any] = Field(description="the dataset section experiments train with")


class ExperimentCreate(BaseModel):
    """A dataset plus a config: Hydrogen Torch YAML text, section fields, or both (fields win).

    Dataset paths come from the dataset; the other dataset keys (folds, validation_size, ...) may be set.
    ``architecture.init_from: "experiment:<id>"`` starts from the weights of a succeeded experiment.
    """

    name: str = Field(pattern=NAME_PATTERN)
    dataset_id: str
    config_yaml: str | None = None
    config: dict[str, dict[str, Any]] = Field(
        default_factory=dict, examples=[{"training": {"epochs": 2}, "architecture": {"pretrained": False}}]
    )


class Experiment(BaseModel):
    id: str
    name: str
    dataset_id: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    metrics: dict[str, Any] = Field(description="metrics.json of the run: per fold, once a fold finishes")


class FoldDetail(BaseModel):
    fold: str
    metrics: dict[str, Any]
    charts: dict[str, Any] = Field(description="charts.json: series name -> {step, value}")
    log: list[str]
    validation_predictions: list[dict[str, Any]] = Field(
        description="per validation image: id, IoU, Dice, loss, verdict, false regions (no masks)"
    )


class ExperimentDetail(Experiment):
    config_yaml: str
    started_from: str | None = Field(
        description="id of the experiment whose weights this one started from (architecture.init_from)"
    )
    folds: list[FoldDetail]
    report_url: str | None
    package_url: str | None


class Comparison(BaseModel):
    experiments: list[Experiment]
    metrics: dict[str, dict[str, Any]] = Field(description="metric -> experiment id -> value")
    config_differences: dict[str, dict[str, Any]] = Field(
        description="config key (section.key) -> experiment id -> value, only keys that differ"
    )
