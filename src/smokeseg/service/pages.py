"""The web pages of ``smokeseg serve``: server-rendered Jinja2 templates over the REST API.

Pages read the registry through the same functions the /v1 routes use and the browser does every
change (import, create, cancel, delete, score) by calling /v1 with fetch, so there is one copy of the
logic. What the API does not yet serve (image tiles, the run's files, the form's schema) is added here
under /ui, read-only, reusing the report's gallery code and the config schema.
"""

from __future__ import annotations

import functools
import io
import json
import types
import typing
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import yaml
from fastapi import APIRouter, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from PIL import Image
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from smokeseg.config.load import PATH_KEYS
from smokeseg.config.schema import DatasetConfig, ExperimentConfig
from smokeseg.data.formats import Sample, collect_samples, safe_relative_name
from smokeseg.errors import SmokesegError
from smokeseg.layout import (
    CHECKPOINT_NAME,
    LAST_CHECKPOINT_NAME,
    TEST_PREDICTIONS_NAME,
    VALIDATION_PREDICTIONS_NAME,
)
from smokeseg.report import html as report_html
from smokeseg.report.overlay import overlay_mask
from smokeseg.service import experiments as experiment_store
from smokeseg.service.api import ServiceDep
from smokeseg.service.auth import (
    LOGIN_PATH,
    LOGOUT_PATH,
    end_session,
    local_target,
    server_token,
    set_session,
    token_matches,
)
from smokeseg.service.context import DEFAULT_MODEL
from smokeseg.service.datasets import smoke_share_histogram
from smokeseg.service.errors import ForbiddenError, NotFoundError
from smokeseg.service.registry import SUCCEEDED, datasets, experiments

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


class PageRoute(APIRoute):
    """A page that fails (no such dataset, a recipe that does not exist) answers with an HTML page
    holding the reason and a way back, instead of the API's JSON, and a page the browser may not see yet
    (``--token``, not signed in) sends it to the sign-in page; /ui data routes keep the JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.path.startswith("/ui/"):
            return handler

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SmokesegError as error:
                from smokeseg.service.app import status_for  # app imports this module

                response = _render(request, "error.html", message=str(error))
                response.status_code = status_for(error)
                return response
            except HTTPException as error:
                if error.status_code != 401 or request.method != "GET":
                    raise
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': here})}", status_code=303)

        return page_handler


pages = APIRouter(include_in_schema=False, route_class=PageRoute)

# The settings people change most, in the order the form shows them (issue P2.6); the rest is YAML.
FORM_FIELDS: tuple[tuple[str, str], ...] = (
    ("architecture", "architecture"),
    ("architecture", "backbone"),
    ("architecture", "pretrained"),
    ("image", "image_height"),
    ("image", "image_width"),
    ("training", "epochs"),
    ("training", "batch_size"),
    ("training", "learning_rate"),
    ("training", "loss_function"),
    ("augmentation", "augmentations_strategy"),
    ("dataset", "validation_strategy"),
    ("dataset", "folds"),
)
GRID_SIZE = 24
HISTOGRAM_SAMPLE = 200  # images decoded for the smoke-share histogram of a dataset imported without it
TILE_WIDTH = 240
RECIPE_FOLDERS = (Path.cwd() / "recipes", HERE.parents[2] / "recipes")


def mount(app: FastAPI) -> None:
    """Add the pages and their static files to the API's app (the hook app.py calls)."""
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")


def _render(request: Request, template: str, **context: Any) -> HTMLResponse:
    page = template.removesuffix(".html")
    signed_in = server_token(request) is not None and page != "login"  # the nav then offers to sign out
    return templates.TemplateResponse(request, template, {"page": page, "signed_in": signed_in, **context})


# --- schema-driven form fields ----------------------------------------------------------------------


def _section_model(section: str) -> type[BaseModel]:
    annotation = ExperimentConfig.model_fields[section].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation


def _choices(annotation: Any) -> list[Any] | None:
    """A Literal's values (also inside Optional or list[...]), else None."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for argument in typing.get_args(annotation):
            found = _choices(argument)
            if found:
                return found
    return None


def _kind(annotation: Any, default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, list):
        return "list"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "str"


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(item, name, None)
            if value is not None:
                bounds[name] = value
    return bounds


def form_fields(values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each form field's label, help, default, allowed values and bounds, all from the config schema."""
    fields = []
    for section, key in FORM_FIELDS:
        info = _section_model(section).model_fields[key]
        default = info.get_default(call_default_factory=True)
        kind = _kind(info.annotation, default)
        value = values.get(section, {}).get(key, default)
        if kind == "list":
            value = ", ".join(str(item) for item in value or [])
        fields.append(
            {
                "section": section,
                "key": key,
                "id": f"f-{section}-{key}",
                "label": f"{section}.{key}",
                "description": info.description or "",
                "default": ", ".join(map(str, default)) if isinstance(default, list) else default,
                "kind": kind,
                "choices": _choices(info.annotation),
                "bounds": _bounds(info),
                "value": value,
            }
        )
    return fields


def _advanced_yaml(config: dict[str, Any]) -> str:
    """The template's config less what the form shows and what the service sets (paths, name)."""
    config = json.loads(json.dumps(config, default=str))
    config.pop("experiment_name", None)
    for section, key in FORM_FIELDS:
        config.get(section, {}).pop(key, None)
    for key in PATH_KEYS:
        config.get("dataset", {}).pop(key, None)
    for key in ("pretrained_weights", "init_from"):
        config.get("architecture", {}).pop(key, None)
    config = {section: values for section, values in config.items() if values}
    return yaml.safe_dump(config, sort_keys=False) if config else ""


def recipes() -> dict[str, Path]:
    """The YAML recipes shipped beside the package (a source checkout), by name."""
    found: dict[str, Path] = {}
    for folder in RECIPE_FOLDERS:
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


# --- pages ------------------------------------------------------------------------------------------


@pages.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/experiments")


@pages.get(LOGIN_PATH, response_class=HTMLResponse)
def login_page(request: Request, target: Annotated[str | None, Query(alias="next")] = None) -> Response:
    if server_token(request) is None:  # nothing to sign in to
        return RedirectResponse(local_target(target), status_code=303)
    return _render(request, "login.html", target=local_target(target))


@pages.post(LOGIN_PATH, response_class=HTMLResponse)
def login(
    request: Request,
    token: Annotated[str, Form()],
    target: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """Check the token once and sign the browser in with a session cookie (``auth.set_session``)."""
    if server_token(request) is None:
        return RedirectResponse(local_target(target), status_code=303)
    try:
        right = token_matches(request, token)
    except HTTPException as throttled:  # too many wrong tokens: the form says so, with the wait
        return _login_refused(request, target, throttled.detail, throttled.status_code, throttled.headers)
    if not right:
        message = "That is not the token this server was started with (its --token or SMOKESEG_TOKEN)."
        return _login_refused(request, target, message, 401)
    response = RedirectResponse(local_target(target), status_code=303)
    set_session(request, response)
    return response


def _login_refused(
    request: Request, target: str | None, error: str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    """The sign-in form again, with why it refused."""
    refused = _render(request, "login.html", target=local_target(target), error=error)
    refused.status_code = status
    refused.headers.update(headers or {})
    return refused


@pages.post(LOGOUT_PATH)
def logout(request: Request) -> RedirectResponse:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    end_session(request, response)
    return response


@pages.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, service: ServiceDep) -> HTMLResponse:
    rows = sorted(service.registry.find(datasets), key=lambda row: row["created_at"], reverse=True)
    return _render(request, "datasets.html", datasets=rows)


@pages.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: str, service: ServiceDep) -> HTMLResponse:
    row = _dataset(service, dataset_id)
    samples = _dataset_samples(row["path"], json.dumps(row["dataset_config"], sort_keys=True))
    counts = row["summary"]["splits"][0].get("smoke_share_histogram")
    sampled = counts is None
    if counts is None:  # imported before the import kept the histogram: measure a sample now
        counts = smoke_share_histogram(
            _smoke_fractions(row["path"], json.dumps(row["dataset_config"], sort_keys=True))
        )
    histogram = [
        {"label": f"{i / len(counts):.0%}-{(i + 1) / len(counts):.0%}", "count": count}
        for i, count in enumerate(counts)
    ]
    used = sum(1 for row_ in service.registry.find(experiments) if row_["dataset_id"] == dataset_id)
    return _render(
        request,
        "dataset.html",
        dataset=row,
        grid=[sample.image_id for sample in samples[:GRID_SIZE]],
        total=len(samples),
        histogram=histogram if sum(counts) else [],
        histogram_max=max(counts, default=0) or 1,
        histogram_images=sum(counts),
        histogram_sampled=sampled and sum(counts) < len(samples),
        experiments_using=used,
    )


