"""Run an experiment: validate the config, load the data, train each selected fold, write its outputs.

Output layout, per experiment: ``<output>/config.yaml``, ``metrics.json`` (all folds) and one
``fold<k>/`` per fold with config.yaml, logs.log, charts.json, checkpoint.ckpt (+ last.ckpt for
resuming), metrics.json, validation_predictions.parquet and, with a test table, test_predictions.parquet.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, RichProgressBar
from torch.utils.data import ConcatDataset, DataLoader

from smokeseg.config.load import load_config, save_config
from smokeseg.config.schema import DatasetConfig, EnvironmentConfig, ExperimentConfig, RunTable
from smokeseg.data.augment import build_context_transform, build_inference_transform, build_train_transform
from smokeseg.data.check import check_rle_order
from smokeseg.data.dataset import SegmentationDataset, limit_opencv_threads
from smokeseg.data.formats import Sample, check_table_exists, load_samples
from smokeseg.data.groups import assign_groups
from smokeseg.data.negatives import (
    NegativeMix,
    check_negative_table,
    frame_location,
    load_negatives,
    negative_draws,
    negative_sources,
)
from smokeseg.data.splits import resolve_seed, split_train_validation
from smokeseg.errors import ConfigError, DataError, SmokesegError, TrainingInterrupted
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.scoring import dataset_scores, failed_row, prediction_row, write_table
from smokeseg.layout import (
    CHARTS_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LAST_CHECKPOINT_NAME,
    METRICS_NAME,
    SCORING_PACKAGE_NAME,
    TEST_PREDICTIONS_NAME,
    VALIDATION_PREDICTIONS_NAME,
)
from smokeseg.model.factory import check_architecture, initialize_weights
from smokeseg.model.losses import check_loss_name
from smokeseg.model.precision import mixed_precision_dtype
from smokeseg.training.module import VALIDATION_LOSSES_KEY, SmokeSegmentationModule
from smokeseg.training.outputs import (
    AtomicCheckpointIO,
    ChartsRecorder,
    ExperimentLog,
    experiment_folder,
    open_experiment_log,
    read_json,
    slim_checkpoint,
    write_json,
)

logger = logging.getLogger("smokeseg")


@dataclass
class FoldResult:
    fold: int
    fold_dir: Path
    metrics: dict[str, Any]


@dataclass
class FoldData:
    train: list[Sample]
    validation: list[Sample]
    negatives: list[Sample] = field(default_factory=list)  # smoke-free crops drawn beside train


def _logger_factory(config: ExperimentConfig, fold_dir: Path) -> Any:
    from lightning.pytorch import loggers

    factories: dict[str, Callable[[], Any]] = {
        "None": lambda: False,
        "CSV": lambda: loggers.CSVLogger(fold_dir, name="csv_logs"),
        "TensorBoard": lambda: loggers.TensorBoardLogger(fold_dir, name="tensorboard"),
        "Neptune": lambda: _neptune_logger(config.logging.neptune_project or None),
    }
    try:
        return factories[config.logging.logger]()
    except (ImportError, ModuleNotFoundError) as error:
        raise ConfigError(
            f"logging.logger={config.logging.logger} needs a package that is not installed ({error}). "
            "Install it, or set logging.logger=None."
        ) from None


def _neptune_logger(project: str | None) -> Any:
    # Lightning 2.6 stopped exporting NeptuneLogger from lightning.pytorch.loggers (Neptune was sunset); its
    # module still has it, and there it refuses to start.
    from lightning.pytorch.loggers.neptune import NeptuneLogger

    try:
        return NeptuneLogger(project=project)
    except RuntimeError as error:
        raise ConfigError(
            "logging.logger=Neptune does not work with the installed Lightning "
            f"({str(error).splitlines()[0]}): set logging.logger to CSV, TensorBoard or None."
        ) from None


def experiment_dir_for(config: ExperimentConfig, output_dir: str | Path | None) -> Path:
    return Path(output_dir) if output_dir else Path("output") / config.experiment_name


def validate_before_training(config: ExperimentConfig, *, starting_weights: bool = True) -> None:
    """Fail in seconds, before any data is read, on names and settings that cannot work.

    ``starting_weights=False``: no fold starts fresh, so ``init_from`` and weight files are not checked.
    """
    check_architecture(config.architecture, starting_weights=starting_weights)
    check_loss_name(config.training.loss_function)
    trainer_devices(config.environment, torch.cuda.device_count())
    build_train_transform(config.augmentation, config.image)
    build_inference_transform(config.augmentation, config.image)
    config.dataset.training_tables()
    check_negative_table(config.dataset)
    check_table_exists(
        config.dataset.extra_train_dataframe,
        "extra_train_dataframe",
        "Point it at a table of labelled frames (relative paths are taken from the config file's folder), "
        "or leave it unset.",
    )


def train(
    config: ExperimentConfig,
    output_dir: str | Path | None = None,
    *,
    progress: bool = True,
    accelerator: str = "auto",
) -> list[FoldResult]:
    """Train every selected fold of a new experiment."""
    limit_opencv_threads()
    validate_before_training(config)
    seed = resolve_seed(config.environment.seed)
    config = config.model_copy(update={"environment": config.environment.model_copy(update={"seed": seed})})
    experiment_dir = experiment_dir_for(config, output_dir)
    with experiment_folder(experiment_dir, resume=False):
        results = _train_folds(
            config, experiment_dir, resume=False, progress=progress, accelerator=accelerator
        )
        _build_scoring_pipeline(config, experiment_dir)
    return results


def resume(run_dir: Path, *, progress: bool = True, accelerator: str = "auto") -> list[FoldResult]:
    """Continue an interrupted experiment (or one of its fold folders) from its last checkpoints."""
    limit_opencv_threads()
    experiment_dir = run_dir.parent if run_dir.name.startswith("fold") else run_dir
    if not (experiment_dir / CONFIG_NAME).is_file():
        raise SmokesegError(
            f"{run_dir} holds no {CONFIG_NAME}; give the output folder of an earlier `smokeseg train`."
        )
    config = load_config(experiment_dir / CONFIG_NAME)
    # Started folds continue from last.ckpt: an init_from source moved since is needed only by new folds.
    validate_before_training(config, starting_weights=_has_new_folds(config, experiment_dir))
    with experiment_folder(experiment_dir, resume=True):
        results = _train_folds(
            config, experiment_dir, resume=True, progress=progress, accelerator=accelerator
        )
        _build_scoring_pipeline(config, experiment_dir)
    return results


def _build_scoring_pipeline(config: ExperimentConfig, experiment_dir: Path) -> None:
    """Hydrogen Torch's ``build_scoring_pipelines``: the deployable package, written after training."""
    if config.training.build_scoring_pipelines:
        from smokeseg.export.package import build_package  # onnx is only needed here

        package = build_package(experiment_dir, experiment_dir / SCORING_PACKAGE_NAME)
        logger.info("Scoring package: %s", package)


