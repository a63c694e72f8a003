"""Hydrogen Torch experiment config as pydantic models: the single source of defaults and allowed values.

Section and key names follow Hydrogen Torch's image segmentation YAML. Defaults equal the reference
config (``smoke_segmentation.yaml``), so a config that only names its dataset paths runs.
Hydrogen Torch writes null as the string ``None``; optional keys accept it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from smokeseg.errors import ConfigError


def _none_string_to_null(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip() in {"None", ""} else value


OptionalPath = Annotated[Path | None, BeforeValidator(_none_string_to_null)]
OptionalInt = Annotated[int | None, BeforeValidator(_none_string_to_null)]
OptionalFloat = Annotated[float | None, BeforeValidator(_none_string_to_null)]
OptionalBool = Annotated[bool | None, BeforeValidator(_none_string_to_null)]


def _listify(value: Any) -> Any:
    """Hydrogen Torch sometimes writes a one-element list as a bare scalar."""
    if value is None or (isinstance(value, str) and value.strip() == "None"):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _string_list(value: Any) -> Any:
    """Lists of names (folds, GPUs, layers): Hydrogen Torch writes ``'0'``, users write ``0``."""
    return [str(item) if isinstance(item, int) else item for item in _listify(value)]


StrList = Annotated[list[str], BeforeValidator(_string_list)]

# The identity of Hydrogen Torch's serialised albumentations pipelines: a plain resize.
_RESIZE_ONLY_AUGMENTATIONS = (
    '{"__version__": "1.1.0", "transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": '
    '[{"__class_fullname__": "Resize", "always_apply": true, "p": 1, "height": IMAGE_HEIGHT, '
    '"width": IMAGE_WIDTH, "interpolation": 1}], "bbox_params": null, "keypoint_params": null, '
    '"additional_targets": {}}}'
)


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ArchitectureConfig(Section):
    architecture: str = Field(
        "Unet", description="smp architecture, case-insensitive (Unet, Unet++, FPN, ...)"
    )
    backbone: str = Field("resnet34", description="smp encoder name, or tu-<timm model name>")
    pretrained: bool = Field(True, description="start the encoder from ImageNet weights")
    pretrained_weights: OptionalPath = Field(None, description="a local weights file for the encoder")
    init_from: OptionalPath = Field(
        None, description="a checkpoint or experiment folder to start the whole model from"
    )
    classification_head: bool = Field(
        False,
        description="add a head on the encoder that answers 'does this image hold smoke' (smp aux_params, "
        "max-pooled so a small plume in a large frame still counts), trained jointly with the mask",
    )


class AugmentationConfig(Section):
    augmentations_strategy: Literal["None", "Soft", "Medium", "Hard", "Custom"] = Field(
        "Soft", description="preset training augmentations; Custom reads custom_train_augmentations"
    )
    custom_inference_augmentations: str = _RESIZE_ONLY_AUGMENTATIONS
    custom_train_augmentations: str = _RESIZE_ONLY_AUGMENTATIONS
    cutmix_corner: bool = False
    glare_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of training samples given a synthetic sun flare (albumentations RandomSunFlare) "
        "with their mask unchanged: glare and lens flare are not smoke; presets only",
    )
    mix_concentration: float = Field(1.0, gt=0)
    mix_image: Literal["Disabled", "Mixup", "Cutmix"] = "Disabled"
    mix_iterations: int = Field(1, ge=1)
    mix_probability: float = Field(1.0, ge=0, le=1)
    mix_target: Literal["Ratio", "Max"] = "Ratio"

    @field_validator("augmentations_strategy", mode="before")
    @classmethod
    def _null_strategy_is_none(cls, value: Any) -> Any:
        return "None" if value is None else value


@dataclass(frozen=True)
class RunTable:
    """One table a run reads (``DatasetConfig.run_tables``): where it and its images are, the settings it
    is read with, and whether every row needs a mask (a test table may be unlabelled)."""

    name: Literal["train", "validation", "extra", "test"]
    table: Path
    data_folder: Path
    settings: DatasetConfig
    labelled: bool

    @property
    def rle_order_setting(self) -> str:
        """The key that holds this table's RLE order, for an error that says what to change."""
        return "dataset.test_rle_order" if self.name == "test" else "dataset.rle_order"


