"""End-to-end training on a tiny generated dataset: outputs, resume, schedules, early errors."""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from smokeseg.config.load import load_config
from smokeseg.config.schema import EnvironmentConfig, ExperimentConfig
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError, DataError, TrainingInterrupted
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.threshold import tune_threshold
from smokeseg.model.precision import cpu_has_native_bfloat16
from smokeseg.report.html import write_report
from smokeseg.training import outputs, run
from smokeseg.training.module import SmokeSegmentationModule, learning_rate_factor

TINY = [
    "architecture.backbone=resnet18",
    "image.image_height=64",
    "image.image_width=64",
    "training.batch_size=4",
    "environment.number_of_workers=0",
    "environment.seed=7",
    "training.build_scoring_pipelines=false",
]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    return generate_demo_dataset(folder, n_train=12, n_test=4, size=(64, 96), seed=3)


def _config(config_path: Path, *extra: str):
    return load_config(config_path, [*TINY, *extra])


def test_one_epoch_run_writes_every_output(tiny_dataset: Path, tmp_path: Path):
    config = _config(tiny_dataset, "training.epochs=1", "training.build_scoring_pipelines=true")
    results = run.train(config, tmp_path / "exp", progress=False)
    assert [r.fold for r in results] == [0]
    assert (tmp_path / "exp/scoring_package/model.onnx").is_file(), "Hydrogen Torch's scoring pipeline"
    fold_dir = tmp_path / "exp/fold0"
    for name in (
        "config.yaml",
        "logs.log",
        "charts.json",
        "checkpoint.ckpt",
        "metrics.json",
        "validation_predictions.parquet",
        "test_predictions.parquet",
    ):
        assert (fold_dir / name).is_file(), name
    assert not list(fold_dir.glob("*.tmp")), "no temporary files are left behind"
    assert not (fold_dir / "last.ckpt").exists(), "a finished fold keeps one checkpoint"
    checkpoint = torch.load(fold_dir / "checkpoint.ckpt", weights_only=True)
    assert {"state_dict", "hyper_parameters"} <= set(checkpoint) and "optimizer_states" not in checkpoint

    log = (fold_dir / "logs.log").read_text()
    for line in (
        "Global random seed: 7",
        "environment.gpus=['0'], but no CUDA GPU is in use: training on the CPU",
        "Number of observations in train dataset:",
        "Number of observations in validation dataset:",
        "Number of observations in test dataset: 4",
        "Training Epoch: 1 / 1",
        "Mean validation loss:",
        "Validation IoU:",
        "Test IoU:",
        "Checkpoint saved",
    ):
        assert line in log, line

    charts = json.loads((fold_dir / "charts.json").read_text())
    assert set(charts) >= {"train_loss", "learning_rate", "validation_loss", "validation_IoU"}
    train_steps = charts["train_loss"]["step"]
    assert train_steps == sorted(train_steps) and train_steps[0] == 4, "step counts samples seen"

    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert metrics["train_observations"] + metrics["validation_observations"] == 12
    assert 0.0 <= metrics["validation_IoU"] <= 1.0 and 0.0 <= metrics["test_IoU"] <= 1.0
    assert 0 < metrics["training_time_s"] <= metrics["wall_time_s"], "training, then scoring whole frames"

    validation = pd.read_parquet(fold_dir / "validation_predictions.parquet")
    assert len(validation) == metrics["validation_observations"]
    assert {"image_id", "rle_mask", "true_rle_mask", "iou", "loss", "probability_max"} <= set(validation)
    assert validation["loss"].notna().all()
    test = pd.read_parquet(fold_dir / "test_predictions.parquet")
    assert len(test) == 4 and (test["height"] == 64).all() and (test["width"] == 96).all()

    effective = load_config(fold_dir / "config.yaml")
    assert effective.environment.seed == 7 and effective.training.epochs == 1