@dataclass
class ExperimentData:
    """The experiment's samples: train table, custom validation table, test table, negatives, and the
    extra frames that only train (``dataset.extra_train_dataframe``)."""

    train: list[Sample]
    validation: list[Sample]
    test: list[Sample]
    negatives: list[Sample] = field(default_factory=list)
    extra: list[Sample] = field(default_factory=list)
    negative_sources: dict[str, str] = field(default_factory=dict)  # crop id -> its source frame
    _groups: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def load(cls, config: ExperimentConfig) -> ExperimentData:
        """Each table's samples; a table whose masks decode as stripes in its RLE order is refused."""
        dataset_cfg = config.dataset
        tables: dict[str, RunTable] = {table.name: table for table in dataset_cfg.run_tables()}

        def samples(name: str) -> list[Sample]:
            if name not in tables:
                return []
            table = tables[name]
            loaded = load_samples(
                table.table, table.data_folder, table.settings, require_masks=table.labelled
            )
            check_rle_order(loaded, table.table, table.rle_order_setting)
            return loaded

        if dataset_cfg.negative_dataframe is not None and dataset_cfg.negative_share == 0:
            logger.warning("dataset.negative_dataframe is set but dataset.negative_share is 0: not used.")
        train, validation, extra = samples("train"), samples("validation"), samples("extra")
        if dataset_cfg.extra_in_validation_groups == "validate":
            _refuse_shared_ids(train + validation, extra, tables)
        negatives = load_negatives(dataset_cfg)
        sources = negative_sources(dataset_cfg) if negatives else {}
        return cls(train, validation, samples("test"), negatives, extra, sources)

    def groups(self, rule: str) -> list[str]:
        """Fold groups of the train then validation samples, together so a look-alike frame in the
        validation table shares its training twin's group; cached, as similarity groups read every image."""
        return self._cached_groups(rule, with_extra=False)

    def _cached_groups(self, rule: str, with_extra: bool) -> list[str]:
        key = f"{rule} with extra" if with_extra else rule
        if key not in self._groups:
            samples = self.train + self.validation + (self.extra if with_extra else [])
            self._groups[key] = assign_groups(samples, rule)
        return self._groups[key]

    def _split_extra(self, rule: str, validation: set[int]) -> tuple[list[Sample], list[Sample]]:
        """The extra frames that share no group with the train-then-validation samples at ``validation``,
        and those that do.

        Grouped together with every other sample, so an extra frame that looks like a validation frame
        (or chains to one) is held out; the site's own folds come from ``groups`` alone, so adding extra
        frames never moves the site's frames between folds."""
        if not self.extra:
            return [], []
        joint = self._cached_groups(rule, with_extra=True)
        site = len(self.train) + len(self.validation)
        held_out_groups = {joint[i] for i in validation}
        outside: list[Sample] = []
        held_out: list[Sample] = []
        for sample, group in zip(self.extra, joint[site:], strict=True):
            (held_out if group in held_out_groups else outside).append(sample)
        return outside, held_out

    def fold(self, config: ExperimentConfig, fold: int) -> FoldData:
        groups = self.groups(config.dataset.group_rule)
        train_idx, validation_idx = split_train_validation(
            groups[: len(self.train)],
            config.dataset,
            fold=fold,
            seed=config.environment.seed,
            validation_groups=groups[len(self.train) :] if self.validation else None,
        )
        seed = config.environment.seed
        site = len(self.train)
        validation_rows = range(site, site + len(self.validation)) if self.validation else validation_idx
        extra, held_out = self._split_extra(config.dataset.group_rule, set(validation_rows))
        validation = self.validation or [self.train[i] for i in validation_idx]
        if held_out:
            validates = config.dataset.extra_in_validation_groups == "validate"
            logger.info(
                "dataset.extra_train_dataframe: %d of %d frames share a fold group with fold %d's validation "
                "frames: left out of its training, %s.",
                len(held_out),
                len(self.extra),
                fold,
                "validated on" if validates else "not validated on (dataset.extra_in_validation_groups)",
            )
            if validates:
                validation = validation + held_out
        train = _subsample([self.train[i] for i in train_idx] + extra, config.dataset, "Train", seed)
        validation = _subsample(validation, config.dataset, "Validation", seed)
        if config.training.train_validation_data:
            return FoldData(train + validation, validation, self.negatives)
        return FoldData(train, validation, self._negatives_outside(validation, fold))

    def _negatives_outside(self, validation: list[Sample], fold: int) -> list[Sample]:
        """The negatives not cut from one of the fold's validation frames: a crop of a frame the fold
        validates on would teach the model that frame's look before it is scored."""
        validated = {frame_location(sample.image_location) for sample in validation}
        kept = [n for n in self.negatives if self.negative_sources.get(n.image_id) not in validated]
        if len(kept) < len(self.negatives):
            logger.info(
                "dataset.negative_dataframe: %d of %d crops were cut from fold %d's validation frames: left "
                "out of its training.",
                len(self.negatives) - len(kept),
                len(self.negatives),
                fold,
            )
        return kept


