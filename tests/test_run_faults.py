"""Training and export under faults: a folder held by another run or holding a finished one, a read-only
or full disk, data that fails, a package build killed half-way, masks in the wrong RLE order."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import smokeseg
import test_training
from smokeseg.cli import app
from smokeseg.config.load import load_config, save_config
from smokeseg.data.rle import rle_decode, rle_encode
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import DataError, OutputError, SmokesegError
from smokeseg.export import build_package, export_model
from smokeseg.inference.evaluate import load_labelled_samples
from smokeseg.layout import CONFIG_NAME, unused_run_folder
from smokeseg.training import run

TINY = [*test_training.TINY, "training.epochs=1"]
SRC = Path(smokeseg.__file__).resolve().parents[1]  # the sources under test, for the subprocesses


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("tiny"), n_train=12, n_test=4, size=(64, 96), seed=3)


class _CheckpointOnDisk(logging.Handler):
    """Notes, as each "Checkpoint saved after epoch" line is logged, whether a checkpoint file exists."""

    def __init__(self, fold_dir: Path) -> None:
        super().__init__()
        self.fold_dir = fold_dir
        self.seen: list[bool] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Checkpoint saved after epoch"):
            self.seen.append(any(self.fold_dir.glob("*.ckpt")))


@pytest.fixture(scope="module")
def finished(tiny_dataset: Path, tmp_path_factory) -> tuple[Path, list[bool]]:
    """A finished one-epoch run, and for each "Checkpoint saved" line whether the file was on disk."""
    folder = tmp_path_factory.mktemp("finished") / "exp"
    watcher = _CheckpointOnDisk(folder / "fold0")
    logging.getLogger("smokeseg").addHandler(watcher)
    try:
        run.train(load_config(tiny_dataset, TINY), folder, progress=False)
    finally:
        logging.getLogger("smokeseg").removeHandler(watcher)
    return folder, watcher.seen


def _mount_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small file system of its own: root ignores permissions, but not a read-only or a full mount."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); needs root and mount rights"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    yield from _mount_tmpfs(tmp_path / "read_only", "ro,size=1m")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """1 MiB: room for a config and a log, not for a model."""
    yield from _mount_tmpfs(tmp_path / "full", "size=1m")


# --- item 8: each table's RLE order, checked by `train` too ---


def _reencode(table: Path, order: str, size: tuple[int, int]) -> None:
    frame = pd.read_parquet(table)
    frame["rle_mask"] = [rle_encode(rle_decode(rle, *size, "F"), order) for rle in frame["rle_mask"]]
    frame.to_parquet(table, index=False)


def test_a_table_in_the_other_rle_order_is_refused_naming_its_setting(tmp_path: Path):
    config_path = generate_demo_dataset(tmp_path / "data", n_train=6, n_test=6, size=(64, 96), seed=5)
    _reencode(tmp_path / "data/test.pq", "C", (64, 96))  # the train table stays column-major
    with pytest.raises(DataError, match=r"test\.pq.*set dataset\.test_rle_order: C"):
        run.ExperimentData.load(load_config(config_path, TINY))
    with pytest.raises(DataError, match=r"train\.pq.*set dataset\.rle_order: F"):
        run.ExperimentData.load(load_config(config_path, [*TINY, "dataset.rle_order=C"]))
    config = load_config(config_path, [*TINY, "dataset.test_rle_order=C"])
    data = run.ExperimentData.load(config)
    assert {sample.rle_order for sample in data.test} == {"C"} and {s.rle_order for s in data.train} == {"F"}
    evaluated = load_labelled_samples(save_config(config, tmp_path / "c.yaml"), None, config.dataset)
    assert {sample.rle_order for sample in evaluated} == {"C"}, "evaluate reads the test table alike"


# --- item 8: one run per folder ---


_HOLD_AFTER_LOCKING = """
import sys, time
from pathlib import Path
from smokeseg.training import run
release = Path(sys.argv[1])
load = run.ExperimentData.load
def held(config):  # the folder is locked by now; wait for the test to say go on
    Path(str(release) + ".waiting").touch()
    while not release.exists():
        time.sleep(0.05)
    return load(config)