@pytest.fixture(scope="module")
def trained_fold(tiny_dataset: Path, tmp_path_factory) -> tuple[ExperimentConfig, Path, int]:
    """A finished one-epoch fold trained with ``environment.gpus=[]``, and how many validation passes ran
    outside ``fit``."""
    config = _config(tiny_dataset, "training.epochs=1", "environment.gpus=[]", "dataset.test_dataframe=None")
    experiment_dir = tmp_path_factory.mktemp("trained") / "exp"
    passes = []
    validate = L.Trainer.validate
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            L.Trainer, "validate", lambda *args, **kwargs: passes.append(1) or validate(*args, **kwargs)
        )
        run.train(config, experiment_dir, progress=False)
    return config, experiment_dir / "fold0", len(passes)


def test_fold_end_keeps_the_in_loop_validation_losses(trained_fold):
    _, fold_dir, passes = trained_fold
    assert passes == 0, "the kept checkpoint's per-image losses come from its own in-loop validation"
    losses = pd.read_parquet(fold_dir / "validation_predictions.parquet")["loss"]
    assert losses.notna().all()
    charts = json.loads((fold_dir / "charts.json").read_text())
    assert losses.mean() == pytest.approx(charts["validation_loss"]["value"][-1], rel=1e-5)
    assert "training on the CPU" not in (fold_dir / "logs.log").read_text(), "gpus=[] asks for the CPU"


def _finish_on(device: torch.device, trained_fold, tmp_path: Path) -> pd.DataFrame:
    """The fold's end again, for its kept (slimmed, so loss-less) checkpoint, on ``device``."""
    config, fold_dir, _ = trained_fold
    shutil.copy(fold_dir / "checkpoint.ckpt", tmp_path / "checkpoint.ckpt")
    module = SmokeSegmentationModule(config.model_dump(mode="json"))
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=device), current_epoch=1)
    data = run.ExperimentData.load(config).fold(config, 0)
    run._finish_fold(module, trainer, config, 0, tmp_path, data, [])
    return pd.read_parquet(tmp_path / "validation_predictions.parquet")


def test_a_checkpoint_without_its_losses_is_validated_once_more(trained_fold, tmp_path: Path):
    again = _finish_on(torch.device("cpu"), trained_fold, tmp_path)
    kept = pd.read_parquet(trained_fold[1] / "validation_predictions.parquet")
    assert again["loss"].notna().all()
    assert np.allclose(again["loss"], kept["loss"], rtol=1e-4), "the kept losses are the checkpoint's own"


def test_fold_end_scores_on_the_training_device(trained_fold, tmp_path: Path, monkeypatch):
    used = []

    class Scored(Exception):
        pass

    def predictor(models, config, device="cpu", **kwargs):
        used.append(device)
        raise Scored

    monkeypatch.setattr(run, "_validation_losses", lambda *args: used.append(args[-1]) or {})
    monkeypatch.setattr(run, "Predictor", predictor)
    gpu = torch.device("cuda", 1)
    with pytest.raises(Scored):
        _finish_on(gpu, trained_fold, tmp_path)
    assert used == [gpu, gpu], "validation losses, then scoring, on the training device"


def test_checkpoint_scores_without_the_training_data(tiny_dataset: Path, tmp_path: Path):
    run.train(_config(tiny_dataset, "training.epochs=1"), tmp_path / "exp", progress=False)
    moved = tmp_path / "elsewhere.ckpt"
    (tmp_path / "exp/fold0/checkpoint.ckpt").rename(moved)
    predictor = Predictor.from_path(moved)
    probabilities = predictor.predict_images([__import__("numpy").zeros((50, 70, 3), "uint8")])[0]
    assert probabilities.shape == (50, 70)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_random_seed_is_drawn_and_recorded(tiny_dataset: Path, tmp_path: Path):
    config = _config(tiny_dataset, "training.epochs=1", "environment.seed=-1", "dataset.data_sample=0.5")
    run.train(config, tmp_path / "exp", progress=False)
    recorded = load_config(tmp_path / "exp/config.yaml").environment.seed
    assert recorded >= 0
    assert f"Global random seed: {recorded}" in (tmp_path / "exp/fold0/logs.log").read_text()