def _refuse_shared_ids(site: list[Sample], extra: list[Sample], tables: dict[str, RunTable]) -> None:
    """Validation tables name frames by image id, so a validated extra frame must not share one with the
    site's frames."""
    site_ids = {sample.image_id for sample in site}
    shared = [sample.image_id for sample in extra if sample.image_id in site_ids]
    if shared:
        names = ("train", "validation")
        site_tables = " and ".join(str(tables[name].table) for name in names if name in tables)
        raise DataError(
            f"dataset.extra_in_validation_groups=validate: {len(shared)} image ids of "
            f"{tables['extra'].table} are also in {site_tables} (first: {shared[0]}), and a fold's "
            "validation predictions name frames by id. Give the extra frames other ids (a subfolder in "
            "their image_id), or set "
            "dataset.extra_in_validation_groups=leave_out."
        )


def _train_folds(
    config: ExperimentConfig, experiment_dir: Path, *, resume: bool, progress: bool, accelerator: str
) -> list[FoldResult]:
    data: ExperimentData | None = None
    results = []
    for fold in map(int, config.dataset.folds):
        fold_dir = experiment_dir / f"fold{fold}"
        if resume and (fold_dir / METRICS_NAME).is_file():
            results.append(FoldResult(fold, fold_dir, read_json(fold_dir / METRICS_NAME)))
            continue
        # Seeded before the model is built, as its random initial weights are part of the run.
        L.seed_everything(config.environment.seed, workers=True, verbose=False)
        # The model (and its pretrained weights) comes before the data: a missing download fails in seconds.
        module, resume_from = _fold_module(config, fold_dir, resume)
        data = data or ExperimentData.load(config)
        if not resume:  # only a run that can start leaves an experiment folder
            save_config(config, experiment_dir / CONFIG_NAME)
        results.append(_train_fold(module, resume_from, config, fold, fold_dir, data, progress, accelerator))
    summary = {f"fold{r.fold}": r.metrics for r in results}
    write_json(experiment_dir / METRICS_NAME, summary)
    return results


