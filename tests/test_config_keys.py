"""Every key the config accepts acts: each is read by the code, and each list of allowed names is the
registry that acts on it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest
from pydantic import BaseModel

import smokeseg
from smokeseg import cli
from smokeseg.config import schema
from smokeseg.data.augment import MIXERS, PRESETS
from smokeseg.data.normalization import NORMALIZATIONS
from smokeseg.export.onnx import EXPORT_FORMATS
from smokeseg.inference.predictor import CONTEXT_PASSES, TEST_TIME_AUGMENTATIONS
from smokeseg.metrics import METRIC_NAMES
from smokeseg.model.losses import LOSS_PARTS
from smokeseg.training.module import OPTIMIZERS, SCHEDULES

SOURCE = Path(smokeseg.__file__).parent

# Keys no ``.key`` or ``"key"`` in the code reads, and what makes them act.
READ_INDIRECTLY = {
    "bce_weight": "create_loss reads training.<part>_weight for each part of the loss name",
    "dice_weight": "as bce_weight",
    "focal_weight": "as bce_weight",
    "lovasz_weight": "as bce_weight",
    "image_channels": "Literal[3]: accepting only 3 is all it does",
    "test_rle_order": "DatasetConfig.for_test_table and run_tables read it, for evaluate, training and check",
}


def _literal_names(annotation: Any) -> set[str]:
    """The names a ``Literal`` (possibly inside ``list[...]`` or ``Annotated[...]``) allows."""
    while get_origin(annotation) is not Literal:
        annotation = get_args(annotation)[0]
    return set(get_args(annotation))


def _allowed(section: type[BaseModel], key: str) -> set[str]:
    return _literal_names(section.model_fields[key].annotation)


@pytest.mark.parametrize(
    ("section", "key", "registry"),
    [
        (schema.AugmentationConfig, "augmentations_strategy", {*PRESETS, "Custom"}),
        (schema.AugmentationConfig, "mix_image", {*MIXERS, "Disabled"}),
        (schema.ImageConfig, "image_normalization", set(NORMALIZATIONS)),
        (schema.ImageConfig, "context_pass", {*CONTEXT_PASSES, "none"}),
        (schema.PredictionConfig, "metric", set(METRIC_NAMES)),
        (schema.PredictionConfig, "test_time_augmentations", set(TEST_TIME_AUGMENTATIONS)),
        (schema.TrainingConfig, "optimizer", set(OPTIMIZERS)),
        (schema.TrainingConfig, "schedule", set(SCHEDULES)),
    ],
)
def test_allowed_names_are_the_registry(section: type[BaseModel], key: str, registry: set[str]):
    assert _allowed(section, key) == registry


def test_export_format_choices_are_the_export_registry():
    hints = get_type_hints(cli.export, include_extras=True)
    assert _literal_names(hints["export_format"]) == set(EXPORT_FORMATS)


def test_names_checked_against_a_registry_are_listed_in_their_description():
    """Architecture and loss names are free strings checked against ARCHITECTURES / LOSS_PARTS before
    training (they are case-insensitive and losses combine); the schema's description names the parts."""
    description = schema.TrainingConfig.model_fields["loss_function"].description or ""
    assert all(part in description for part in LOSS_PARTS)


def _sections() -> list[type[BaseModel]]:
    return [
        member
        for _, member in inspect.getmembers(schema, inspect.isclass)
        if issubclass(member, schema.Section) and member not in {schema.Section, schema.ExperimentConfig}
    ]


def test_every_accepted_key_is_read_by_the_code():
    code = "\n".join(
        path.read_text(encoding="utf-8") for path in SOURCE.rglob("*.py") if path != Path(schema.__file__)
    )
    keys = {f"{section.__name__}.{key}": key for section in _sections() for key in section.model_fields}
    ignored = [
        name
        for name, key in keys.items()
        if key not in READ_INDIRECTLY and not re.search(rf"\.{key}\b|[\"']{key}[\"']", code)
    ]
    assert not ignored, f"accepted but read nowhere (make them act, or warn): {ignored}"