@pytest.mark.parametrize(
    ("choice", "thinned"),
    [
        ("[Train]", {"train"}),
        ("[Validation]", {"validation"}),
        ("[Train, Validation]", {"train", "validation"}),
    ],
)
def test_data_sample_thins_the_sets_data_sample_choice_names(tiny_dataset: Path, choice: str, thinned: set):
    full_config = _config(tiny_dataset)
    full = run.ExperimentData.load(full_config).fold(full_config, 0)
    config = _config(tiny_dataset, "dataset.data_sample=0.5", f"dataset.data_sample_choice={choice}")
    sampled = run.ExperimentData.load(config).fold(config, 0)
    for part in ("train", "validation"):
        kept, every = ([s.image_id for s in getattr(fold, part)] for fold in (sampled, full))
        if part in thinned:
            assert len(kept) == max(1, round(len(every) / 2)) and set(kept) < set(every), part
        else:
            assert kept == every, part


def test_interrupted_run_resumes_to_the_same_number_of_steps(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    config = _config(tiny_dataset, "training.epochs=2")
    run.train(config, tmp_path / "full", progress=False)
    full_steps = json.loads((tmp_path / "full/fold0/charts.json").read_text())["train_loss"]["step"]

    original = outputs.ExperimentLog.on_train_epoch_start

    def interrupt_in_second_epoch(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt
        original(self, trainer, pl_module)

    monkeypatch.setattr(outputs.ExperimentLog, "on_train_epoch_start", interrupt_in_second_epoch)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run.train(config, tmp_path / "cut", progress=False)
    assert (tmp_path / "cut/fold0/last.ckpt").is_file()
    assert not (tmp_path / "cut/fold0/metrics.json").exists(), "an unfinished fold does not look finished"
    monkeypatch.setattr(outputs.ExperimentLog, "on_train_epoch_start", original)

    run.resume(tmp_path / "cut", progress=False)
    resumed_steps = json.loads((tmp_path / "cut/fold0/charts.json").read_text())["train_loss"]["step"]
    assert resumed_steps == full_steps
    assert "Resuming from" in (tmp_path / "cut/fold0/logs.log").read_text()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("architecture.architecture=UNetX", "UNetX"),
        ("architecture.backbone=resnet35", "resnet35"),
        ("training.loss_function=BCEJaccard", "BCEJaccard"),
    ],
)
def test_bad_names_fail_before_any_training(tiny_dataset: Path, tmp_path: Path, override: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        run.train(_config(tiny_dataset, override), tmp_path / "exp", progress=False)
    assert not (tmp_path / "exp").exists(), "nothing is written for a config that cannot run"


def test_an_unusable_neptune_logger_is_a_config_error(tmp_path: Path):
    # Lightning 2.6 sunset Neptune (no loggers.NeptuneLogger, and the class refuses to start); older
    # Lightning needs the neptune package. Either way the user gets a message, not an AttributeError.
    config = ExperimentConfig.model_validate({"logging": {"logger": "Neptune"}})
    try:
        logger = run._logger_factory(config, tmp_path)
    except ConfigError as error:
        assert "logging.logger" in str(error)
    else:
        assert type(logger).__name__ == "NeptuneLogger"  # a Lightning and neptune that still work together


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["training.epochs=0"], "epochs"),
        (["image.image_width=100"], "divisible by 32"),
        (["image.max_side=512", "image.long_side=1024"], "long_side or image.max_side, not both"),
    ],
)
def test_bad_values_fail_at_load(tiny_dataset: Path, overrides: list[str], expected: str):
    with pytest.raises(ConfigError, match=expected):
        _config(tiny_dataset, *overrides)