def _fold_module(
    config: ExperimentConfig, fold_dir: Path, resume: bool
) -> tuple[SmokeSegmentationModule, Path | None]:
    """A fresh module with its starting weights, or one to be filled from the fold's last checkpoint."""
    module = SmokeSegmentationModule(config.model_dump(mode="json"))
    last_checkpoint = fold_dir / LAST_CHECKPOINT_NAME
    if resume and last_checkpoint.is_file():
        return module, last_checkpoint
    module.weights_source = initialize_weights(module.model, config.architecture)
    return module, None


def _has_new_folds(config: ExperimentConfig, experiment_dir: Path) -> bool:
    """Whether a resumed experiment has a fold that neither finished nor left a last checkpoint."""
    folds = [experiment_dir / f"fold{fold}" for fold in map(int, config.dataset.folds)]
    return any(
        not (fold / METRICS_NAME).is_file() and not (fold / LAST_CHECKPOINT_NAME).is_file() for fold in folds
    )


def _subsample(samples: list[Sample], dataset: DatasetConfig, part: str, seed: int) -> list[Sample]:
    """Hydrogen Torch's ``data_sample``: a repeatable fraction of each set named in ``data_sample_choice``,
    taken after the fold split, so sampling "Validation" thins the validation fold, not the train table."""
    if dataset.data_sample >= 1 or part not in dataset.data_sample_choice:
        return samples
    keep = max(1, round(len(samples) * dataset.data_sample))
    chosen = np.sort(np.random.default_rng(seed).permutation(len(samples))[:keep])
    return [samples[i] for i in chosen]