@pages.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request, service: ServiceDep) -> HTMLResponse:
    names = {row["id"]: row["name"] for row in service.registry.find(datasets)}
    return _render(request, "experiments.html", dataset_names=names)


@pages.get("/experiments/new", response_class=HTMLResponse)
def new_experiment_page(
    request: Request,
    service: ServiceDep,
    clone: Annotated[str | None, Query(alias="from")] = None,
    recipe: str | None = None,
    dataset: str | None = None,
    template: Annotated[str | None, Query(description="recipe=NAME or from=ID (the page's picker)")] = None,
) -> HTMLResponse:
    """The form, filled from an earlier experiment (``?from=ID``), a recipe, or the schema's defaults."""
    kind, _, value = (template or "").partition("=")
    clone = value if kind == "from" and value else clone
    recipe = value if kind == "recipe" and value else recipe
    config: dict[str, Any] = {}
    name = ""
    start = None
    if clone:
        row = experiment_store.require_experiment(service.registry, clone)
        config = yaml.safe_load(row["config_yaml"]) or {}
        dataset = dataset or row["dataset_id"]
        name = f"{row['name']}-2"
        start = experiment_store.started_from(row)
    elif recipe:
        path = recipes().get(recipe)
        if path is None:
            raise NotFoundError(f"No recipe named {recipe}; the recipes are {', '.join(recipes())}.")
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        name = recipe
    earlier = sorted(service.registry.find(experiments), key=lambda row: row["created_at"], reverse=True)
    return _render(
        request,
        "new_experiment.html",
        fields=form_fields(config),
        advanced_yaml=_advanced_yaml(config),
        datasets=service.registry.find(datasets),
        dataset_id=dataset,
        name=name,
        recipes=list(recipes()),
        earlier=earlier,
        clone=clone,
        recipe=recipe,
        starts=_starting_points(service),
        start=start,
        start_prefix=experiment_store.START_FROM_PREFIX,
    )


def _starting_points(service: Any) -> list[dict[str, str]]:
    """The form's "Start from" choices: each succeeded experiment as name · dataset · validation IoU."""
    names = {row["id"]: row["name"] for row in service.registry.find(datasets)}
    choices = []
    for row in experiment_store.starting_points(service.registry):
        folds = [fold for fold in experiment_store.run_metrics(row).values() if isinstance(fold, dict)]
        scores = [float(fold["validation_IoU"]) for fold in folds if fold.get("validation_IoU") is not None]
        iou = f"IoU {sum(scores) / len(scores):.4f}" if scores else "IoU n/a"
        label = f"{row['name']} · {names.get(row['dataset_id'], 'deleted dataset')} · validation {iou}"
        choices.append({"id": row["id"], "label": label})
    return choices


@pages.get("/experiments/{experiment_id}", response_class=HTMLResponse)
def experiment_page(request: Request, experiment_id: str, service: ServiceDep) -> HTMLResponse:
    row = experiment_store.require_experiment(service.registry, experiment_id)
    dataset = service.registry.get(datasets, row["dataset_id"])
    folds = [path.name for path in experiment_store.fold_dirs(row)]
    source_id = experiment_store.started_from(row)
    source = service.registry.get(experiments, source_id) if source_id else None
    return _render(
        request,
        "experiment.html",
        experiment=row,
        dataset=dataset,
        folds=folds,
        source_id=source_id,
        source=source,
    )


@pages.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    service: ServiceDep,
    ids: Annotated[list[str], Query()] = [],  # noqa: B006
) -> HTMLResponse:
    rows = sorted(service.registry.find(experiments), key=lambda row: row["created_at"], reverse=True)
    return _render(request, "compare.html", ids=ids, experiments=rows)