run.ExperimentData.load = held
sys.argv = ["smokeseg", *sys.argv[2:]]
from smokeseg.cli import main
main()
"""


def _smokeseg(*args: str) -> list[str]:
    return [sys.executable, "-c", "from smokeseg.cli import main; main()", *args]


def _overrides() -> list[str]:
    return [arg for item in TINY for arg in ("--set", item)]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}


def test_a_second_run_into_a_folder_in_use_is_refused(tiny_dataset: Path, tmp_path: Path):
    folder, release = tmp_path / "exp", tmp_path / "release"
    train_args = ["train", str(tiny_dataset), "--output-dir", str(folder), "--no-progress"]
    overrides = _overrides()
    first = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AFTER_LOCKING, str(release), *train_args, *overrides],
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{release}.waiting").exists():
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "the first run never reached its data"
            time.sleep(0.1)
        second = subprocess.run(
            _smokeseg(*train_args, *overrides), env=_environment(), capture_output=True, text=True
        )
        assert second.returncode == 2, second.stdout + second.stderr
        message = " ".join(second.stderr.split())
        assert f"{folder} is in use by another `smokeseg train` run" in message
        assert "Traceback" not in second.stderr

        release.touch()
        output, _ = first.communicate(timeout=300)
        assert first.returncode == 0, output.decode()
    finally:
        first.kill()
    assert (folder / "fold0/metrics.json").is_file() and (folder / "report.html").is_file()
    assert (folder / "fold0/logs.log").read_text().count("Global random seed") == 1, "one run's log"


def test_a_crashed_run_leaves_no_lock_behind(tiny_dataset: Path, tmp_path: Path):
    folder, release = tmp_path / "exp", tmp_path / "release"
    first = subprocess.Popen(
        [
            *(sys.executable, "-c", _HOLD_AFTER_LOCKING, str(release), "train", str(tiny_dataset)),
            *("--output-dir", str(folder), "--no-progress", *_overrides()),
        ],
        env=_environment(),
    )
    deadline = time.monotonic() + 120
    while not Path(f"{release}.waiting").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    with (folder / ".lock").open("a") as lock:
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        first.kill()
        first.wait()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the system released the dead run's hold


def test_a_finished_runs_folder_is_refused_and_kept(finished: tuple[Path, list[bool]], tiny_dataset: Path):
    folder, _ = finished
    before = (folder / "fold0/metrics.json").read_text()
    with pytest.raises(OutputError, match=r"holds a finished run.*--output-dir"):
        run.train(load_config(tiny_dataset, TINY), folder, progress=False)
    assert (folder / "fold0/metrics.json").read_text() == before


def test_an_unfinished_runs_folder_is_refused_pointing_at_resume(tiny_dataset: Path, tmp_path: Path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "config.yaml").write_text(tiny_dataset.read_text())
    with pytest.raises(OutputError, match=r"unfinished run \(continue it with `smokeseg train --resume"):
        run.train(load_config(tiny_dataset, TINY), folder, progress=False)
    assert sorted(path.name for path in folder.iterdir()) == [".lock", "config.yaml"]


# --- item 8: read-only and full disks ---


def test_a_read_only_folder_fails_train_and_export_before_the_work(
    read_only: Path, tiny_dataset: Path, finished: tuple[Path, list[bool]], monkeypatch
):
    def no_data(config):
        raise AssertionError("the data must not be read for a folder that cannot take the outputs")

    monkeypatch.setattr(run.ExperimentData, "load", no_data)
    with pytest.raises(
        OutputError, match=f"Cannot write {re.escape(str(read_only))}.*Read-only file system.*output folder"
    ):
        run.train(load_config(tiny_dataset, TINY), read_only / "exp", progress=False)
    with pytest.raises(OutputError, match="Read-only file system"):
        export_model(finished[0] / "fold0", read_only / "model.onnx")
    with pytest.raises(OutputError, match="Read-only file system"):
        build_package(finished[0] / "fold0", read_only / "package")


def test_a_full_disk_ends_train_with_one_line_and_no_stub(full_disk: Path, tiny_dataset: Path):
    with pytest.raises(OutputError, match="No space left on device") as raised:
        run.train(load_config(tiny_dataset, TINY), full_disk / "exp", progress=False)
    assert "\n" not in str(raised.value) and "Free space on that disk" in str(raised.value)
    assert not (full_disk / "exp").exists(), "a run that wrote no checkpoint leaves no folder"


def test_a_full_disk_ends_export_without_the_install_hint(full_disk: Path, finished: tuple[Path, list[bool]]):
    for write in (
        lambda: export_model(finished[0] / "fold0", full_disk / "model.onnx"),
        lambda: build_package(finished[0] / "fold0", full_disk / "package"),
    ):
        with pytest.raises(OutputError, match="No space left on device") as raised:
            write()
        assert "install" not in str(raised.value).lower()
    assert sorted(path.name for path in full_disk.iterdir()) == [], "nothing half-written is left"


# --- item 8: a failed run, a killed package build, resume's report, the checkpoint log line ---


def test_a_run_that_fails_on_its_data_leaves_no_folder(tmp_path: Path):
    config_path = generate_demo_dataset(tmp_path / "data", n_train=8, n_test=0, size=(64, 96), seed=4)
    image = sorted((tmp_path / "data/images").glob("train_*"))[0]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # its header reads (the data loads), its pixels do not
    with pytest.raises(DataError, match=r"(?i)truncated"):
        run.train(
            load_config(config_path, [*TINY, "dataset.test_dataframe=None"]),
            tmp_path / "output/exp",
            progress=False,
        )
    assert not (tmp_path / "output").exists(), "nor the parent folders it made"


def test_resume_removes_a_killed_package_build_and_writes_the_report(finished: tuple[Path, list[bool]]):
    folder, _ = finished
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = folder / f".scoring_package.new.{dead.pid}.0badf00d.tmp"
    abandoned.mkdir()
    (abandoned / "model.onnx").write_bytes(b"half")
    config = folder / "config.yaml"
    config.write_text(
        config.read_text().replace("build_scoring_pipelines: false", "build_scoring_pipelines: true")
    )
    result = CliRunner().invoke(app, ["train", "--resume", str(folder), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert not abandoned.exists()
    assert (folder / "scoring_package/model.onnx").is_file()
    assert (folder / "report.html").is_file(), "a resumed run writes the report a fresh one does"


def test_checkpoint_saved_is_logged_once_the_file_is_on_disk(finished: tuple[Path, list[bool]]):
    _, on_disk = finished
    assert on_disk == [True], "one line per epoch, after the file got its name"


# --- item 6: --resume takes nothing that it would ignore ---


@pytest.mark.parametrize("extra", [["--set", "training.epochs=3"], ["--output-dir", "elsewhere"]])
def test_resume_refuses_what_it_would_ignore(tmp_path: Path, extra: list[str]):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), *extra])
    assert isinstance(result.exception, SmokesegError)
    assert "drop --set and --output-dir" in str(result.exception)
    assert not (tmp_path / "elsewhere").exists()


def test_the_demo_keeps_earlier_runs_in_numbered_folders(tmp_path: Path):
    """`smokeseg demo` always trains into demo/run: a second demo goes to run-2, not into a refusal."""
    base = tmp_path / "demo" / "run"
    assert unused_run_folder(base) == base
    base.mkdir(parents=True)
    assert unused_run_folder(base) == base, "an empty folder holds no run"
    (base / CONFIG_NAME).write_text("experiment_name: demo\n")
    assert unused_run_folder(base) == tmp_path / "demo" / "run-2"
    (tmp_path / "demo" / "run-2").mkdir()
    (tmp_path / "demo" / "run-2" / CONFIG_NAME).write_text("experiment_name: demo\n")
    assert unused_run_folder(base) == tmp_path / "demo" / "run-3"
