"""The public Python API: lazy names, the README example, model paths and runtimes, starting weights
applied once, resume without the init_from source, and seeded runs that repeat exactly."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import smokeseg
from smokeseg.config.load import load_config
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError, ModelError, TrainingInterrupted
from smokeseg.export.onnx import write_model
from smokeseg.inference import runtimes
from smokeseg.inference.inputs import collect_inputs
from smokeseg.inference.predict import predict
from smokeseg.inference.predictor import Predictor
from smokeseg.model import factory
from smokeseg.training import outputs, run
from test_training import TINY

README = Path(__file__).resolve().parents[1] / "README.md"
ONE_EPOCH = [*TINY, "training.epochs=1", "dataset.test_dataframe=None"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("api_data")
    return generate_demo_dataset(folder, n_train=12, n_test=4, size=(64, 96), seed=3)


@pytest.fixture(scope="module")
def experiment(dataset: Path, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("api_runs") / "my_experiment"
    run.train(load_config(dataset, ONE_EPOCH), output, progress=False)
    return output


@pytest.fixture
def frames(dataset: Path, tmp_path: Path) -> Path:
    """``frame1.jpg`` and ``frames/`` (two frames and a file that is not an image), as in the README."""
    photos = sorted((dataset.parent / "images").glob("test_*.jpg"))
    shutil.copy(photos[0], tmp_path / "frame1.jpg")
    (tmp_path / "frames").mkdir()
    for photo in photos[1:3]:
        shutil.copy(photo, tmp_path / "frames" / photo.name)
    (tmp_path / "frames" / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


# --- the package namespace -----------------------------------------------------------------------------


def test_public_names_are_importable_from_smokeseg():
    modules = {
        "load_config": "smokeseg.config.load",
        "train": "smokeseg.training.run",
        "Predictor": "smokeseg.inference.predictor",
        "TileSpec": "smokeseg.inference.predictor",
        "evaluate": "smokeseg.inference.evaluate",
        "export_model": "smokeseg.export.onnx",
        "build_package": "smokeseg.export.package",
    }
    assert set(smokeseg.__all__) == {*modules, "__version__"}
    for name, module in modules.items():
        assert getattr(smokeseg, name) is getattr(importlib.import_module(module), name), name
    assert set(smokeseg.__all__) <= set(dir(smokeseg))
    with pytest.raises(AttributeError, match="no_such_name"):
        smokeseg.no_such_name  # noqa: B018


def test_import_smokeseg_is_light_and_scoring_needs_no_training_code(experiment: Path):
    """A fresh interpreter: ``import smokeseg`` loads no torch; scoring loads neither Lightning nor the
    threshold tuner or evaluation (the import cycle through them is gone)."""
    script = f"""
