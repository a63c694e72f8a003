"""The HTTP routes: health and metrics at the root, everything else versioned under /v1."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile as StarletteUpload

from smokeseg import __version__
from smokeseg.data.formats import safe_relative_name
from smokeseg.service import datasets as dataset_store
from smokeseg.service import experiments as experiment_store
from smokeseg.service.context import DEFAULT_MODEL, Service, get_service
from smokeseg.service.errors import NotFoundError, TooLargeError, UnsupportedError, megabytes
from smokeseg.service.registry import FINAL_STATES, QUEUED, RUNNING, datasets, experiments
from smokeseg.service.schemas import (
    NAME_PATTERN,
    Comparison,
    Dataset,
    DatasetDetail,
    DatasetImport,
    Experiment,
    ExperimentCreate,
    ExperimentDetail,
    Health,
    PredictResponse,
)
from smokeseg.service.scoring import ImageOutput, ScoreItem, check_image

ServiceDep = Annotated[Service, Depends(get_service)]


def _existing_experiment(experiment_id: str, service: ServiceDep) -> dict[str, Any]:
    """The experiment's row, or a 404 before any response (streamed ones included) starts."""
    return experiment_store.require_experiment(service.registry, experiment_id)


ExperimentDep = Annotated[dict[str, Any], Depends(_existing_experiment)]
system = APIRouter(tags=["system"])
v1 = APIRouter(prefix="/v1")

_IMAGE_BODY_TYPES = ("image/", "application/octet-stream")
_EVENT_POLL_SECONDS = 0.5


@system.get("/healthz", response_model=Health)
async def healthz(service: ServiceDep) -> Health:
    """Liveness and a glance at the load: models in memory, jobs training and waiting."""
    running, queued = await asyncio.to_thread(_job_counts, service)
    return Health(
        version=__version__,
        models_loaded=list(service.models.workers),
        jobs_running=running,
        jobs_queued=queued,
    )


def _job_counts(service: Service) -> tuple[int, int]:
    running, queued = (len(service.registry.find(experiments, status=status)) for status in (RUNNING, QUEUED))
    return running, queued


@system.get("/metrics", response_class=Response)
def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    for status, count in zip((RUNNING, QUEUED), _job_counts(service), strict=True):
        service.telemetry.jobs.labels(status).set(count)
    return Response(generate_latest(service.telemetry.registry), media_type=CONTENT_TYPE_LATEST)


# --- scoring ----------------------------------------------------------------------------------------

_PREDICT_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["files"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


async def _read_images(request: Request, service: Service, name: str) -> list[tuple[str, bytes]]:
    """A predict request's images: multipart ``files``, or the body itself (``Content-Type: image/...``)."""
    settings = service.settings
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=settings.max_images_per_request, max_fields=0) as form:
            uploads = [item for item in form.getlist("files") if isinstance(item, StarletteUpload)]
            images = [
                (upload.filename or f"image{index}", await upload.read())
                for index, upload in enumerate(uploads)
            ]
    elif content_type.startswith(_IMAGE_BODY_TYPES):
        images = [(name, await request.body())]
    else:
        raise UnsupportedError(
            f"Send images as multipart/form-data field 'files', or one image as the body with Content-Type "
            f"image/jpeg (or image/png, ...); got {content_type or 'no Content-Type'}."
        )
    if not images or not any(data for _, data in images):
        raise UnsupportedError("The request holds no image: send multipart field 'files' or an image body.")
    if sum(len(data) for _, data in images) > settings.max_predict_bytes:
        raise TooLargeError(
            f"The images are over this server's limit of {megabytes(settings.max_predict_bytes)} "
            "per predict request; send fewer per request."
        )
    for image_name, data in images:
        check_image(image_name, data, settings.max_image_pixels)
    return images