class DatasetConfig(Section):
    class_name_column: str = "class_id"
    data_folder: Path = Field(Path("."), description="folder (or .zip) holding the training images")
    data_folder_test: OptionalPath = Field(None, description="folder (or .zip) holding the test images")
    data_sample: float = Field(1.0, gt=0, le=1, description="fraction of the data to use")
    data_sample_choice: list[Literal["Train", "Validation"]] = ["Train", "Validation"]
    folds: StrList = Field(
        ["0"], validation_alias=AliasChoices("folds", "selected_folds"), description="folds to run"
    )
    group_fold_column: str | None = "image_id"
    group_rule: Literal["column", "fire_sequence"] = Field(
        "column",
        description="fold groups: column: group_fold_column; fire_sequence: frames of one fire or camera "
        "scene (by file name, or by look-alike images for ck... frames) share a group",
    )
    image_column: str = "image_id"
    rle_mask_column: str = "rle_mask"
    rle_order: Literal["F", "C"] = Field(
        "F", description="F: column-major (Kaggle, Hydrogen Torch); C: row-major"
    )
    test_dataframe: OptionalPath = None
    test_rle_order: Annotated[Literal["F", "C"] | None, BeforeValidator(_none_string_to_null)] = Field(
        None, description="the test table's RLE order, where it differs from rle_order (None: rle_order)"
    )
    train_dataframe: Path | None = Field(None, description="Parquet or CSV table, or an image+mask folder")
    validation_dataframe: OptionalPath = None
    validation_size: float = Field(0.2, gt=0, lt=1)
    validation_strategy: Literal["kfold", "custom", "automatic"] = "kfold"
    on_bad_sample: Literal["error", "skip"] = Field(
        "error", description="error: stop at a bad image or mask; skip: leave it out with a warning"
    )
    extra_train_dataframe: OptionalPath = Field(
        None,
        description="more labelled frames that only train (other cameras, a public set, the pretraining "
        "frames): added to every fold's training; frames that share a fold group with the fold's "
        "validation frames are left out of it (see extra_in_validation_groups)",
    )
    extra_data_folder: OptionalPath = Field(
        None, description="folder (or .zip) holding extra_train_dataframe's images (default: data_folder)"
    )
    extra_in_validation_groups: Literal["leave_out", "validate"] = Field(
        "leave_out",
        description="the extra frames that share a fold group with the fold's validation frames: leave_out "
        "(neither trained nor validated on) or validate (they join the fold's validation: more frames of "
        "the validation scenes to choose a recipe and a threshold on)",
    )
    negative_dataframe: OptionalPath = Field(
        None,
        description="a table of smoke-free crops (empty masks) at the model's scale, such as "
        "`smokeseg mine-negatives` writes; training draws negative_share of each epoch from it",
    )
    negative_data_folder: OptionalPath = Field(
        None, description="folder (or .zip) holding the negatives' images (default: beside the table)"
    )
    negative_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of each training epoch drawn from negative_dataframe, used as they are "
        "(0: off); never in validation",
    )

    def training_tables(self) -> tuple[Path, Path | None]:
        """The train table, and the validation table where ``validation_strategy`` is custom (else None);
        a ConfigError if one of them is not set."""
        if self.train_dataframe is None:
            raise ConfigError(
                "dataset.train_dataframe is not set: point it at a Parquet/CSV table or an images+masks "
                "folder."
            )
        if self.validation_strategy != "custom":
            return self.train_dataframe, None
        if self.validation_dataframe is None:
            raise ConfigError("dataset.validation_strategy=custom needs dataset.validation_dataframe.")
        return self.train_dataframe, self.validation_dataframe

    def validation_tables(self) -> list[RunTable]:
        """The tables a fold's validation frames come from: the custom validation table or the train
        table, and the extra frames where ``extra_in_validation_groups`` is validate."""
        tables: dict[str, RunTable] = {table.name: table for table in self.run_tables()}
        names = ["validation" if "validation" in tables else "train"]
        if self.extra_in_validation_groups == "validate" and "extra" in tables:
            names.append("extra")
        return [tables[name] for name in names]

    def negative_table(self) -> Path | None:
        """The negatives table where ``negative_share`` is above 0 (else None); a ConfigError if unset."""
        if self.negative_share == 0:
            return None
        if self.negative_dataframe is None:
            raise ConfigError(
                f"dataset.negative_share={self.negative_share} draws from dataset.negative_dataframe, which "
                "is not set: point it at a table of smoke-free crops (`smokeseg mine-negatives` writes one), "
                "or set dataset.negative_share: 0."
            )
        return self.negative_dataframe

    def for_test_table(self) -> DatasetConfig:
        """These settings as the test table is read: with its own RLE order, if it has one."""
        return self.model_copy(update={"rle_order": self.test_rle_order or self.rle_order})

    def run_tables(self) -> list[RunTable]:
        """Every table a run reads, in the order train, validation (custom), extra frames, test; unset
        ones left out. Training and `smokeseg data check` both read from this list, so they agree on
        each table's folder and settings."""
        train, validation = self.training_tables()
        tables: list[tuple[Any, Path | None, Path, DatasetConfig, bool]] = [
            ("train", train, self.data_folder, self, True),
            ("validation", validation, self.data_folder, self, True),
            ("extra", self.extra_train_dataframe, self.extra_data_folder or self.data_folder, self, True),
            (
                "test",
                self.test_dataframe,
                self.data_folder_test or self.data_folder,
                self.for_test_table(),
                False,
            ),
        ]
        return [
            RunTable(name, table, folder, settings, labelled)
            for name, table, folder, settings, labelled in tables
            if table is not None
        ]