@pages.get("/predict", response_class=HTMLResponse)
def predict_page(request: Request, service: ServiceDep, model: str | None = None) -> HTMLResponse:
    trained = [row for row in service.registry.find(experiments) if row["status"] == SUCCEEDED]
    trained.sort(key=lambda row: row["created_at"], reverse=True)
    models = [{"id": row["id"], "label": f"{row['name']} ({row['id']})"} for row in trained]
    if service.settings.model is not None:
        models.insert(0, {"id": DEFAULT_MODEL, "label": f"default: {service.settings.model.name}"})
    return _render(request, "predict.html", models=models, selected=model)


# --- read-only data the API does not serve yet ------------------------------------------------------


def _dataset(service: Any, dataset_id: str) -> dict[str, Any]:
    row = service.registry.get(datasets, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}.")
    return row


@functools.lru_cache(maxsize=8)
def _dataset_samples(path: str, section_json: str) -> list[Sample]:
    """The training samples, found as training finds them; cached since an imported dataset never changes."""
    section = DatasetConfig.model_validate(json.loads(section_json))
    if section.train_dataframe is None:
        return []
    samples, _ = collect_samples(section.train_dataframe, section.data_folder, section, require_masks=False)
    return samples


@functools.lru_cache(maxsize=8)
def _smoke_fractions(path: str, section_json: str) -> list[float]:
    """Per-image smoke share of up to HISTOGRAM_SAMPLE images spread evenly over the dataset."""
    samples = _dataset_samples(path, section_json)
    step = max(1, len(samples) // HISTOGRAM_SAMPLE)
    fractions = []
    for sample in samples[::step][:HISTOGRAM_SAMPLE]:
        try:
            image = sample.load_image()
            mask = sample.load_mask(*image.shape[:2])
        except SmokesegError:
            continue  # listed under problems already
        if mask is not None:
            fractions.append(float(mask.mean()))
    return fractions


def _jpeg(image: np.ndarray) -> Response:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=85)
    return Response(buffer.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@pages.get("/ui/datasets/{dataset_id}/grid/{index}.jpg")
def dataset_tile(dataset_id: str, index: int, service: ServiceDep) -> Response:
    """One training image with its mask drawn on it (the report's overlay colours)."""
    row = _dataset(service, dataset_id)
    samples = _dataset_samples(row["path"], json.dumps(row["dataset_config"], sort_keys=True))
    if not 0 <= index < len(samples):
        raise NotFoundError(f"Dataset {dataset_id} has no image number {index}.")
    image = samples[index].load_image()
    height = max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1]))
    small = np.asarray(Image.fromarray(image).resize((TILE_WIDTH, height), Image.Resampling.BILINEAR))
    mask = samples[index].load_mask(*image.shape[:2])
    if mask is not None:
        small = overlay_mask(
            small, report_html._resize_mask(mask, (TILE_WIDTH, height)), report_html.TRUE_COLOR
        )
    return _jpeg(small)


@functools.lru_cache(maxsize=16)
def _fold_report(fold_dir: str, _stamp: float) -> tuple[report_html.FoldReport, dict[str, Sample] | None]:
    """The report's view of a fold (its config and validation samples); ``_stamp`` renews it on retrain."""
    fold = report_html.FoldReport(name=Path(fold_dir).name, folder=Path(fold_dir), metrics={})
    report_html._load_config(fold)
    return fold, report_html._validation_images(fold)


def _fold_dir(row: dict[str, Any], fold: str) -> Path:
    folder = Path(row["run_dir"]) / f"fold{safe_relative_name(fold, 'the run')}"
    if not folder.is_dir():
        raise NotFoundError(f"Experiment {row['id']} has no fold {fold} (yet).")
    return folder