def _seed_worker_augmentations(base_seed: int, worker_id: int) -> None:
    """Albumentations keeps its own random state: give each loader worker a distinct, repeatable one."""
    info = torch.utils.data.get_worker_info()
    assert info is not None, "runs as a DataLoader's worker_init_fn, so inside a worker"
    parts = info.dataset.datasets if isinstance(info.dataset, ConcatDataset) else [info.dataset]
    for part in parts:
        assert isinstance(part, SegmentationDataset), "_loader builds loaders of SegmentationDatasets"
        part.transform.set_random_seed(base_seed + worker_id)


def _loader(
    dataset: SegmentationDataset | ConcatDataset,
    config: ExperimentConfig,
    batch_size: int,
    train: bool,
    sampler: NegativeMix | None = None,
) -> DataLoader:
    """``sampler``: the order of a training epoch where it is not a shuffle of ``dataset`` (negatives)."""
    workers = min(config.environment.number_of_workers, os.cpu_count() or 1)
    seed = config.environment.seed
    epoch_size = len(sampler) if sampler is not None else len(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and config.training.drop_last_batch and epoch_size > batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed) if train else None,
        worker_init_fn=partial(_seed_worker_augmentations, seed) if train and workers else None,
    )


def _evaluation_schedule(evaluation_epochs: float) -> dict[str, Any]:
    """Hydrogen Torch's ``evaluation_epochs``: every N epochs, or a fraction of an epoch."""
    if evaluation_epochs >= 1:
        return {"check_val_every_n_epoch": round(evaluation_epochs)}
    return {"val_check_interval": evaluation_epochs}


def _train_fold(
    module: SmokeSegmentationModule,
    resume_from: Path | None,
    config: ExperimentConfig,
    fold: int,
    fold_dir: Path,
    data: ExperimentData,
    progress: bool,
    accelerator: str,
) -> FoldResult:
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, fold_dir / CONFIG_NAME)
    handler = open_experiment_log(fold_dir)
    started = time.perf_counter()
    fold_data = data.fold(config, fold)
    try:
        logger.info("Global random seed: %d", config.environment.seed)
        logger.info("Fold: %d", fold)
        logger.info("Number of observations in train dataset: %d", len(fold_data.train))
        logger.info("Number of observations in validation dataset: %d", len(fold_data.validation))
        if data.test:
            logger.info("Number of observations in test dataset: %d", len(data.test))
        if fold_data.negatives:
            logger.info(
                "Negatives: %d smoke-free crops, share %.2f: %d drawn per epoch beside %d training samples",
                len(fold_data.negatives),
                config.dataset.negative_share,
                negative_draws(config.dataset.negative_share, len(fold_data.train)),
                len(fold_data.train),
            )
        if resume_from is not None:
            logger.info("Resuming from %s", resume_from)
        else:
            logger.info("Starting weights: %s", module.weights_source)
        trainer = _fit(module, config, fold_dir, fold_data, resume_from, progress, accelerator)
        fitted = time.perf_counter()
        metrics = _finish_fold(module, trainer, config, fold, fold_dir, fold_data, data.test)
    finally:
        logger.removeHandler(handler)
        handler.close()
    # A recipe's budget is its training; scoring the validation and test frames whole afterwards is not.
    metrics["training_time_s"] = round(fitted - started, 1)
    metrics["wall_time_s"] = round(time.perf_counter() - started, 1)
    slim_checkpoint(fold_dir / CHECKPOINT_NAME)
    write_json(fold_dir / METRICS_NAME, metrics)  # marks the fold finished: --resume skips it
    (fold_dir / LAST_CHECKPOINT_NAME).unlink(missing_ok=True)
    return FoldResult(fold, fold_dir, metrics)


