"""Training through a real ``smokeseg serve`` process on loopback: two runs with streamed progress, compare,
score with a trained run, download its package, cancel a running job; then ``kill -9`` mid-training, a
restart that continues the job (``--resume-jobs``), a graceful stop, and a restart that marks it failed,
its outputs kept and the database intact."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sqlite3
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from service_support import (
    TINY_CONFIG,
    free_port,
    png_bytes,
    start_server,
    tiny_demo,
    wait_status,
    zip_folder,
)
from smokeseg.service.registry import DATABASE_NAME

LONG_CONFIG = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "epochs": 50}}


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    return tiny_demo(tmp_path_factory.mktemp("demo"))


def _stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(30)


def _events(client: httpx.Client, experiment_id: str) -> list[tuple[str, dict]]:
    """Read the event stream to its end, as a browser's EventSource would."""
    events, name = [], None
    with client.stream("GET", f"/v1/experiments/{experiment_id}/events", timeout=180) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_train_stream_compare_score_download_cancel(demo_folder: Path, tmp_path: Path):
    port = free_port()
    # a and b train side by side; 1-megapixel images at most
    server = start_server(tmp_path / "work", port, "--max-jobs", "2", "--max-image-megapixels", "1")
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        archive = zip_folder(demo_folder, tmp_path / "demo.zip")
        dataset = client.post(
            "/v1/datasets", data={"name": "demo"}, files={"file": archive.read_bytes()}
        ).json()
        with_package = {
            **TINY_CONFIG,
            "training": {**TINY_CONFIG["training"], "build_scoring_pipelines": True},
        }
        first = client.post(
            "/v1/experiments", json={"name": "a", "dataset_id": dataset["id"], "config": with_package}
        )
        faster = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "learning_rate": 0.01, "epochs": 1}}
        second = client.post(
            "/v1/experiments", json={"name": "b", "dataset_id": dataset["id"], "config": faster}
        )
        assert first.status_code == second.status_code == 201, first.text
        a, b = first.json()["id"], second.json()["id"]

        events = _events(client, a)
        names = [name for name, _ in events]
        assert names[-1] == "end" and events[-1][1]["status"] == "succeeded", events[-3:]
        statuses = [data["status"] for name, data in events if name == "status"]
        assert statuses[-1] == "succeeded" and set(statuses) <= {"queued", "running", "succeeded"}
        lines = [data["line"] for name, data in events if name == "log"]
        assert any("Training Epoch: 2 / 2" in line for line in lines), lines
        charts = [data["charts"] for name, data in events if name == "charts"]
        assert charts and "validation_loss" in charts[-1] and len(charts[-1]["validation_loss"]["value"]) == 2

        with client.stream("GET", f"/v1/experiments/{b}/events") as stream:
            first_line = next(stream.iter_lines())  # then this client goes away mid-stream
        assert first_line.startswith("event: ")
        wait_status(client, b, {"succeeded"})
        detail = client.get(f"/v1/experiments/{a}").json()
        fold = detail["folds"][0]
        assert "validation_IoU" in fold["metrics"] and "train_loss" in fold["charts"]
        assert (
            fold["log"]
            and len(fold["validation_predictions"]) == 2
            and "iou" in fold["validation_predictions"][0]
        )
        assert detail["metrics"]["fold0"]["epochs"] == 2
        report = client.get(detail["report_url"])
        assert report.status_code == 200 and "<html" in report.text.lower()
        assert "data:image/png;base64," in report.text, "self-contained: its images are inside"

        comparison = client.get("/v1/compare", params={"ids": [a, b]}).json()
        assert set(comparison["metrics"]["fold0.validation_IoU"]) == {a, b}
        assert comparison["config_differences"]["training.learning_rate"] == {a: 0.001, b: 0.01}
        assert comparison["config_differences"]["training.epochs"] == {a: 2, b: 1}
        assert "training.batch_size" not in comparison["config_differences"]

        scored = client.post(f"/v1/predict?model={a}", files={"files": ("x.png", png_bytes(64, 64))})
        assert scored.status_code == 200 and scored.json()["model"] == a
        assert (
            client.post(
                f"/v1/predict?model={b}", content=png_bytes(), headers={"Content-Type": "image/png"}
            ).status_code
            == 200
        )
        assert set(client.get("/healthz").json()["models_loaded"]) == {a, b}
        large = client.post(
            f"/v1/predict?model={a}", content=png_bytes(1000, 1001), headers={"Content-Type": "image/png"}
        )
        assert large.status_code == 413 and "limit of 1 megapixels" in large.text

        package = client.get(detail["package_url"])
        assert package.status_code == 200 and package.headers["content-type"] == "application/zip"
        assert "model.onnx" in zipfile.ZipFile(io.BytesIO(package.content)).namelist()
        assert client.get(f"/v1/experiments/{b}/package").status_code == 404, "b built no package"

        long = client.post(
            "/v1/experiments", json={"name": "c", "dataset_id": dataset["id"], "config": LONG_CONFIG}
        ).json()
        running = wait_status(client, long["id"], {"running"})
        training = _wait_for_pid(tmp_path / "work", long["id"])
        cancelled = client.post(f"/v1/experiments/{running['id']}/cancel").json()
        assert cancelled["status"] == "cancelled"
        assert client.get("/healthz").json()["jobs_running"] == 0
        deadline = time.monotonic() + 20
        while _alive(training):
            assert time.monotonic() < deadline, "a cancelled training is stopped"
            time.sleep(0.2)
        assert client.delete(f"/v1/experiments/{long['id']}").status_code == 204
    finally:
        _stop(server)


