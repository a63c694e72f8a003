"""The training queue: experiments train one (or ``max_running``) at a time, each in its own process.

A job is ``python -m smokeseg.cli train`` in a new process group, its output going to the experiment's
``job.log``; the API process only starts, watches and stops it, so requests stay fast however long
training takes, and a client closing its connection changes nothing. The job's state lives in the
registry; its artefacts in the run folder that training writes.

After a crash or ``kill -9`` of the server, ``recover`` finds the jobs the database still calls
running, stops any training process left over from them, and marks them failed (partial outputs
kept) or queues them to continue from their last checkpoints (``--resume-jobs``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from smokeseg.layout import CONFIG_NAME
from smokeseg.service.errors import ConflictError, NotFoundError
from smokeseg.service.registry import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Registry,
    experiments,
    now,
)

logger = logging.getLogger(__name__)

EXPERIMENTS_FOLDER = "experiments"
JOB_CONFIG_NAME = "experiment.yaml"
JOB_LOG_NAME = "job.log"
RUN_FOLDER = "run"
_ERROR_LINES = 15
_STOP_GRACE_SECONDS = 10


def experiment_folder(workdir: Path, experiment_id: str) -> Path:
    return workdir / EXPERIMENTS_FOLDER / experiment_id


class JobRunner:
    """Starts queued experiments while fewer than ``max_running`` train, and records how each ends."""

    def __init__(self, registry: Registry, max_running: int = 1, poll_seconds: float = 0.5) -> None:
        self.registry = registry
        self.max_running = max_running
        self.poll_seconds = poll_seconds
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="smokeseg-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Server shutdown: stop the trainings, their outputs kept. Their rows stay ``running``, as after
        a crash, so the next start treats both alike: failed, or resumed with --resume-jobs."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            for process in self.processes.values():
                _kill_group(process.pid, signal.SIGTERM)
            for process in self.processes.values():
                try:
                    process.wait(_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    _kill_group(process.pid, signal.SIGKILL)
            self.processes.clear()

    def recover(self, resume: bool) -> list[str]:
        """At startup: jobs the database still calls running lost their server. Returns their ids."""
        stale = self.registry.find(experiments, status=RUNNING)
        for row in stale:
            _stop_leftover(row)
            if resume:
                self.registry.update(experiments, row["id"], status=QUEUED, pid=None, resume=1)
            else:
                self.registry.update(
                    experiments,
                    row["id"],
                    status=FAILED,
                    pid=None,
                    finished_at=now(),
                    error="The server stopped while this job trained; its partial outputs are kept. "
                    "Start the server with --resume-jobs to continue such jobs instead.",
                )
        return [row["id"] for row in stale]

    def cancel(self, experiment_id: str) -> None:
        row = self.registry.get(experiments, experiment_id)
        if row is None:
            raise NotFoundError(f"No experiment with id {experiment_id}.")
        fields = {"status": CANCELLED, "pid": None, "finished_at": now(), "error": "Cancelled."}
        if self.registry.transition(experiment_id, {QUEUED}, **fields):
            return
        with self._lock:
            if not self.registry.transition(experiment_id, {RUNNING}, **fields):
                raise ConflictError(
                    f"Experiment {experiment_id} is {row['status']}; only a queued or running "
                    "job can be cancelled."
                )
            process = self.processes.get(experiment_id)
            if process is not None:
                _kill_group(process.pid, signal.SIGTERM)
                # Lightning may finish its step first; one that does not stop in time is killed.
                threading.Timer(_STOP_GRACE_SECONDS, _kill_if_running, (process,)).start()
        self.wake()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._reap()
                while len(self.processes) < self.max_running and not self._stopping.is_set():
                    job = self.registry.claim_next_job()
                    if job is None:
                        break
                    self._launch(job)
            except Exception:  # the queue must outlive any one job's trouble
                logger.exception("Job runner error")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _launch(self, job: dict[str, Any]) -> None:
        folder = Path(job["run_dir"]).parent
        run_dir = Path(job["run_dir"])
        if job["resume"] and (run_dir / CONFIG_NAME).is_file():
            arguments = ["train", "--resume", str(run_dir)]
        else:
            arguments = ["train", str(folder / JOB_CONFIG_NAME), "--output-dir", str(run_dir)]
        command = [sys.executable, "-m", "smokeseg.cli", *arguments, "--no-progress"]
        with self._lock, open(folder / JOB_LOG_NAME, "ab") as log:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=folder,
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"},
                    start_new_session=True,  # its own process group: a stop reaches data loader workers too
                )
            except OSError as error:
                self.registry.transition(
                    job["id"], {RUNNING}, status=FAILED, finished_at=now(), error=f"Could not start: {error}"
                )
                return
            self.processes[job["id"]] = process
            self.registry.update(experiments, job["id"], pid=process.pid, resume=0)
        logger.info("Experiment %s started (pid %d)", job["id"], process.pid)

    def _reap(self) -> None:
        with self._lock:
            for experiment_id, process in list(self.processes.items()):
                code = process.poll()
                if code is None:
                    continue
                del self.processes[experiment_id]
                if code == 0:
                    self.registry.transition(
                        experiment_id, {RUNNING}, status=SUCCEEDED, pid=None, finished_at=now()
                    )
                else:
                    log = Path(self.registry.get(experiments, experiment_id)["run_dir"]).parent / JOB_LOG_NAME
                    self.registry.transition(
                        experiment_id,
                        {RUNNING},
                        status=FAILED,
                        pid=None,
                        finished_at=now(),
                        error=f"Training exited with code {code}:\n{_tail(log)}",
                    )
                logger.info("Experiment %s ended with code %d", experiment_id, code)


def _tail(path: Path, lines: int = _ERROR_LINES) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _kill_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        _kill_group(process.pid, signal.SIGKILL)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _stop_leftover(row: dict[str, Any]) -> None:
    """Kill a training process that outlived its server, if that pid is still this job's training."""
    pid = row["pid"]
    if not pid:
        return
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return  # gone (or not Linux: nothing to check it against)
    if row["run_dir"] in command and "smokeseg.cli" in command:
        _kill_group(pid, signal.SIGKILL)