@pytest.mark.parametrize("schedule", ["Cosine", "Linear", "Constant"])
def test_schedules_warm_up_then_decay(schedule: str):
    factors = [learning_rate_factor(step, 100, 10, schedule) for step in range(101)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    if schedule == "Constant":
        assert factors[-1] == 1.0
    else:
        assert factors[-1] == pytest.approx(0.0, abs=1e-12), "decays to 0 after the last step"
        assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    if schedule == "Cosine":
        assert factors[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    "extra",
    [
        ["training.optimizer=SGD", "training.schedule=Linear", "training.loss_function=BCE"],
        [
            "training.optimizer=Adam",
            "training.schedule=Constant",
            "training.loss_function=Lovasz",
            "training.warmup_epochs=1",
        ],
        [
            "training.optimizer=RMSprop",
            "training.loss_function=Focal",
            "training.gradient_clip=1.0",
            "training.grad_accumulation=2",
            "augmentation.mix_image=Cutmix",
            "environment.mixed_precision_training=true",
        ],
        [
            "training.loss_function=Dice",
            "training.differential_learning_rate_layers=[encoder]",
            "training.differential_learning_rate=0.0001",
            "augmentation.mix_image=Mixup",
            "training.calculate_train_metric=true",
            "training.evaluate_before_training=true",
            "training.save_best_checkpoint=true",
            "augmentation.augmentations_strategy=Hard",
        ],
    ],
)
def test_training_options_each_run_an_epoch(tiny_dataset: Path, tmp_path: Path, extra: list[str]):
    config = _config(tiny_dataset, "training.epochs=1", "dataset.test_dataframe=None", *extra)
    results = run.train(config, tmp_path / "exp", progress=False)
    assert math.isfinite(results[0].metrics["validation_loss"])


def _trained_parameters(config, tmp_path: Path, monkeypatch) -> tuple[dict, dict]:
    """The model's parameters as training starts, and in the kept checkpoint."""
    before: dict[str, torch.Tensor] = {}

    def snapshot(module: SmokeSegmentationModule) -> None:
        before.update({name: p.detach().clone() for name, p in module.model.named_parameters()})

    monkeypatch.setattr(SmokeSegmentationModule, "on_train_start", snapshot)
    run.train(config, tmp_path / "exp", progress=False)
    state = torch.load(tmp_path / "exp/fold0/checkpoint.ckpt", weights_only=True)["state_dict"]
    return before, {name: state[f"model.{name}"] for name in before}


def test_differential_learning_rate_trains_the_named_layers_at_their_rate(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
):
    config = _config(
        tiny_dataset,
        "training.epochs=1",
        "dataset.test_dataframe=None",
        "training.differential_learning_rate_layers=[encoder]",
        "training.differential_learning_rate=0",
    )
    before, after = _trained_parameters(config, tmp_path, monkeypatch)
    encoder = [name for name in before if name.startswith("encoder.")]
    assert encoder and all(torch.equal(before[name], after[name]) for name in encoder), "frozen at rate 0"
    assert any(not torch.equal(before[name], after[name]) for name in before if name not in encoder)


def test_differential_learning_rate_layers_must_name_a_layer(tiny_dataset: Path):
    config = _config(tiny_dataset, "training.differential_learning_rate_layers=[encoders]")
    with pytest.raises(ConfigError, match=r"\['encoders'\] names no layer of this Unet.*encoder, decoder"):
        SmokeSegmentationModule(config.model_dump(mode="json"))


def test_gradient_clip_bounds_each_step(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    clip, learning_rate = 1e-6, 0.1
    config = _config(
        tiny_dataset,
        "training.epochs=1",
        "dataset.test_dataframe=None",
        "training.optimizer=SGD",
        "training.schedule=Constant",
        f"training.learning_rate={learning_rate}",
        f"training.gradient_clip={clip}",
    )
    before, after = _trained_parameters(config, tmp_path, monkeypatch)
    moved = torch.cat([(after[name] - before[name]).flatten() for name in before]).norm().item()
    # Nesterov SGD (momentum 0.9) moves at most 10 * lr * |clipped gradient| a step, and an epoch here is
    # 2 steps; unclipped, the gradient of an untrained model moves it by far more.
    assert 0 < moved <= 2 * 10 * learning_rate * clip * 1.01


def test_ema_decay_keeps_the_moving_average_of_every_step(tiny_dataset: Path, tmp_path: Path, monkeypatch):
    decay = 0.5
    config = _config(
        tiny_dataset, "training.epochs=2", "dataset.test_dataframe=None", f"training.ema_decay={decay}"
    )
    steps: list[dict[str, torch.Tensor]] = []

    def after_step(module: SmokeSegmentationModule, *_: object) -> None:
        steps.append({name: p.detach().clone() for name, p in module.model.named_parameters()})

    monkeypatch.setattr(SmokeSegmentationModule, "on_train_batch_end", after_step)
    run.train(config, tmp_path / "exp", progress=False)
    kept = torch.load(tmp_path / "exp/fold0/checkpoint.ckpt", weights_only=True)["state_dict"]
    assert len(steps) == 4, "2 epochs of 2 steps"
    average = dict(steps[0])  # torch's EMA starts from the first step's weights
    for weights in steps[1:]:
        average = {name: decay * average[name] + (1 - decay) * weights[name] for name in average}
    moved = [name for name in average if not torch.equal(steps[-1][name], steps[-2][name])]
    assert moved, "the last step changed the weights"
    for name in moved:
        torch.testing.assert_close(kept[f"model.{name}"], average[name])
    assert any(not torch.allclose(kept[f"model.{name}"], steps[-1][name]) for name in moved), (
        "the last weights were kept"
    )


@pytest.mark.parametrize(
    ("mixed", "cuda", "amx", "avx512_bf16", "expected"),
    [
        (False, True, True, True, "32-true"),
        (True, True, False, False, "16-mixed"),
        (True, False, True, True, "bf16-mixed"),
        (True, False, False, True, "bf16-mixed"),  # AVX512-BF16 alone: 0.4-0.56x the float32 step time
        (True, False, False, False, "32-true"),
    ],
)
def test_mixed_precision_uses_what_the_device_computes_fast(
    monkeypatch, mixed, cuda, amx, avx512_bf16, expected
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert run.lightning_precision(mixed, cuda) == expected


@pytest.mark.parametrize(
    ("variable", "cap", "expected"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX2", "32-true"),  # bfloat16 would run emulated: slower than float32
        ("DNNL_MAX_CPU_ISA", "avx512_core_vnni", "32-true"),  # oneDNN's older name, any case
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", "bf16-mixed"),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", "bf16-mixed"),
        ("ONEDNN_MAX_CPU_ISA", "DEFAULT", "bf16-mixed"),
    ],
)
def test_an_onednn_cap_below_bfloat16_trains_float32(monkeypatch, variable: str, cap: str, expected: str):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(variable, cap)
    assert run.lightning_precision(True, False) == expected


CPU = {"accelerator": "cpu", "devices": 1, "strategy": "auto"}


@pytest.mark.parametrize(
    ("environment", "cuda_count", "expected"),
    [
        ({"gpus": []}, 2, CPU),
        ({"gpus": ["0"]}, 0, CPU),  # the default on a machine without CUDA
        ({"gpus": ["0"]}, 1, {"accelerator": "gpu", "devices": [0], "strategy": "auto"}),
        ({"gpus": ["0", "1"]}, 2, {"accelerator": "gpu", "devices": [0, 1], "strategy": "ddp_spawn"}),
        (
            {"gpus": ["1", "0"], "number_of_gpus_per_run": 1},
            2,
            {"accelerator": "gpu", "devices": [1], "strategy": "auto"},
        ),
        (
            {"gpus": ["0", "1", "2", "3"], "number_of_gpus_per_run": 2},
            4,
            {"accelerator": "gpu", "devices": [0, 1], "strategy": "ddp_spawn"},
        ),
    ],
)
def test_gpus_and_gpus_per_run_choose_the_devices(environment: dict, cuda_count: int, expected: dict):
    assert run.trainer_devices(EnvironmentConfig(**environment), cuda_count) == expected


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        ({"gpus": ["0", "2"]}, "names GPU 2, but this machine has 2"),
        ({"gpus": ["0"], "number_of_gpus_per_run": 2}, "number_of_gpus_per_run=2 is more than the 1"),
    ],
)
def test_impossible_gpu_choices_are_explained(environment: dict, expected: str):
    with pytest.raises(ConfigError, match=expected):
        run.trainer_devices(EnvironmentConfig(**environment), 2)


