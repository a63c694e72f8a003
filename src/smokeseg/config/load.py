"""Read a Hydrogen Torch YAML, apply ``--set`` overrides, resolve paths, and explain every mistake.

Relative paths in the file resolve against the folder that holds it, so a config and its data can move
together; paths given with ``--set`` resolve against the current folder, as anything typed in a shell.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from smokeseg.config.schema import ExperimentConfig
from smokeseg.errors import ConfigError
from smokeseg.storage import write_text_atomic

PATH_KEYS = (
    "data_folder",
    "data_folder_test",
    "extra_data_folder",
    "extra_train_dataframe",
    "negative_data_folder",
    "negative_dataframe",
    "test_dataframe",
    "train_dataframe",
    "validation_dataframe",
)
_PATH_KEYS_BY_SECTION = {"dataset": PATH_KEYS, "architecture": ("pretrained_weights", "init_from")}
# The keys that act only when a trained model scores: changing them leaves its weights valid. Every other
# key shaped the weights (or the data they were trained on), so a trained model keeps its checkpoint's.
SCORING_KEYS = ("prediction.*", "image.context_pass")
# How alike (difflib ratio) an unknown key and a valid one must be to suggest it: typos such as
# "epoch" or "learning_rat", not "frobnicate" for "learning_rate" (0.52).
_SUGGESTION_CUTOFF = 0.7


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base_dir: Path | None = None
) -> ExperimentConfig:
    """Load ``path`` (or the defaults), apply ``section.key=value`` overrides, and validate."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        raw = _read_yaml(path)
        base_dir = base_dir or path.resolve().parent
    for override in overrides or []:
        apply_override(raw, override)
    config = config_from_dict(raw, source=source)
    return resolve_paths(config, base_dir or Path.cwd())


def config_from_dict(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_explain(error, raw, source)) from None


def resolve_paths(config: ExperimentConfig, base_dir: Path) -> ExperimentConfig:
    """Make dataset and weight paths absolute, relative ones taken from ``base_dir``."""
    sections = {}
    for section, keys in _PATH_KEYS_BY_SECTION.items():
        values = getattr(config, section).model_copy()
        for key in keys:
            value = getattr(values, key)
            if value is not None and not Path(value).is_absolute():
                setattr(values, key, (base_dir / value).resolve())
        sections[section] = values
    return config.model_copy(update=sections)


def config_to_yaml(config: ExperimentConfig) -> str:
    """The effective config as Hydrogen Torch-style YAML; loading it gives the same config back."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(_nulls_as_none_strings(data), sort_keys=True, width=100)


def save_config(config: ExperimentConfig, target: str | Path) -> Path:
    return write_text_atomic(target, config_to_yaml(config))


def _nulls_as_none_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _nulls_as_none_strings(item) for key, item in value.items()}
    return "None" if value is None else value


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist. Check the path, or run `smokeseg demo`.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of sections, not {type(data).__name__}.")
    return data


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``section.key=value``; the value is parsed as YAML (``10``, ``false``, ``[0, 1]``)."""
    key_path, sep, text = override.partition("=")
    if not sep or not key_path.strip():
        raise ConfigError(
            f"Override {override!r} is not of the form section.key=value, e.g. training.epochs=10."
        )
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if value is None and text.strip() == "":
        value = ""
    keys = key_path.strip().split(".")
    if _is_path_key(keys) and isinstance(value, str) and value.strip() not in {"None", ""}:
        # Typed in a shell, a path means what it means there: relative to the current folder.
        value = str((Path.cwd() / value).resolve())
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"Override {override!r}: {key!r} is a value, not a section.")
        node = child
    node[keys[-1]] = value


def _is_scoring_key(key: str) -> bool:
    """Whether ``section.key`` is one of ``SCORING_KEYS``."""
    return key == "image.context_pass" or (key.startswith("prediction.") and key != "prediction.")


def scoring_values(config: ExperimentConfig) -> dict[str, Any]:
    """The values of ``config``'s scoring keys (``SCORING_KEYS``), by ``section.key``."""
    values = {f"prediction.{key}": value for key, value in config.prediction}
    return {**values, "image.context_pass": config.image.context_pass}


def override_key(override: str) -> str:
    """The ``section.key`` of a ``section.key=value`` override."""
    return override.partition("=")[0].strip()


def with_scoring_overrides(
    config: ExperimentConfig, overrides: Sequence[str], source: str
) -> ExperimentConfig:
    """A trained model's ``config`` with ``section.key=value`` overrides of its scoring keys
    (``SCORING_KEYS``); ``source`` names where they came from in an error."""
    if not overrides:
        return config
    for override in overrides:
        key = override_key(override)
        if not _is_scoring_key(key):
            raise ConfigError(
                f"{source}: {override!r} cannot change on a trained model: only its scoring keys "
                f"({', '.join(SCORING_KEYS)}) can, the others shaped its weights. To change {key or 'it'}, "
                f"train again: `smokeseg train CONFIG --set {override}`."
            )
    raw = config.model_dump(mode="json")
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw, source)


def _is_path_key(keys: list[str]) -> bool:
    return len(keys) == 2 and keys[1] in _PATH_KEYS_BY_SECTION.get(keys[0], ())


def _explain(error: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = [f"Invalid config ({source}):"]
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        where = ".".join(location)
        if item["type"] == "extra_forbidden":
            lines.append("  " + _unknown_key_message(location))
            continue
        value = _lookup(raw, location)
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where} = {value!r}: {message}")
    return "\n".join(lines)


def _unknown_key_message(location: list[str]) -> str:
    *section_path, key = location
    model: type[BaseModel] = ExperimentConfig
    for part in section_path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    section = ".".join(section_path) or "top level"
    valid = sorted(model.model_fields)
    closest = difflib.get_close_matches(key, valid, n=1, cutoff=_SUGGESTION_CUTOFF)
    hint = f" Did you mean {'.'.join([*section_path, closest[0]])!r}?" if closest else ""
    return f"unknown key {key!r} in section {section!r}.{hint} Valid keys: {', '.join(valid)}."


def _lookup(raw: Any, location: list[str]) -> Any:
    node = raw
    for part in location:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return "<missing>"
    return node