def _fit(
    module: SmokeSegmentationModule,
    config: ExperimentConfig,
    fold_dir: Path,
    data: FoldData,
    resume_from: Path | None,
    progress: bool,
    accelerator: str,
) -> L.Trainer:
    """Fit with Lightning; with ``automatically_adjust_batch_size``, halve the batch on out-of-memory."""
    training = config.training
    augment = build_train_transform(config.augmentation, config.image, seed=config.environment.seed)
    train_set = _cached_dataset(data.train, augment, config)
    validation_set = _validation_dataset(data.validation, config)
    # Negatives were cut at the model's scale: used as they are, not brought to image.long_side again.
    negative_set = SegmentationDataset(data.negatives, augment, config.image.image_normalization)
    for part in (train_set, validation_set, negative_set):
        part.preload()
    batch_size = training.batch_size
    devices = trainer_devices(config.environment, _cuda_count(accelerator))
    if devices["strategy"] == "ddp_spawn":
        # The seeded torch.Generators (loader shuffling, batch mixing) cannot cross into the spawned
        # processes as shared file descriptors ("unable to resize file"); shared files work.
        torch.multiprocessing.set_sharing_strategy("file_system")
    if config.environment.gpus and devices["accelerator"] == "cpu":
        logger.info(
            "environment.gpus=%s, but no CUDA GPU is in use: training on the CPU", config.environment.gpus
        )
    while True:
        trainer = _trainer(config, fold_dir, progress, devices)
        validation_loader = _loader(validation_set, config, _validation_batch_size(config, batch_size), False)
        try:
            if training.evaluate_before_training and resume_from is None:
                trainer.validate(module, validation_loader, verbose=False)
            trainer.fit(
                module,
                _train_loader(train_set, negative_set, config, batch_size),
                validation_loader,
                ckpt_path=resume_from,
            )
        except torch.OutOfMemoryError:
            if not training.automatically_adjust_batch_size or batch_size == 1:
                raise
            batch_size //= 2
            logger.warning("Out of memory: batch size halved to %d, training goes on", batch_size)
            last = fold_dir / LAST_CHECKPOINT_NAME
            resume_from = last if last.is_file() else None
            continue
        except SystemExit:
            # Lightning ignores further Ctrl-C while it shuts down; give the user their Ctrl-C back.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if trainer.interrupted:
                raise TrainingInterrupted(
                    f"Training interrupted. The last good checkpoint is kept in {fold_dir}; "
                    f"continue with `smokeseg train --resume {fold_dir.parent}`."
                ) from None
            raise
        return trainer


def _train_loader(
    train_set: SegmentationDataset,
    negative_set: SegmentationDataset,
    config: ExperimentConfig,
    batch_size: int,
) -> DataLoader:
    """The training samples, plus ``dataset.negative_share`` of each epoch drawn from the negatives."""
    if not len(negative_set):
        return _loader(train_set, config, batch_size, True)
    draws = negative_draws(config.dataset.negative_share, len(train_set))
    mix = NegativeMix(len(train_set), len(negative_set), draws, config.environment.seed)
    return _loader(ConcatDataset([train_set, negative_set]), config, batch_size, True, mix)


def _cached_dataset(
    samples: Sequence[Sample],
    transform: A.BaseCompose,
    config: ExperimentConfig,
    context_transform: A.BaseCompose | None = None,
) -> SegmentationDataset:
    """A dataset keeping decoded images in memory, at the size the pipeline starts from.

    resize: up to twice the model size, since augmenting there and resizing loses nothing visible;
    native: the image's own size, or brought to ``image.long_side`` / shrunk to ``image.max_side``.
    """
    image = config.image
    size: tuple[int, int] | None = (2 * image.image_height, 2 * image.image_width)
    enlarge = False
    if image.resolution == "native":
        fit = image.native_fit()
        size, enlarge = ((fit[0], fit[0]), fit[1]) if fit else (None, False)
    return SegmentationDataset(
        samples,
        transform,
        image.image_normalization,
        max_size=size,
        enlarge=enlarge,
        context_transform=context_transform,
    )