class EnvironmentConfig(Section):
    gpus: StrList = Field(
        ["0"], description="ids of the CUDA GPUs training may use; [] (or no CUDA GPU) trains on the CPU"
    )
    mixed_precision_inference: bool = False
    mixed_precision_training: bool = True
    number_of_workers: int = Field(4, ge=0)
    seed: int = Field(-1, ge=-1, description="-1 draws a seed and records it")
    number_of_gpus_per_run: OptionalInt = Field(
        None, ge=1, description="how many of gpus one run trains on (all by default); several: DDP"
    )
    channels_last_training: OptionalBool = Field(
        None,
        description="on the CPU, train in the channels-last memory layout, which oneDNN's convolutions "
        "run faster (the best recipe's fp32 training 0.60x the time on an AVX512-BF16 CPU, bfloat16 "
        "epochs 0.76x on an AMX CPU). Unset (the default): on where CPU training runs in float32, off "
        "in bfloat16, where runs trained so scored a lower mean per-image IoU on grouped validation on "
        "the three seeds compared (benchmarks/RESULTS.md). GPU training is untouched",
    )

    @field_validator("gpus")
    @classmethod
    def _gpu_ids_are_numbers(cls, value: list[str]) -> list[str]:
        if not all(isinstance(gpu, str) and gpu.isdigit() for gpu in value):
            raise ValueError("GPU ids are numbers such as [0, 1], or [] for the CPU")
        return value


class ImageConfig(Section):
    image_channels: Literal[3] = 3
    image_height: int = Field(256, ge=32)
    image_width: int = Field(256, ge=32)
    image_normalization: Literal["Simple", "Image", "ImageNet", "None"] = "Simple"
    resolution: Literal["resize", "native"] = Field(
        "resize",
        description="resize: whole images resized to image_height x image_width (Hydrogen Torch); "
        "native: train on crops of that size at the image's own resolution and score whole frames, "
        "so that small, distant smoke is not erased by a downscale",
    )
    max_side: OptionalInt = Field(
        None, ge=32, description="native: first shrink images whose longer side is above this"
    )
    long_side: OptionalInt = Field(
        None,
        ge=32,
        description="native: first scale every image, up or down, so that its longer side is this: "
        "smoke meets the model at one scale whatever the camera, and faint plumes in small frames "
        "get more pixels (instead of max_side)",
    )
    smoke_crop_probability: float = Field(
        0.5, ge=0, le=1, description="native: share of training crops placed on smoke (the rest at random)"
    )
    context_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="native: share of training samples that are the whole frame resized to image_height x "
        "image_width (the context view, as resize trains) instead of a crop, so large plumes are also "
        "seen whole; 0: crops only",
    )
    context_pass: Literal["none", "mean", "max"] = Field(
        "none",
        description="native: also score the whole frame resized to image_height x image_width, bring its "
        "probabilities back to the frame and combine them with the native pass: mean (their average) or "
        "max (pixelwise), so large plumes keep their context; none: the native pass alone. Train with "
        "context_probability above 0 so the model knows the whole-frame view. Tiled scoring ignores it",
    )

    @model_validator(mode="after")
    def _one_side_rule(self) -> ImageConfig:
        if self.max_side is not None and self.long_side is not None:
            raise ValueError("set image.long_side or image.max_side, not both (long_side also shrinks)")
        return self

    @model_validator(mode="after")
    def _context_needs_native(self) -> ImageConfig:
        """resize already trains and scores the whole frame at the model size: a context view adds nothing."""
        if self.resolution != "native" and (self.context_probability > 0 or self.context_pass != "none"):
            raise ValueError(
                "image.context_probability and image.context_pass act only with image.resolution: native "
                f"(resolution {self.resolution} already sees whole frames): set resolution: native, or "
                "context_probability: 0 and context_pass: none"
            )
        return self

    def native_fit(self) -> tuple[int, bool] | None:
        """native: the longer side images are brought to first, and whether smaller ones are enlarged."""
        if self.long_side is not None:
            return self.long_side, True
        if self.max_side is not None:
            return self.max_side, False
        return None

    @field_validator("image_height", "image_width")
    @classmethod
    def _divisible_by_32(cls, value: int) -> int:
        if value % 32:
            lower, upper = value - value % 32, value - value % 32 + 32
            raise ValueError(
                f"must be divisible by 32 for the encoder's downsampling; use {lower or 32} or {upper}"
            )
        return value


