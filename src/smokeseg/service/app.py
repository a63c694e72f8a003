"""The FastAPI application factory: wires settings, registry, job runner, model cache, auth and metrics.

Errors: every ``SmokesegError`` answers with the status its class maps to (``STATUS_BY_ERROR``,
looked up along the class's ancestry), the message as ``detail``; the core's config, data and model
mistakes are 422, like request validation errors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from smokeseg import __version__
from smokeseg.errors import ConfigError, DataError, ModelError, SmokesegError
from smokeseg.service.api import system, v1
from smokeseg.service.auth import require_token
from smokeseg.service.context import Service, ServiceSettings
from smokeseg.service.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    TooLargeError,
    UnsupportedError,
)
from smokeseg.service.jobs import JobRunner
from smokeseg.service.pages import mount as mount_pages
from smokeseg.service.registry import Registry
from smokeseg.service.telemetry import Telemetry, TelemetryMiddleware

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[SmokesegError], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    ForbiddenError: 403,
    TooLargeError: 413,
    UnsupportedError: 415,
    ConfigError: 422,
    DataError: 422,
    ModelError: 422,
    SmokesegError: 400,
}

# Event streams stay open until their job ends: without a limit, stopping the server would wait on them.
GRACEFUL_SHUTDOWN_SECONDS = 5


def status_for(error: SmokesegError) -> int:
    return next(STATUS_BY_ERROR[cls] for cls in type(error).__mro__ if cls in STATUS_BY_ERROR)


async def _smokeseg_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, SmokesegError)
    return JSONResponse({"detail": str(error)}, status_code=status_for(error))


def create_app(settings: ServiceSettings) -> FastAPI:
    workdir = settings.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(settings, workdir=workdir)
    registry = Registry(settings.database_url) if settings.database_url else Registry.in_folder(workdir)
    telemetry = Telemetry()
    service = Service(
        settings,
        registry,
        telemetry,
        JobRunner(registry, settings.max_running_jobs, settings.job_poll_seconds),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        recovered = service.runner.recover(resume=settings.resume_jobs)
        if recovered:
            action = "queued again to resume" if settings.resume_jobs else "marked failed"
            logger.warning("Jobs interrupted by the last shutdown, %s: %s", action, ", ".join(recovered))
        service.runner.start()
        yield
        service.runner.stop()
        service.models.close()

    app = FastAPI(
        title="smokeseg",
        version=__version__,
        description="Score images for smoke, import datasets, train and compare smoke segmentation models.",
        lifespan=lifespan,
        dependencies=[Depends(require_token)],
        max_body_size=settings.max_upload_bytes,
    )
    app.state.service = service
    app.include_router(system)
    app.include_router(v1)
    mount_pages(app)  # the web pages (service/pages.py), over the same routes
    app.add_exception_handler(SmokesegError, _smokeseg_error)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)
    return app
