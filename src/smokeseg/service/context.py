"""What every request handler needs (settings, registry, job runner, model cache, metrics), in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from smokeseg.service.auth import SignedOutSessions, SignInThrottle
from smokeseg.service.datasets import ImportLimits
from smokeseg.service.errors import ConflictError, NotFoundError
from smokeseg.service.jobs import JobRunner
from smokeseg.service.registry import SUCCEEDED, Registry, experiments
from smokeseg.service.scoring import ModelCache
from smokeseg.service.telemetry import Telemetry

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``smokeseg serve`` can set; the defaults are safe for one person on one machine."""

    workdir: Path
    model: Path | None = None
    token: str | None = None
    session_hours: float = 12.0  # a browser signs in again after this long
    sign_in_attempts: int = 10  # wrong tokens a client address may send a minute
    database_url: str | None = None  # default: SQLite in the work folder
    max_running_jobs: int = 1
    resume_jobs: bool = False
    allowed_roots: tuple[Path, ...] = ()
    max_upload_bytes: int = 2_048_000_000
    max_predict_bytes: int = 64_000_000
    max_image_pixels: int = 50_000_000
    max_images_per_request: int = 32
    model_cache_size: int = 2
    device: str = "cpu"
    job_poll_seconds: float = 0.5

    @property
    def import_limits(self) -> ImportLimits:
        return ImportLimits(max_bytes=self.max_upload_bytes, allowed_roots=self.allowed_roots)


@dataclass
class Service:
    settings: ServiceSettings
    registry: Registry
    telemetry: Telemetry
    runner: JobRunner
    models: ModelCache = field(init=False)
    sign_in: SignInThrottle = field(init=False)
    signed_out: SignedOutSessions = field(init=False)

    def __post_init__(self) -> None:
        self.models = ModelCache(
            self.model_path, self.telemetry, self.settings.model_cache_size, self.settings.device
        )
        self.sign_in = SignInThrottle(self.settings.sign_in_attempts)
        self.signed_out = SignedOutSessions(self.registry)

    def model_path(self, key: str) -> Path:
        """``default`` is the --model path; any other key is an experiment id whose training succeeded."""
        if key == DEFAULT_MODEL:
            if self.settings.model is None:
                raise NotFoundError(
                    "This server has no default model: start it with --model PATH, or name a trained "
                    "experiment with ?model=EXPERIMENT_ID."
                )
            return self.settings.model
        row = self.registry.get(experiments, key)
        if row is None:
            raise NotFoundError(f"No experiment with id {key} to score with.")
        if row["status"] != SUCCEEDED:
            raise ConflictError(f"Experiment {key} is {row['status']}; only a finished training can score.")
        return Path(row["run_dir"])


def get_service(request: Request) -> Service:
    return request.app.state.service