class LoggingConfig(Section):
    logger: Literal["None", "Neptune", "TensorBoard", "CSV"] = "None"
    neptune_project: str = ""

    @field_validator("logger", mode="before")
    @classmethod
    def _null_logger_is_none(cls, value: Any) -> Any:
        return "None" if value is None else value


TestTimeAugmentation = Literal[
    "horizontal_flip", "vertical_flip", "transpose", "rotate90", "rotate180", "rotate270"
]


class PredictionConfig(Section):
    metric: Literal["IoU", "Dice"] = "IoU"
    probability_threshold: float = Field(0.5, ge=0, le=1)
    test_time_augmentations: list[TestTimeAugmentation] = []
    batch_size_inference: OptionalInt = Field(None, ge=1, description="defaults to training.batch_size")
    classification_threshold: OptionalFloat = Field(
        None,
        ge=0,
        le=1,
        description="with architecture.classification_head: an image raises an alarm only when the head's "
        "smoke probability is at least this too (None: the mask alone decides)",
    )

    test_time_scales: list[Annotated[float, Field(gt=0, le=4)]] = Field(
        [],
        description="image.resolution native: also score each whole-frame view enlarged or shrunk by these "
        "factors (1.5: half as large again), bring each map back and average them with the view's own, "
        "so faint, small plumes are also seen larger; [] scores the view at its own scale only. Each "
        "factor costs about its square in scoring time. Tiled scoring ignores it",
    )

    @field_validator("test_time_augmentations", "test_time_scales", mode="before")
    @classmethod
    def _listify_tta(cls, value: Any) -> Any:
        return _listify(value)


class TrainingConfig(Section):
    automatically_adjust_batch_size: bool = False
    batch_size: int = Field(16, ge=1)
    build_scoring_pipelines: bool = True
    calculate_train_metric: bool = False
    differential_learning_rate: float = Field(0.001, ge=0)
    differential_learning_rate_layers: StrList = Field(
        [],
        description="layers (their parameters' name prefixes: encoder, decoder, segmentation_head) trained "
        "at differential_learning_rate instead of learning_rate; on the fast recipe from the smoke-"
        "pretrained start a slower encoder (0.1x, 0.3x) drew more false regions (RESULTS.md)",
    )
    drop_last_batch: bool = True
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="keep an exponential moving average of the weights, updated every step with this "
        "decay, and validate, score and save it instead of the last weights (0: off)",
    )
    epochs: int = Field(5, ge=1)
    evaluation_epochs: float = Field(1.0, gt=0)
    evaluate_before_training: bool = False
    grad_accumulation: int = Field(1, ge=1)
    gradient_clip: float = Field(0.0, ge=0)
    learning_rate: float = Field(0.001, gt=0)
    loss_function: str = Field(
        "BCEDice", description="BCE, Dice, BCEDice, Focal, Lovasz, or a sum like BCELovasz"
    )
    bce_weight: float = Field(1.0, ge=0)
    dice_weight: float = Field(1.0, ge=0)
    dice_per_image: bool = Field(
        False,
        description="the Dice part scores each image that holds smoke on its own and averages them, so a "
        "small plume weighs as much as a large one; false: one Dice over the batch's pixels (smp's), "
        "where large plumes dominate",
    )
    focal_weight: float = Field(1.0, ge=0)
    classification_weight: float = Field(
        1.0, ge=0, description="weight of the classification head's BCE loss, when the model has one"
    )
    lovasz_weight: float = Field(1.0, ge=0)
    optimizer: Literal["AdamW", "Adam", "SGD", "RMSprop"] = "AdamW"
    save_best_checkpoint: bool = False
    schedule: Literal["Cosine", "Linear", "Constant"] = "Cosine"
    train_validation_data: bool = False
    warmup_epochs: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)


class ExperimentConfig(Section):
    """A whole experiment, as Hydrogen Torch writes it."""

    experiment_name: str = "smoke_segmentation"
    architecture: ArchitectureConfig = ArchitectureConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    dataset: DatasetConfig = DatasetConfig()
    environment: EnvironmentConfig = EnvironmentConfig()
    image: ImageConfig = ImageConfig()
    logging: LoggingConfig = LoggingConfig()
    prediction: PredictionConfig = PredictionConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _scales_need_native(self) -> ExperimentConfig:
        """resize scores every image at the model size, which a scale factor would change, not add to."""
        if self.prediction.test_time_scales and self.image.resolution != "native":
            raise ValueError(
                "prediction.test_time_scales acts only with image.resolution: native (resolution "
                f"{self.image.resolution} scores every image at the model size): set resolution: native, "
                "or test_time_scales: []"
            )
        return self
