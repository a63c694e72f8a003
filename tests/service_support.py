"""Helpers shared by the service tests: tiny data, images, zips, and a server process on loopback."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.service.registry import SUCCEEDED, experiments, now

SRC = Path(__file__).resolve().parents[1] / "src"
# Seconds-long trainings: a from-scratch ResNet18 at 64x64, two epochs on eight images.
TINY_CONFIG = {
    "architecture": {"backbone": "resnet18", "pretrained": False},
    "image": {"image_height": 64, "image_width": 64},
    "training": {"epochs": 2, "batch_size": 4, "build_scoring_pipelines": False},
    "environment": {"number_of_workers": 0, "seed": 7, "mixed_precision_training": False},
}


def tiny_demo(folder: Path, seed: int = 1) -> Path:
    """The built-in demo dataset, eight 64x64 training images and two test images; returns its folder."""
    return generate_demo_dataset(folder, n_train=8, n_test=2, size=(64, 64), seed=seed).parent


def zip_folder(folder: Path, target: Path, inside: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, (Path(inside) / path.relative_to(folder)).as_posix())
    return target


def png_bytes(height: int = 48, width: int = 64, seed: int = 0, image_format: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60, **kwargs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1, **kwargs)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_status(client: httpx.Client, experiment_id: str, wanted: set[str], timeout: float = 180) -> dict:
    """Poll an experiment until its status is one of ``wanted``; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get(f"/v1/experiments/{experiment_id}").json()
        if experiment["status"] in wanted:
            return experiment
        time.sleep(0.5)
    raise TimeoutError(f"{experiment_id} never reached {wanted}: {experiment['status']}")


def start_server(workdir: Path, port: int, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """``smokeseg serve`` as its own process on 127.0.0.1, as a user starts it."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "smokeseg.cli", "serve", "--port", str(port), "--workdir", str(workdir)]
    output = open(log or workdir.with_suffix(".log"), "ab")  # noqa: SIM115 - the process owns it
    process = subprocess.Popen([*command, *extra], env=env, stdout=output, stderr=subprocess.STDOUT)
    wait_for(f"http://127.0.0.1:{port}/healthz", process)
    return process


def finish_experiment(client, experiment_id: str, run: Path) -> Path:
    """Mark a queued experiment succeeded with a copy of ``run`` as its run folder, as if it had trained
    (an in-process TestClient's server); returns the run folder."""
    registry = client.app.state.service.registry
    run_dir = Path(registry.get(experiments, experiment_id)["run_dir"])
    shutil.copytree(run, run_dir, dirs_exist_ok=True)
    registry.update(experiments, experiment_id, status=SUCCEEDED, finished_at=now())
    return run_dir
