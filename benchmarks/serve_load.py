"""Load test of ``smokeseg serve``: N predict requests from C concurrent clients, all on loopback.

Starts the server as its own process with one model, sends ``--requests`` single-image requests
(640x480 JPEG camera-sized frames from the synthetic generator) from ``--clients`` threads, and reports
throughput, p50/p99 latency, errors (anything but HTTP 200) and the server's peak RSS (VmHWM, the
kernel's high-water mark of its resident memory). Bounded: a fixed number of requests, each with a
timeout, and the server is stopped at the end.

usage: python benchmarks/serve_load.py [--model DIR] [--requests 500] [--clients 8]
                                       [--out benchmarks/results-serve-load.json]
Without --model it first trains the demo model (resnet18 from scratch, 1 epoch) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from machine import cpu_description

from smokeseg.config.load import load_config
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.storage import write_text_atomic

RSS_LIMIT_MB = 1536


def _train_demo_model(folder: Path) -> Path:
    from smokeseg.training.run import train

    config_path = generate_demo_dataset(folder / "data", n_train=16, n_test=4)
    config = load_config(config_path, ["training.epochs=1", "training.build_scoring_pipelines=false"])
    train(config, folder / "run", progress=False)
    return folder / "run"


def _frames(folder: Path, count: int = 8) -> list[bytes]:
    """Camera-sized frames (640x480 JPEG) of the synthetic generator."""
    generate_demo_dataset(folder, n_train=count, n_test=1, size=(480, 640), seed=5)
    return [path.read_bytes() for path in sorted((folder / "images").glob("train_*.jpg"))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc: this benchmark measures memory on Linux")


def run(model: Path, requests: int, clients: int, workdir: Path) -> dict:
    frames = _frames(workdir / "frames")
    load_at_start = round(os.getloadavg()[0], 2)  # other work on the machine slows every figure
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "smokeseg.cli",
        "serve",
        "--port",
        str(port),
        "--workdir",
        str(workdir / "w"),
    ]
    with open(workdir / "server.log", "wb") as log:
        server = subprocess.Popen(
            [*command, "--model", str(model)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the server did not start; see {workdir / 'server.log'}") from None
                time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=60) as warm:  # the first request loads the model
            warm.post(
                "/v1/predict", content=frames[0], headers={"Content-Type": "image/jpeg"}
            ).raise_for_status()
        rss_before = _peak_rss_mb(server.pid)

        def one(index: int) -> tuple[float, bool]:
            started = time.perf_counter()
            try:
                response = client.post(
                    "/v1/predict", content=frames[index % len(frames)], headers={"Content-Type": "image/jpeg"}
                )
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            return time.perf_counter() - started, ok

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        with (
            httpx.Client(base_url=url, timeout=60, limits=limits) as client,
            ThreadPoolExecutor(clients) as pool,
        ):
            started = time.perf_counter()
            results = list(pool.map(one, range(requests)))
            wall = time.perf_counter() - started
        metrics = httpx.get(f"{url}/metrics").text
        peak_rss = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    latencies = np.array([seconds for seconds, _ in results]) * 1000
    batches = [line for line in metrics.splitlines() if line.startswith("smokeseg_predict_batch_images_")]
    batch_stats = {line.split()[0]: float(line.split()[1]) for line in batches if "bucket" not in line}
    return {
        "requests": requests,
        "clients": clients,
        "image": "640x480 JPEG",
        "wall_s": round(wall, 2),
        "throughput_rps": round(requests / wall, 2),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "latency_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "errors": sum(not ok for _, ok in results),
        "mean_batch_images": round(
            batch_stats["smokeseg_predict_batch_images_sum"]
            / batch_stats["smokeseg_predict_batch_images_count"],
            2,
        ),
        "server_peak_rss_mb_after_model_load": round(rss_before, 1),
        "server_peak_rss_mb": round(peak_rss, 1),
        "rss_limit_mb": RSS_LIMIT_MB,
        "machine": cpu_description(),
        "cores": os.cpu_count(),
        "load_average_1min_at_start": load_at_start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="checkpoint, run folder or scoring package")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results-serve-load.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smokeseg-load-") as tmp:
        model = args.model or _train_demo_model(Path(tmp) / "model")
        result = run(model.resolve(), args.requests, args.clients, Path(tmp))
    result["model"] = str(args.model) if args.model else "demo model (resnet18 U-Net, 96x128, 1 epoch)"
    write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if result["errors"] or result["server_peak_rss_mb"] > RSS_LIMIT_MB:
        sys.exit(f"FAILED: {result['errors']} errors, peak RSS {result['server_peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