import sys
import smokeseg
print(sorted(m for m in sys.modules if m.startswith(("torch", "lightning", "smokeseg."))))
smokeseg.Predictor.from_path({str(experiment)!r}, "cpu")
heavy = ("lightning", "smokeseg.training", "smokeseg.inference.threshold", "smokeseg.inference.evaluate")
print(sorted(m for m in sys.modules if m.startswith(heavy)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["[]", "[]"]


# --- the README example and predict_paths ---------------------------------------------------------------


def _readme_python_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("### Python API", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_example_scores_images(experiment: Path, frames: Path, monkeypatch):
    shutil.copytree(experiment, frames / "output" / "my_experiment")
    monkeypatch.chdir(frames)
    printed = StringIO()
    with redirect_stdout(printed):
        exec(_readme_python_blocks()[0], {})
    lines = printed.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == [
        "frame1.jpg",
        *sorted(p.name for p in (frames / "frames").iterdir()),
    ]
    assert "broken.jpg not scored:" in printed.getvalue() and "not an image" in printed.getvalue()


def test_readme_names_only_public_api():
    """The second README block trains and exports (too slow here): its smokeseg names must exist."""
    names = set(re.findall(r"smokeseg\.(\w+)", "\n".join(_readme_python_blocks())))
    assert names and names <= set(smokeseg.__all__)


def test_predict_paths_gives_predicts_verdict_per_image_in_input_order(experiment: Path, frames: Path):
    predictor = Predictor.from_path(experiment)
    inputs = [frames / "frame1.jpg", frames / "frames"]
    results = predictor.predict_paths(inputs)
    table = predict(predictor, collect_inputs(inputs), frames / "scored").rows
    assert [r.image_id for r in results] == list(table["image_id"])
    for result, row in zip(results, table.itertuples(), strict=True):
        if result.error is not None:
            assert result.image_id == "broken.jpg" and "broken.jpg is not an image" in result.error
            assert result.mask is None and result.smoke is None
            continue
        assert result.probabilities.shape == result.mask.shape == (row.height, row.width)
        np.testing.assert_array_equal(result.mask, result.probabilities > predictor.threshold)
        assert (result.smoke, result.confidence, result.smoke_fraction) == (
            row.smoke,
            row.confidence,
            row.smoke_fraction,
        )
        assert result.boxes == [list(box) for box in row.boxes]
    assert [r.image_id for r in predictor.predict_paths(str(frames / "frame1.jpg"))] == ["frame1.jpg"]


def test_from_path_defaults_to_the_clis_device():
    assert inspect.signature(Predictor.from_path).parameters["device"].default == "auto"


# --- what a model path is --------------------------------------------------------------------------------


def _assert_names_model_paths(error: ModelError, path: Path) -> None:
    message = str(error)
    assert str(path) in message
    assert "fold or experiment folder" in message and "scoring package" in message
    assert "weights_only" not in message and not re.search(r"\w+Error", message), "no torch internals"


def test_a_file_that_is_not_a_checkpoint_gets_a_clear_message(tmp_path: Path):
    jpeg = tmp_path / "photo.ckpt"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, format="JPEG")
    text = tmp_path / "notes.txt"
    text.write_text("experiment notes")
    for path in (jpeg, text):
        with pytest.raises(ModelError, match="is not a checkpoint") as caught:
            Predictor.from_path(path)
        _assert_names_model_paths(caught.value, path)
    tensors = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, tensors)
    with pytest.raises(ModelError, match=r"PyTorch file but not a smokeseg checkpoint.*init_from") as caught:
        Predictor.from_path(tensors)
    _assert_names_model_paths(caught.value, tensors)
    (tmp_path / "empty").mkdir()
    for path, what in ((tmp_path / "empty", "holds no model"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(ModelError, match=what) as caught:
            Predictor.from_path(path)
        _assert_names_model_paths(caught.value, path)


class _HalfRuntime:
    """Not a torch module: a runtime that scores every pixel 0.5."""

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros((len(batch), 1, *batch.shape[-2:]))

    def to(self, device: torch.device) -> _HalfRuntime:
        return self

    def eval(self) -> _HalfRuntime:
        return self


def test_from_path_picks_the_first_runtime_loader_that_takes_the_path(
    experiment: Path, tmp_path: Path, monkeypatch
):
    marked = tmp_path / "other_runtime"
    marked.mkdir()
    config = load_config(experiment / "config.yaml")
    loader = runtimes.RuntimeLoader(
        lambda path: path.name == marked.name, lambda path: runtimes.LoadedModel([_HalfRuntime()], config)
    )
    monkeypatch.setattr(runtimes, "RUNTIME_LOADERS", {"half": loader, **runtimes.RUNTIME_LOADERS})
    predictor = Predictor.from_path(marked, "cpu")
    assert predictor.predict_images([np.zeros((40, 50, 3), np.uint8)])[0] == pytest.approx(0.5)
    assert isinstance(Predictor.from_path(experiment, "cpu").models[0], torch.nn.Module)
    with pytest.raises(ModelError, match="Only PyTorch checkpoints can be exported"):
        write_model(predictor, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


# --- starting weights, resume, seeds ---------------------------------------------------------------------


def test_init_from_is_read_once_and_resume_never_needs_it(
    dataset: Path, experiment: Path, tmp_path: Path, monkeypatch
):
    source = tmp_path / "pretrained"
    shutil.copytree(experiment, source)
    reads: list[Path] = []
    read_model_state = factory.read_model_state
    monkeypatch.setattr(
        factory, "read_model_state", lambda path: reads.append(path) or read_model_state(path)
    )
    original = outputs.ExperimentLog.on_train_epoch_start

    def interrupt_in_second_epoch(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt
        original(self, trainer, pl_module)

    config = load_config(dataset, [*TINY, "training.epochs=2", f"architecture.init_from={source}"])
    monkeypatch.setattr(outputs.ExperimentLog, "on_train_epoch_start", interrupt_in_second_epoch)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run.train(config, tmp_path / "fine", progress=False)
    monkeypatch.setattr(outputs.ExperimentLog, "on_train_epoch_start", original)
    assert reads == [source / "fold0" / "checkpoint.ckpt"], "one policy, applied once"
    log = (tmp_path / "fine/fold0/logs.log").read_text()
    assert log.count("Starting weights:") == 1 and f"init_from {source}" in log

    source.rename(tmp_path / "moved")
    run.resume(tmp_path / "fine", progress=False)  # interrupted: continues from last.ckpt
    assert json.loads((tmp_path / "fine/fold0/metrics.json").read_text())["epochs"] == 2
    run.resume(tmp_path / "fine", progress=False)  # finished: nothing to train
    assert len(reads) == 1
    with pytest.raises(ConfigError, match=r"init_from=.*does not exist"):
        run.train(config, tmp_path / "new", progress=False)


def test_the_same_config_and_seed_repeat_a_run_exactly(dataset: Path, experiment: Path, tmp_path: Path):
    """``experiment`` ran earlier in this process, so the global random state has moved on since."""
    torch.rand(3)  # and moves on further
    run.train(load_config(dataset, ONE_EPOCH), tmp_path / "again", progress=False)
    for name in ("charts.json", "metrics.json"):
        first = json.loads((experiment / "fold0" / name).read_text())
        second = json.loads((tmp_path / "again/fold0" / name).read_text())
        for timing in ("training_time_s", "wall_time_s"):
            first.pop(timing, None), second.pop(timing, None)
        assert first == second, name
    pd.testing.assert_frame_equal(
        pd.read_parquet(experiment / "fold0/validation_predictions.parquet"),
        pd.read_parquet(tmp_path / "again/fold0/validation_predictions.parquet"),
    )


def test_smokeseg_keeps_albumentations_off_the_network() -> None:
    """albumentations fetches its version info from PyPI on import unless told not to."""
    code = (
        "import os, smokeseg, albumentations; "
        "assert os.environ['NO_ALBUMENTATIONS_UPDATE'] == '1', os.environ.get('NO_ALBUMENTATIONS_UPDATE')"
    )
    environment = {key: value for key, value in os.environ.items() if key != "NO_ALBUMENTATIONS_UPDATE"}
    completed = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert "fetching version info" not in completed.stderr