def test_gpu_ids_are_checked_at_load(tiny_dataset: Path):
    with pytest.raises(ConfigError, match="GPU ids are numbers"):
        _config(tiny_dataset, "environment.gpus=[cuda0]")


@pytest.mark.parametrize(
    ("gpus", "strategy", "device_ids"),
    [("[1]", "SingleDeviceStrategy", [1]), ("[0, 1]", "DDPStrategy", [0, 1])],
)
def test_lightning_builds_the_chosen_gpu_trainer(
    tiny_dataset: Path, tmp_path: Path, monkeypatch, gpus, strategy, device_ids
):
    """Lightning's own configuration of a 2-GPU machine, which this test pretends to be."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = _config(tiny_dataset, f"environment.gpus={gpus}", "environment.mixed_precision_training=true")
    trainer = run._trainer(config, tmp_path, False, run.trainer_devices(config.environment, 2))
    assert type(trainer.strategy).__name__ == strategy
    assert trainer.device_ids == device_ids and trainer.strategy.root_device == torch.device(
        "cuda", device_ids[0]
    )
    assert trainer.precision == "16-mixed"
    if len(device_ids) > 1:
        assert trainer.strategy.launcher._start_method == "spawn", "only the fit runs in the workers"


@pytest.mark.slow
def test_spawned_ddp_trains_and_scores_every_validation_image(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
):
    """The several-GPU path on two CPU processes: the fit runs in the spawned workers, the fold end here."""
    monkeypatch.setattr(
        run, "trainer_devices", lambda *args: {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"}
    )
    run.train(_config(tiny_dataset, "training.epochs=1"), tmp_path / "exp", progress=False)
    validation = pd.read_parquet(tmp_path / "exp/fold0/validation_predictions.parquet")
    assert len(validation) == 3 and validation["loss"].notna().all(), "each rank validated half: scored again"


def test_native_resolution_trains_on_crops_and_scores_whole_frames(tiny_dataset: Path, tmp_path: Path):
    config = _config(
        tiny_dataset,
        "training.epochs=1",
        "image.resolution=native",
        "image.image_width=32",
        "image.image_height=32",
        "image.smoke_crop_probability=0.7",
    )
    results = run.train(config, tmp_path / "exp", progress=False)
    assert math.isfinite(results[0].metrics["validation_loss"])
    test = pd.read_parquet(tmp_path / "exp/fold0/test_predictions.parquet")
    assert (test["height"] == 64).all() and (test["width"] == 96).all()
    predictor = Predictor.from_path(tmp_path / "exp")
    frame = np.random.default_rng(0).integers(0, 255, (70, 150, 3), dtype=np.uint8)
    probabilities = predictor.predict_images([frame])[0]
    assert probabilities.shape == (70, 150)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    # No resize: a frame the encoder's stride divides is scored exactly as the model sees it.
    exact = frame[:64, :128]
    view = torch.from_numpy(predictor.preprocess(exact)[None])
    expected = torch.sigmoid(predictor.models[0](view))[0, 0].detach().numpy()
    assert np.abs(predictor.predict_images([exact])[0] - expected).max() < 1e-5


def test_long_side_brings_small_frames_up_and_scores_at_their_own_size(tiny_dataset: Path, tmp_path: Path):
    config = _config(
        tiny_dataset,
        "training.epochs=1",
        "image.resolution=native",
        "image.long_side=192",
        "image.image_width=64",
        "image.image_height=64",
    )
    fold = run.ExperimentData.load(config).fold(config, 0)
    image, mask = run._cached_dataset(fold.train, A.Compose([]), config).load(0)
    assert image.shape[:2] == mask.shape == (128, 192), "64x96 frames are enlarged 2x, keeping their aspect"
    run.train(config, tmp_path / "exp", progress=False)
    test = pd.read_parquet(tmp_path / "exp/fold0/test_predictions.parquet")
    assert (test["height"] == 64).all() and (test["width"] == 96).all()
    frame = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    assert Predictor.from_path(tmp_path / "exp").predict_images([frame])[0].shape == (300, 400)


def test_an_unreadable_test_image_is_reported_not_fatal(tmp_path: Path):
    config_path = generate_demo_dataset(tmp_path / "data", n_train=8, n_test=3, size=(64, 96), seed=4)
    broken = sorted((tmp_path / "data/images").glob("test_*"))[0]
    broken.write_bytes(b"not a jpeg")
    run.train(_config(config_path, "training.epochs=1"), tmp_path / "exp", progress=False)
    test = pd.read_parquet(tmp_path / "exp/fold0/test_predictions.parquet")
    assert len(test) == 3
    failed = test[test["error"].notna()]
    assert list(failed["image_id"]) == [broken.name] and "not an image" in failed["error"].iloc[0]


def test_extra_frames_only_train_and_leave_out_the_validation_groups(tiny_dataset: Path, tmp_path: Path):
    folder = tiny_dataset.parent
    train = pd.read_parquet(folder / "train.pq").assign(scene=[f"site-{i // 2}" for i in range(12)])
    train.to_parquet(tmp_path / "train.pq", index=False)
    # Four more labelled frames: one from a scene of the site, three from scenes the site does not have.
    extra = pd.read_parquet(folder / "test.pq").assign(scene=["site-0", "other-1", "other-2", "other-3"])
    extra.to_parquet(tmp_path / "extra.pq", index=False)
    site = [f"dataset.train_dataframe={tmp_path / 'train.pq'}", "dataset.group_fold_column=scene"]
    with_extra = [*site, f"dataset.extra_train_dataframe={tmp_path / 'extra.pq'}"]
    left_out = []
    for fold_number in range(5):  # validation_size 0.2: five folds
        plain_config, config = (
            _config(tiny_dataset, *s, f"dataset.folds=[{fold_number}]") for s in (site, with_extra)
        )
        plain = run.ExperimentData.load(plain_config).fold(plain_config, fold_number)
        fold = run.ExperimentData.load(config).fold(config, fold_number)
        validation_scenes = {s.group for s in fold.validation}
        trained_extra = [s.image_id for s in fold.train if s.image_id.startswith("test_")]
        assert trained_extra == list(extra.loc[~extra["scene"].isin(validation_scenes), "image_id"])
        assert [s.image_id for s in fold.validation] == [s.image_id for s in plain.validation]
        site_frames = [s.image_id for s in fold.train if not s.image_id.startswith("test_")]
        assert site_frames == [s.image_id for s in plain.train], "the site's own split is unchanged"
        left_out += [name for name in extra["image_id"] if name not in trained_extra]
    assert left_out == ["test_000.jpg"], "the site-0 frame, once: in the fold that validates site-0"
    config = _config(tiny_dataset, *with_extra[:-1], "dataset.extra_train_dataframe=missing.pq")
    with pytest.raises(ConfigError, match="extra_train_dataframe"):
        run.validate_before_training(config)


def test_validated_extra_frames_join_their_fold_and_tuning_and_the_report_find_them(
    tiny_dataset: Path, tmp_path: Path
):
    folder = tiny_dataset.parent
    train = pd.read_parquet(folder / "train.pq").assign(scene=[f"site-{i // 2}" for i in range(12)])
    train.to_parquet(tmp_path / "train.pq", index=False)
    # The extra frames sit in a folder of their own, under names the data folder lacks: the lookups must
    # use extra_data_folder.
    extra = pd.read_parquet(folder / "test.pq").assign(scene=["site-0", "site-0", "other-1", "other-2"])
    (tmp_path / "extra_images").mkdir()
    for name in extra["image_id"]:
        shutil.copyfile(folder / "images" / name, tmp_path / "extra_images" / f"extra_{name}")
    extra["image_id"] = "extra_" + extra["image_id"]
    extra.to_parquet(tmp_path / "extra.pq", index=False)
    overrides = [
        f"dataset.train_dataframe={tmp_path / 'train.pq'}",
        "dataset.group_fold_column=scene",
        f"dataset.extra_train_dataframe={tmp_path / 'extra.pq'}",
        f"dataset.extra_data_folder={tmp_path / 'extra_images'}",
    ]
    configs = {
        rule: _config(tiny_dataset, *overrides, f"dataset.extra_in_validation_groups={rule}")
        for rule in ("leave_out", "validate")
    }
    data = run.ExperimentData.load(configs["validate"])
    # The fold that validates site-0 also validates its two extra frames; training is the same.
    fold_number = next(
        f for f in range(5) if "site-0" in {s.group for s in data.fold(configs["validate"], f).validation}
    )
    left_out, validated = (data.fold(configs[rule], fold_number) for rule in ("leave_out", "validate"))
    site_validation = [s.image_id for s in left_out.validation]
    extra_validation = ["extra_test_000.jpg", "extra_test_001.jpg"]
    assert [s.image_id for s in validated.validation] == [*site_validation, *extra_validation]
    assert [s.image_id for s in validated.train] == [s.image_id for s in left_out.train]
    config = _config(
        tiny_dataset,
        *overrides,
        "dataset.extra_in_validation_groups=validate",
        f"dataset.folds=[{fold_number}]",
        "training.epochs=1",
    )
    run.train(config, tmp_path / "exp", progress=False)
    fold_dir = tmp_path / f"exp/fold{fold_number}"
    table = pd.read_parquet(fold_dir / "validation_predictions.parquet")
    assert list(table["image_id"]) == [*site_validation, *extra_validation]
    assert tune_threshold(tmp_path / "exp", "mean_image_IoU").images == len(site_validation) + 2
    page = write_report(tmp_path / "exp").read_text(encoding="utf-8")
    shown = re.findall(r'<figure class="tile" data-image-id="([^"]+)"', page)
    assert set(extra_validation) <= set(shown)
    assert "is not in" not in page and "image not available" not in page


def test_validated_extra_frames_may_not_share_an_image_id_with_the_site(tiny_dataset: Path, tmp_path: Path):
    folder = tiny_dataset.parent
    pd.read_parquet(folder / "train.pq").head(2).to_parquet(tmp_path / "extra.pq", index=False)
    overrides = [f"dataset.extra_train_dataframe={tmp_path / 'extra.pq'}"]
    run.ExperimentData.load(_config(tiny_dataset, *overrides))  # left out, never validated: no clash
    config = _config(tiny_dataset, *overrides, "dataset.extra_in_validation_groups=validate")
    with pytest.raises(DataError, match=r"2 image ids of .*extra.pq are also in .*train.pq.*leave_out"):
        run.ExperimentData.load(config)


def test_cpu_training_runs_channels_last_in_float32_with_the_same_curve(
    tiny_dataset: Path, tmp_path: Path, monkeypatch
):
    """Unset, ``environment.channels_last_training`` is on where the CPU trains in float32 and off where
    it trains in bfloat16; set, it is what it says."""
    fp32 = _config(
        tiny_dataset,
        "training.epochs=1",
        "dataset.test_dataframe=None",
        "environment.mixed_precision_training=false",
    )
    layouts: list[tuple[bool, bool]] = []
    training_step = SmokeSegmentationModule.training_step

    def recording(module: SmokeSegmentationModule, batch: dict, index: int) -> torch.Tensor:
        weight = module.model.encoder.conv1.weight
        layouts.append(
            (
                batch["image"].is_contiguous(memory_format=torch.channels_last),
                weight.is_contiguous(memory_format=torch.channels_last),
            )
        )
        return training_step(module, batch, index)

    def trained_layouts(config: ExperimentConfig, name: str, **environment) -> set[tuple[bool, bool]]:
        config = config.model_copy(update={"environment": config.environment.model_copy(update=environment)})
        layouts.clear()
        run.train(config, tmp_path / name, progress=False)
        return set(layouts)

    monkeypatch.setattr(SmokeSegmentationModule, "training_step", recording)
    assert fp32.environment.channels_last_training is None
    assert trained_layouts(fp32, "channels_last") == {(True, True)}, "float32: channels-last by default"
    assert trained_layouts(fp32, "contiguous", channels_last_training=False) == {(False, False)}
    mixed = cpu_has_native_bfloat16()
    assert trained_layouts(fp32, "mixed", mixed_precision_training=True) == {(not mixed, not mixed)}, (
        "bfloat16 trains contiguous unless asked; a CPU without it trains float32, channels-last"
    )

    def losses(name: str) -> list[float]:
        return json.loads((tmp_path / name / "fold0/charts.json").read_text())["train_loss"]["value"]

    # The same start and batches: the first losses agree to float rounding, and the layout's rounding
    # (which Adam's normalised steps amplify in the weights) leaves the curve where it was.
    fast, plain = losses("channels_last"), losses("contiguous")
    assert len(fast) == len(plain) >= 2
    assert fast[0] == pytest.approx(plain[0], rel=1e-5)
    assert fast == pytest.approx(plain, rel=1e-2), "the layout changes speed, not what is learned"