def test_kill_9_resume_stop_restart_marks_the_job_failed(demo_folder: Path, tmp_path: Path):
    workdir, port = tmp_path / "work", free_port()
    server = start_server(workdir, port, "--allow-root", str(demo_folder))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        dataset = client.post("/v1/datasets/import", json={"name": "demo", "source": str(demo_folder)}).json()
        body = {"name": "long", "dataset_id": dataset["id"], "config": LONG_CONFIG}
        experiment = client.post("/v1/experiments", json=body).json()
        run_dir = workdir / "experiments" / experiment["id"] / "run"
        deadline = time.monotonic() + 120
        while not (run_dir / "fold0" / "last.ckpt").is_file():  # an epoch done: partial outputs exist
            assert time.monotonic() < deadline, "training never finished an epoch"
            time.sleep(0.5)
        first_training = _training_pid(workdir, experiment["id"])
        _kill_9(server)

        server = start_server(workdir, port, "--resume-jobs")
        resumed = wait_status(client, experiment["id"], {"running"}, timeout=30)
        assert resumed["error"] is None and not _alive(first_training), "the orphan was stopped"
        second_training = _wait_for_pid(workdir, experiment["id"])
        assert b"--resume" in Path(f"/proc/{second_training}/cmdline").read_bytes(), (
            "continues from last.ckpt"
        )
        listener = threading.Thread(target=_listen, args=(client, experiment["id"]), daemon=True)
        listener.start()  # an open event stream must not hold the stop up
        time.sleep(1)
        _stop(server)  # a graceful stop this time: it stops the training; the next start decides
        assert not _alive(second_training)

        server = start_server(workdir, port)
        after = client.get(f"/v1/experiments/{experiment['id']}").json()
        assert after["status"] == "failed" and "server stopped" in after["error"]
        assert after["folds"][0]["charts"], "partial outputs are kept and still shown"
        assert (run_dir / "fold0" / "last.ckpt").is_file()
        assert [row["id"] for row in client.get("/v1/datasets").json()] == [dataset["id"]]
    finally:
        if server.poll() is None:
            _stop(server)
    with sqlite3.connect(workdir / DATABASE_NAME) as database:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _listen(client: httpx.Client, experiment_id: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        _events(client, experiment_id)


def _kill_9(server) -> None:
    server.send_signal(signal.SIGKILL)
    server.wait(10)


def _training_pid(workdir: Path, experiment_id: str) -> int:
    with sqlite3.connect(workdir / DATABASE_NAME) as database:
        return database.execute("SELECT pid FROM experiments WHERE id = ?", (experiment_id,)).fetchone()[0]


def _wait_for_pid(workdir: Path, experiment_id: str) -> int:
    deadline = time.monotonic() + 30
    while not (pid := _training_pid(workdir, experiment_id)):
        assert time.monotonic() < deadline, "the job never got a process"
        time.sleep(0.2)
    return pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