@pages.get("/ui/experiments/{experiment_id}/gallery/{fold}/{image_id:path}")
def gallery_tile(experiment_id: str, fold: str, image_id: str, service: ServiceDep) -> Response:
    """Ground truth beside prediction for one validation image, drawn by the HTML report's own code; its
    false regions (touching no true smoke) in their own colour where it has any."""
    row = experiment_store.require_experiment(service.registry, experiment_id)
    folder = _fold_dir(row, fold)
    table_path = folder / VALIDATION_PREDICTIONS_NAME
    if not table_path.is_file():
        raise NotFoundError(f"Experiment {experiment_id} fold {fold} has no validation predictions yet.")
    table = pd.read_parquet(table_path)
    match = table[table["image_id"].astype(str) == image_id]
    if match.empty:
        raise NotFoundError(f"{image_id} is not among the validation images of fold {fold}.")
    report, samples = _fold_report(str(folder), table_path.stat().st_mtime)
    row_of_image = next(match.itertuples(index=False))
    tile = report_html._tile(report, 1, row_of_image, samples)
    if tile.png is None:
        raise NotFoundError(tile.problem or f"{image_id} cannot be drawn.")
    return Response(tile.png, media_type="image/png", headers={"Cache-Control": "max-age=600"})


@pages.get("/ui/experiments/{experiment_id}/config.yaml")
def config_download(experiment_id: str, service: ServiceDep) -> Response:
    row = experiment_store.require_experiment(service.registry, experiment_id)
    return Response(
        row["config_yaml"],
        media_type="application/x-yaml",
        headers={"Content-Disposition": f'attachment; filename="{row["name"]}-config.yaml"'},
    )


DOWNLOADS = {
    "checkpoint": (CHECKPOINT_NAME, LAST_CHECKPOINT_NAME),
    "validation_predictions": (VALIDATION_PREDICTIONS_NAME,),
    "test_predictions": (TEST_PREDICTIONS_NAME,),
}


@pages.get("/ui/experiments/{experiment_id}/files/{fold}/{kind}")
def run_file(experiment_id: str, fold: str, kind: str, service: ServiceDep) -> FileResponse:
    """A fold's checkpoint or prediction table (Parquet, as training wrote it)."""
    row = experiment_store.require_experiment(service.registry, experiment_id)
    folder = _fold_dir(row, fold)
    for name in DOWNLOADS.get(kind, ()):
        if (folder / name).is_file():
            return FileResponse(folder / name, filename=f"{row['name']}-fold{fold}-{name}")
    raise NotFoundError(f"Experiment {experiment_id} fold {fold} has no {kind} file.")


@pages.get("/ui/experiments/{experiment_id}/files")
def run_files(experiment_id: str, service: ServiceDep) -> dict[str, dict[str, str]]:
    """Which downloads each fold has now: fold -> kind -> URL."""
    row = experiment_store.require_experiment(service.registry, experiment_id)
    found: dict[str, dict[str, str]] = {}
    for folder in experiment_store.fold_dirs(row):
        fold = folder.name.removeprefix("fold")
        found[fold] = {
            kind: f"/ui/experiments/{experiment_id}/files/{fold}/{kind}"
            for kind, names in DOWNLOADS.items()
            if any((folder / name).is_file() for name in names)
        }
    return found


# --- images in a folder on the server, for the predict page ------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
FOLDER_IMAGES_SHOWN = 200


def _inside_roots(service: Any, path_text: str) -> Path:
    """A server path, only below the --allow-root folders (the rule server-path imports follow)."""
    path = Path(path_text).expanduser().resolve()
    roots = service.settings.allowed_roots
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(map(str, roots)) or "none (start the server with --allow-root DIR)"
        raise ForbiddenError(f"{path_text} is outside the folders this server may read: {allowed}.")
    return path


@pages.get("/ui/server-images")
def server_images(service: ServiceDep, folder: str) -> dict[str, Any]:
    """The images in a server folder (not recursive), for the browser to send to /v1/predict."""
    path = _inside_roots(service, folder)
    if not path.is_dir():
        raise NotFoundError(f"{folder} is not a folder on the server.")
    names = sorted(
        item.name
        for item in path.iterdir()
        if item.is_file() and not item.is_symlink() and item.suffix.lower() in IMAGE_SUFFIXES
    )
    return {"folder": str(path), "images": names[:FOLDER_IMAGES_SHOWN], "total": len(names)}


@pages.get("/ui/server-images/file")
def server_image(service: ServiceDep, path: str) -> FileResponse:
    file = _inside_roots(service, path)
    if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file() or file.is_symlink():
        raise NotFoundError(f"{path} is not an image file on the server.")
    return FileResponse(file)
