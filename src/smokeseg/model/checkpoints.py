"""What a model path is: the one answer predict, evaluate, export, tuning and ``init_from`` share.

A model path is a checkpoint file, a fold folder holding ``checkpoint.ckpt``, an experiment folder from
``smokeseg train`` (every fold: an ensemble), or a scoring package folder from ``smokeseg export
--package``. This module only looks at paths (no torch), so anything may import it.
"""

from __future__ import annotations

import re
from pathlib import Path

from smokeseg.errors import ConfigError, ModelError
from smokeseg.layout import CHECKPOINT_NAME, CONFIG_NAME, PACKAGE_MODEL_NAME

MODEL_PATH_HELP = (
    f"A model is a {CHECKPOINT_NAME} file, a fold or experiment folder from `smokeseg train`, "
    "or a scoring package folder from `smokeseg export --package`."
)
_FOLD_NUMBER = re.compile(r"fold(\d+)")


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / PACKAGE_MODEL_NAME).is_file() and (path / CONFIG_NAME).is_file()


def fold_folders(experiment: Path) -> list[Path]:
    """The fold folders training wrote into an experiment folder (fold0, fold1, ...), fold2 before fold10.

    Only those: a copy of a fold beside them (a backup, a copy tuned to another operating point) would
    join an ensemble twice and lend it its threshold, and show in reports as a fold it is not.
    """
    if not experiment.is_dir():
        return []
    numbered = {}
    for folder in experiment.iterdir():
        match = _FOLD_NUMBER.fullmatch(folder.name)
        if match and folder.is_dir():
            numbered[int(match.group(1))] = folder
    return [numbered[number] for number in sorted(numbered)]


def checkpoint_files(path: Path) -> list[Path]:
    """The checkpoints a path names, folds in fold order; empty when it names none."""
    if path.is_file():
        return [path]
    if (path / CHECKPOINT_NAME).is_file():
        return [path / CHECKPOINT_NAME]
    return [fold / CHECKPOINT_NAME for fold in fold_folders(path) if (fold / CHECKPOINT_NAME).is_file()]


def find_checkpoints(path: str | Path) -> list[Path]:
    """The checkpoints of a checkpoint file, a fold folder, or an experiment folder (all its folds)."""
    path = Path(path)
    found = checkpoint_files(path)
    if not found:
        raise no_model_error(path)
    return found


def no_model_error(path: Path) -> ModelError:
    what = "holds no model" if path.exists() else "does not exist"
    return ModelError(f"{path} {what}. {MODEL_PATH_HELP}")


def init_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``architecture.init_from`` starts from: the file itself, a fold folder's, or an
    experiment's first fold (fold 0 of a k-fold run); an ensemble cannot be one starting point."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"architecture.init_from={path} does not exist: train that experiment first, or point it at "
            "a checkpoint file, a fold folder or an experiment folder"
        )
    found = checkpoint_files(path)
    if not found:
        raise ConfigError(
            f"architecture.init_from={path} holds no {CHECKPOINT_NAME}: point it at a checkpoint file, "
            "a fold folder or an experiment folder from `smokeseg train`"
        )
    return found[0]