def _validation_batch_size(config: ExperimentConfig, batch_size: int) -> int:
    """Whole frames at native resolution differ in size, so they cannot share a batch."""
    if config.image.resolution == "native":
        return 1
    return config.prediction.batch_size_inference or batch_size


def _validation_dataset(samples: Sequence[Sample], config: ExperimentConfig) -> SegmentationDataset:
    """The frames as scoring sees them, with the context pass's view where ``image.context_pass`` is on."""
    return _cached_dataset(
        samples,
        build_inference_transform(config.augmentation, config.image),
        config,
        build_context_transform(config.image),
    )


LightningPrecision = Literal["32-true", "16-mixed", "bf16-mixed"]
_LIGHTNING_PRECISION: dict[torch.dtype | None, LightningPrecision] = {
    None: "32-true",
    torch.float16: "16-mixed",
    torch.bfloat16: "bf16-mixed",
}


def lightning_precision(mixed_precision: bool, use_cuda: bool) -> LightningPrecision:
    """Lightning's precision for ``environment.mixed_precision_training`` / ``_inference`` (see
    ``model.precision``)."""
    return _LIGHTNING_PRECISION[mixed_precision_dtype(mixed_precision, "cuda" if use_cuda else "cpu")]


def trainer_devices(environment: EnvironmentConfig, cuda_count: int) -> dict[str, Any]:
    """Hydrogen Torch's ``gpus`` (the GPU ids a run may use) and ``number_of_gpus_per_run`` (how many it
    takes, all by default) as Lightning Trainer arguments.

    With no CUDA GPU the run trains on the CPU, so the default ``gpus: ['0']`` works anywhere. Several
    GPUs train with DDP, spawned: only the fit runs in the worker processes, so loading the data,
    scoring and writing the outputs happen once, in this process.
    """
    if not environment.gpus or cuda_count == 0:
        return {"accelerator": "cpu", "devices": 1, "strategy": "auto"}
    missing = [gpu for gpu in environment.gpus if int(gpu) >= cuda_count]
    if missing:
        raise ConfigError(
            f"environment.gpus names GPU {', '.join(missing)}, but this machine has {cuda_count} "
            f"(ids 0 to {cuda_count - 1}): list those, or set environment.gpus=[] to train on the CPU."
        )
    count = environment.number_of_gpus_per_run or len(environment.gpus)
    if count > len(environment.gpus):
        raise ConfigError(
            f"environment.number_of_gpus_per_run={count} is more than the {len(environment.gpus)} GPUs "
            f"in environment.gpus={environment.gpus}: list more GPUs or lower it."
        )
    devices = [int(gpu) for gpu in environment.gpus[:count]]
    return {"accelerator": "gpu", "devices": devices, "strategy": "ddp_spawn" if count > 1 else "auto"}


def _cuda_count(accelerator: str) -> int:
    """CUDA GPUs the run may use: none when the caller asks for the CPU."""
    return torch.cuda.device_count() if accelerator in {"auto", "gpu", "cuda"} else 0