@v1.post("/predict", response_model=PredictResponse, tags=["scoring"], openapi_extra=_PREDICT_BODY)
async def predict(
    request: Request,
    service: ServiceDep,
    model: Annotated[
        str, Query(description="'default' (--model) or a trained experiment's id")
    ] = DEFAULT_MODEL,
    threshold: Annotated[float | None, Query(ge=0, le=1, description="default: the model's")] = None,
    images: Annotated[list[ImageOutput], Query(description="masks: PNG, overlays: JPEG, ...")] = [],  # noqa: B006
    name: Annotated[str, Query(description="image id for a raw-body image")] = "image",
) -> PredictResponse:
    """Score one or more images: the same fields per image as ``smokeseg predict``."""
    uploaded = await _read_images(request, service, name)
    worker = await service.models.get(model)
    futures = [
        worker.submit(ScoreItem(image_name, data, threshold, tuple(output.value for output in images)))
        for image_name, data in uploaded
    ]
    rows = await asyncio.gather(*futures, return_exceptions=True)
    failure = next((row for row in rows if isinstance(row, BaseException)), None)
    if failure is not None:
        raise failure
    return PredictResponse(
        model=model,
        rle_order=worker.predictor.config.dataset.rle_order,
        predictions=[_image_score(row) for row in rows if not isinstance(row, BaseException)],
    )


