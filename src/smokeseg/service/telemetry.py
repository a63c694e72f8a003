"""Prometheus metrics of one app instance, and the ASGI middleware that counts every request.

Each app gets its own ``CollectorRegistry``, so several apps in one process (tests) do not collide.
Requests are labelled by route template (``/v1/experiments/{experiment_id}``), not by raw path, so
ids cannot blow up the number of series.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "smokeseg_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "smokeseg_http_errors",
            "HTTP requests answered with 4xx or 5xx",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "smokeseg_http_request_seconds",
            "Time from request to the response's start",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "smokeseg_predict_queue_depth", "Images waiting for a model", registry=self.registry
        )
        self.batch_size = Histogram(
            "smokeseg_predict_batch_images",
            "Images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.model_load_seconds = Histogram(
            "smokeseg_model_load_seconds",
            "Time to load a model into the cache",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.jobs = Gauge(
            "smokeseg_training_jobs", "Experiments by job state", ["status"], registry=self.registry
        )


class TelemetryMiddleware:
    """Counts requests, errors and latency; pure ASGI, so streamed responses (SSE) pass untouched."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._record(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            self._record(scope, 500, time.perf_counter() - started)
            raise

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.telemetry.requests.labels(scope["method"], route, str(status)).inc()
        self.telemetry.latency.labels(route).observe(seconds)
        if status >= 400:
            self.telemetry.errors.labels(route, str(status)).inc()
