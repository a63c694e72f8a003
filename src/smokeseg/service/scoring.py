"""Scoring for the API: models loaded once and cached, images checked before decoding, requests batched.

Each cached model has one worker task. Images from requests that arrive while it is busy wait in its
queue and go through the model together in the next batch (up to the model's batch size), so
concurrent clients share forward passes instead of queueing one image at a time. The forward pass
runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from PIL import Image

from smokeseg.data.formats import ImageStore, Sample
from smokeseg.errors import DataError, SmokesegError
from smokeseg.inference.predict import IMAGE_OUTPUTS
from smokeseg.inference.predictor import Prediction, Predictor
from smokeseg.inference.scoring import prediction_row
from smokeseg.service.errors import TooLargeError, UnsupportedError
from smokeseg.service.telemetry import Telemetry

logger = logging.getLogger(__name__)

# Pillow format names the API takes; anything else is refused before a pixel is decoded.
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "TIFF", "WEBP"})


class MemoryStore(ImageStore):
    """One uploaded image, held in memory, so the Predictor reads it like any dataset file."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def read(self, name: str) -> bytes:
        return self.data

    def exists(self, name: str) -> bool:
        return name == self.name

    def names(self) -> list[str]:
        return [self.name]

    def child(self, folder: str) -> ImageStore:
        raise DataError("An uploaded image has no subfolders.")

    def __str__(self) -> str:
        return "upload"


def check_image(name: str, data: bytes, max_pixels: int) -> None:
    """Refuse a non-image, an unaccepted format, or a decompression bomb, from the header alone."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, (width, height) = image.format, image.size
    except Image.DecompressionBombError as error:
        raise TooLargeError(f"{name} is too large to decode safely ({error}).") from None
    except (OSError, ValueError, SyntaxError):
        raise UnsupportedError(
            f"{name} is not an image ({len(data)} bytes); send JPEG, PNG, BMP, TIFF or WebP."
        ) from None
    if image_format not in ACCEPTED_FORMATS:
        raise UnsupportedError(
            f"{name} is {image_format}; send one of {', '.join(sorted(ACCEPTED_FORMATS))}."
        )
    if width * height > max_pixels:
        raise TooLargeError(
            f"{name} is {width}x{height} pixels, over this server's limit of "
            f"{max_pixels / 1e6:.0f} megapixels."
        )


@dataclass
class ScoreItem:
    """One image of one request, with what that request asked for, and where its answer goes."""

    name: str
    data: bytes
    threshold: float | None
    image_outputs: tuple[str, ...]
    future: asyncio.Future[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.future = asyncio.get_running_loop().create_future()


class ModelWorker:
    """A loaded model, its queue, and the task that scores the queue in batches.

    ``close`` queues a stop mark behind the waiting images: an evicted model answers every image it
    accepted before it goes.
    """

    def __init__(self, predictor: Predictor, telemetry: Telemetry) -> None:
        self.predictor = predictor
        self.telemetry = telemetry
        self.queue: asyncio.Queue[ScoreItem | None] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smokeseg-score")
        self.task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, item: ScoreItem) -> asyncio.Future[dict[str, Any]]:
        """Queue an image; synchronous, so a caller that just got this worker from the cache queues on it
        before any other request can evict it."""
        self.telemetry.queue_depth.inc()
        self.queue.put_nowait(item)
        return item.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self.queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.predictor.batch_size and not self.queue.empty():
                item = self.queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self.telemetry.queue_depth.dec(len(batch))
            self.telemetry.batch_size.observe(len(batch))
            results = await loop.run_in_executor(self.executor, self._score_apart, batch)
            for item, result in zip(batch, results, strict=True):
                if item.future.done():  # its client went away
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        self.executor.shutdown(wait=False)

    def _score_apart(self, batch: list[ScoreItem]) -> list[dict[str, Any] | SmokesegError]:
        """Score a batch; should it fail as a whole, score its images one by one, so that one image the
        decoder chokes on fails its own request (a 422 naming it) and not its batch-mates'."""
        try:
            return self._score(batch)
        except Exception as error:
            if len(batch) > 1:
                return [result for item in batch for result in self._score_apart([item])]
            logger.exception("Scoring %s failed", batch[0].name)
            return [DataError(f"{batch[0].name} could not be scored ({type(error).__name__}: {error}).")]

    def _score(self, batch: list[ScoreItem]) -> list[dict[str, Any] | SmokesegError]:
        samples = [Sample(item.name, MemoryStore(item.name, item.data), item.name) for item in batch]
        results: dict[int, dict[str, Any] | SmokesegError] = {}

        def failed(sample: Sample, error: SmokesegError) -> None:
            results[id(sample)] = error

        items = {id(sample): item for sample, item in zip(samples, batch, strict=True)}
        for prediction in self.predictor.predict_samples(samples, on_error=failed):
            results[id(prediction.sample)] = self._row(prediction, items[id(prediction.sample)])
        return [results[id(sample)] for sample in samples]

    def _row(self, prediction: Prediction, item: ScoreItem) -> dict[str, Any]:
        threshold = self.predictor.threshold if item.threshold is None else item.threshold
        row = prediction_row(prediction, threshold, self.predictor.config.dataset.rle_order)
        mask = prediction.probabilities > threshold
        row["images"] = {
            name: base64.b64encode(IMAGE_OUTPUTS[name][1](prediction, mask, row)).decode("ascii")
            for name in item.image_outputs
        }
        row["threshold"] = threshold
        return row

    def close(self) -> None:
        self.queue.put_nowait(None)


class ModelCache:
    """Models by key (``default`` or an experiment id), loaded once, the least recently used evicted."""

    def __init__(
        self, resolve: Callable[[str], Path], telemetry: Telemetry, capacity: int = 2, device: str = "cpu"
    ) -> None:
        self.resolve = resolve
        self.telemetry = telemetry
        self.capacity = capacity
        self.device = device
        self.workers: OrderedDict[str, ModelWorker] = OrderedDict()
        self.loading: dict[str, asyncio.Lock] = {}

    async def get(self, key: str) -> ModelWorker:
        """The model's worker. Call on the event loop and queue on it before the next ``await``."""
        worker = self.workers.get(key)
        if worker is None:
            # A lock per model: two requests for a cold model load it once, and the loaded ones keep scoring.
            async with self.loading.setdefault(key, asyncio.Lock()):
                worker = self.workers.get(key) or await self._load(key)
        self.workers.move_to_end(key)
        return worker

    async def _load(self, key: str) -> ModelWorker:
        path = self.resolve(key)
        started = time.perf_counter()
        predictor = await asyncio.to_thread(Predictor.from_path, path, self.device)
        self.telemetry.model_load_seconds.observe(time.perf_counter() - started)
        worker = self.workers[key] = ModelWorker(predictor, self.telemetry)
        while len(self.workers) > self.capacity:
            _, evicted = self.workers.popitem(last=False)
            evicted.close()
        return worker

    def forget(self, key: str) -> None:
        """Drop a model whose experiment was deleted (on the event loop: the queues are asyncio's)."""
        worker = self.workers.pop(key, None)
        if worker is not None:
            worker.close()

    def close(self) -> None:
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()


# The optional per-image outputs of `smokeseg predict`, as an enum: the API validates and documents them.
ImageOutput = Enum("ImageOutput", {name: name for name in sorted(IMAGE_OUTPUTS)}, type=str)