def _image_score(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("x0", "y0", "x1", "y1", "area", "mean_probability")
    return {**row, "boxes": [dict(zip(keys, box, strict=True)) for box in row["boxes"]]}


# --- datasets ---------------------------------------------------------------------------------------


@v1.post("/datasets", response_model=DatasetDetail, status_code=201, tags=["datasets"])
def upload_dataset(
    service: ServiceDep,
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    file: Annotated[UploadFile, File(description="a Hydrogen Torch zip, or an images/ + masks/ zip")],
) -> dict[str, Any]:
    """Import a dataset from an uploaded zip."""
    workdir = service.settings.workdir
    (workdir / "uploads").mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=workdir / "uploads"))
    try:
        archive = folder / safe_relative_name(Path(file.filename or "upload.zip").name, "the upload")
        with open(archive, "wb") as out:
            shutil.copyfileobj(file.file, out)
        if not zipfile.is_zipfile(archive):
            raise UnsupportedError(f"{archive.name} is not a zip archive; upload a .zip of the dataset.")
        return dataset_store.import_dataset(
            service.registry,
            workdir,
            f"upload:{archive.name}",
            name,
            service.settings.import_limits,
            fetched=archive,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@v1.post("/datasets/import", response_model=DatasetDetail, status_code=201, tags=["datasets"])
def import_dataset(body: DatasetImport, service: ServiceDep) -> dict[str, Any]:
    """Import a dataset from a server path (inside the allowed roots), an https:// or an s3:// URL."""
    return dataset_store.import_dataset(
        service.registry,
        service.settings.workdir,
        body.source,
        body.name,
        service.settings.import_limits,
        body.s3,
    )


@v1.get("/datasets", response_model=list[Dataset], tags=["datasets"])
def list_datasets(service: ServiceDep) -> list[dict[str, Any]]:
    return service.registry.find(datasets)


@v1.get("/datasets/{dataset_id}", response_model=DatasetDetail, tags=["datasets"])
def show_dataset(dataset_id: str, service: ServiceDep) -> dict[str, Any]:
    """The `data check` summary (counts, sizes, smoke share, problems) and the dataset section."""
    row = service.registry.get(datasets, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}.")
    return row


@v1.delete("/datasets/{dataset_id}", status_code=204, tags=["datasets"])
def delete_dataset(dataset_id: str, service: ServiceDep) -> Response:
    dataset_store.delete_dataset(service.registry, dataset_id)
    return Response(status_code=204)


# --- experiments ------------------------------------------------------------------------------------


def _experiment(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "metrics": experiment_store.run_metrics(row)}


@v1.post("/experiments", response_model=Experiment, status_code=201, tags=["experiments"])
def create_experiment(body: ExperimentCreate, service: ServiceDep) -> dict[str, Any]:
    """Validate the config (422 names each bad key and its allowed values) and queue the training."""
    row = experiment_store.create_experiment(
        service.registry, service.settings.workdir, body.name, body.dataset_id, body.config_yaml, body.config
    )
    service.runner.wake()
    return _experiment(row)


@v1.get("/experiments", response_model=list[Experiment], tags=["experiments"])
def list_experiments(service: ServiceDep) -> list[dict[str, Any]]:
    return [_experiment(row) for row in service.registry.find(experiments)]


@v1.get("/experiments/{experiment_id}", response_model=ExperimentDetail, tags=["experiments"])
def show_experiment(experiment_id: str, row: ExperimentDep) -> dict[str, Any]:
    """Config, metrics, per fold charts data, log and validation predictions, and the report's URL."""
    run_dir = Path(row["run_dir"])
    base = f"/v1/experiments/{experiment_id}"
    has_package = (run_dir / experiment_store.SCORING_PACKAGE_NAME).is_dir()
    return {
        **_experiment(row),
        "started_from": experiment_store.started_from(row),
        "folds": [experiment_store.fold_detail(fold) for fold in experiment_store.fold_dirs(row)],
        "report_url": f"{base}/report" if (run_dir / experiment_store.REPORT_NAME).is_file() else None,
        "package_url": f"{base}/package" if has_package else None,
    }


@v1.post("/experiments/{experiment_id}/cancel", response_model=Experiment, tags=["experiments"])
def cancel_experiment(experiment_id: str, service: ServiceDep) -> dict[str, Any]:
    service.runner.cancel(experiment_id)
    return _experiment(experiment_store.require_experiment(service.registry, experiment_id))


@v1.delete("/experiments/{experiment_id}", status_code=204, tags=["experiments"])
async def delete_experiment(experiment_id: str, service: ServiceDep) -> Response:
    await asyncio.to_thread(experiment_store.delete_experiment, service.registry, experiment_id)
    service.models.forget(experiment_id)
    return Response(status_code=204)


@v1.get("/experiments/{experiment_id}/package", response_class=FileResponse, tags=["experiments"])
def download_package(row: ExperimentDep) -> FileResponse:
    """The scoring package (ONNX model + score.py) as a zip."""
    archive = experiment_store.package_archive(row)
    return FileResponse(archive, media_type="application/zip", filename=f"{row['name']}-scoring-package.zip")


@v1.get("/experiments/{experiment_id}/report", response_class=FileResponse, tags=["experiments"])
def report(row: ExperimentDep) -> FileResponse:
    """The self-contained HTML report training wrote: metrics, charts, validation gallery."""
    path = Path(row["run_dir"]) / experiment_store.REPORT_NAME
    if not path.is_file():
        raise NotFoundError(f"Experiment {row['id']} has no report yet: training writes it when it succeeds.")
    return FileResponse(path, media_type="text/html")


@v1.get("/experiments/{experiment_id}/events", response_class=EventSourceResponse, tags=["experiments"])
async def experiment_events(
    experiment_id: str, service: ServiceDep, _row: ExperimentDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events until the job ends: ``status`` on each change, ``log`` per new log line,
    ``charts`` (the fold's charts.json) whenever an evaluation adds points, then ``end``."""
    lines_seen: dict[str, int] = {}
    charts_seen: dict[str, Any] = {}
    status = None
    while True:
        row = await asyncio.to_thread(service.registry.get, experiments, experiment_id)
        if row is None:
            yield ServerSentEvent(event="end", data={"status": "deleted"})
            return
        for fold_dir in experiment_store.fold_dirs(row):
            fold = fold_dir.name.removeprefix("fold")
            lines = experiment_store.read_lines(fold_dir / experiment_store.LOG_NAME)
            for line in lines[lines_seen.get(fold, 0) :]:
                yield ServerSentEvent(event="log", data={"fold": fold, "line": line})
            lines_seen[fold] = len(lines)
            charts = experiment_store.read_json(fold_dir / experiment_store.CHARTS_NAME)
            if charts and charts != charts_seen.get(fold):
                charts_seen[fold] = charts
                yield ServerSentEvent(event="charts", data={"fold": fold, "charts": charts})
        if row["status"] != status:
            status = row["status"]
            yield ServerSentEvent(event="status", data={"status": status, "error": row["error"]})
        if status in FINAL_STATES:
            yield ServerSentEvent(
                event="end", data={"status": status, "metrics": experiment_store.run_metrics(row)}
            )
            return
        await asyncio.sleep(_EVENT_POLL_SECONDS)


@v1.get("/compare", response_model=Comparison, tags=["experiments"])
def compare(
    service: ServiceDep,
    ids: Annotated[list[str], Query(min_length=2, description="two or more experiment ids")],
) -> dict[str, Any]:
    """Metrics side by side and the config keys that differ."""
    rows = [experiment_store.require_experiment(service.registry, experiment_id) for experiment_id in ids]
    return {"experiments": [_experiment(row) for row in rows], **experiment_store.compare(rows)}