def _trainer(config: ExperimentConfig, fold_dir: Path, progress: bool, devices: dict[str, Any]) -> L.Trainer:
    training = config.training
    metric = config.prediction.metric
    checkpoint = ModelCheckpoint(
        dirpath=fold_dir,
        filename=Path(CHECKPOINT_NAME).stem,
        monitor=f"validation_{metric}" if training.save_best_checkpoint else None,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [
        checkpoint,
        ChartsRecorder(fold_dir / CHARTS_NAME, metric),
        ExperimentLog(metric),
    ]
    if training.ema_decay:
        # Lightning swaps the average in for validation and the checkpoints, and keeps it at the end.
        callbacks.append(EMAWeightAveraging(decay=training.ema_decay))
    if progress:
        callbacks.append(RichProgressBar())
    use_cuda = devices["accelerator"] == "gpu"
    return L.Trainer(
        max_epochs=training.epochs,
        **devices,
        precision=lightning_precision(config.environment.mixed_precision_training, use_cuda),
        callbacks=callbacks,
        logger=_logger_factory(config, fold_dir),
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=training.gradient_clip or None,
        accumulate_grad_batches=training.grad_accumulation,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=fold_dir,
        **_evaluation_schedule(training.evaluation_epochs),
    )


def _validation_losses(
    module: SmokeSegmentationModule, config: ExperimentConfig, samples: Sequence[Sample], device: torch.device
) -> dict[int, float]:
    """Per-image validation losses of the module as it is, by one validation pass on ``device``: for a
    kept checkpoint saved without them (no validation at its step, a checkpoint from an older version,
    or a DDP rank that saw only its share of the images)."""
    use_cuda = device.type == "cuda"
    L.Trainer(
        accelerator="gpu" if use_cuda else "cpu",
        devices=[device.index or 0] if use_cuda else 1,
        precision=lightning_precision(config.environment.mixed_precision_inference, use_cuda),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).validate(
        module,
        _loader(
            _validation_dataset(samples, config),
            config,
            _validation_batch_size(config, config.training.batch_size),
            False,
        ),
        verbose=False,
    )
    return dict(module.validation_losses)


def _finish_fold(
    module: SmokeSegmentationModule,
    trainer: L.Trainer,
    config: ExperimentConfig,
    fold: int,
    fold_dir: Path,
    data: FoldData,
    test_samples: Sequence[Sample],
) -> dict[str, Any]:
    """Score the kept checkpoint on validation (and test) at each image's own size, on the training
    device; write the tables."""
    checkpoint_path = fold_dir / CHECKPOINT_NAME
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    logger.info("Checkpoint saved: %s", checkpoint_path)
    device = trainer.strategy.root_device
    losses = checkpoint.get(VALIDATION_LOSSES_KEY, {})
    if set(losses) != set(range(len(data.validation))):
        losses = _validation_losses(module, config, data.validation, device)
    predictor = Predictor([module.model], config, device=device)
    threshold = predictor.threshold
    rle_order = config.dataset.rle_order
    rows = [prediction_row(p, threshold, rle_order) for p in predictor.predict_samples(data.validation)]
    for index, row in enumerate(rows):
        row["loss"] = losses.get(index, float("nan"))
    validation_table = write_table(rows, fold_dir / VALIDATION_PREDICTIONS_NAME)
    metric = config.prediction.metric
    metrics: dict[str, Any] = {
        "fold": fold,
        "seed": config.environment.seed,
        "epochs": trainer.current_epoch,
        "train_observations": len(data.train),
        "validation_observations": len(data.validation),
        "validation_loss": float(np.nanmean(validation_table["loss"])) if len(validation_table) else None,
    }
    metrics.update({f"validation_{k}": v for k, v in dataset_scores(validation_table).items()})
    logger.info(
        "Validation %s (at image size): %.5f", metric, metrics.get(f"validation_{metric}", float("nan"))
    )
    if test_samples:
        failed: list[dict[str, Any]] = []

        def report_unreadable(sample: Sample, error: SmokesegError) -> None:
            """A bad test image must not cost the trained model: it gets a row with its error."""
            logger.warning("Test image not scored: %s", error)
            failed.append(failed_row(sample, str(error)))

        test_rows = [
            prediction_row(p, threshold, rle_order)
            for p in predictor.predict_samples(test_samples, on_error=report_unreadable)
        ]
        test_table = write_table(test_rows + failed, fold_dir / TEST_PREDICTIONS_NAME)
        metrics["test_observations"] = len(test_samples)
        test_scores = dataset_scores(test_table)
        metrics.update({f"test_{k}": v for k, v in test_scores.items()})
        if test_scores:
            logger.info("Test %s: %.5f", metric, test_scores[metric])
    return metrics
