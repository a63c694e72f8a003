"""A self-contained scoring package: the model as ONNX and a numpy-only ``score.py``, runnable without torch.

Hydrogen Torch's ``training.build_scoring_pipelines`` writes such a folder after training; this is that
step. The folder holds model.onnx (all folds in one graph), config.yaml (the effective config),
scoring.json (what score.py needs: input size, normalisation, threshold, RLE order, test-time
augmentations, verdict rule), score.py, requirements.txt (onnxruntime, numpy, pillow) and README.md.

score.py writes CSV, so its requirements stay at those three packages; Parquet is an option that needs
pandas and pyarrow installed beside them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import albumentations as A
import cv2

from smokeseg import __version__
from smokeseg.config.load import config_to_yaml
from smokeseg.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from smokeseg.errors import SmokesegError
from smokeseg.export.onnx import INPUT_NAME, OUTPUT_NAME, write_model
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.scoring import CLASS_NAME, MIN_REGION_FLOOR, MIN_REGION_FRACTION
from smokeseg.layout import CONFIG_NAME
from smokeseg.layout import PACKAGE_MODEL_NAME as MODEL_NAME
from smokeseg.storage import ensure_writable_folder, reporting_write_errors

SETTINGS_NAME = "scoring.json"
README_NAME = "README.md"
# Copied verbatim from the template folder.
TEMPLATE_FILES = ("score.py", "requirements.txt")
FORMAT_VERSION = 1

# image.image_normalization -> score.py's parameters: (pixels / scale - mean) / std, per channel;
# mean and std None: the image's own. A test proves score.py's result equals normalize()'s for each.
NORMALIZATION_PARAMETERS: dict[str, dict[str, Any]] = {
    "Simple": {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    "ImageNet": {"scale": 255.0, "mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist()},
    "Image": {"scale": 1.0, "mean": None, "std": None},
    "None": {"scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
}
_RLE_ORDER_WORDS = {"F": "column-major (top to bottom, then left to right)", "C": "row-major"}


def template_text(name: str) -> str:
    """A file of the package template; read from the installed smokeseg, so it always matches it."""
    return (resources.files("smokeseg.export") / "template" / name).read_text(encoding="utf-8")


def scoring_settings(predictor: Predictor) -> dict[str, Any]:
    """Everything score.py needs besides the graph: the model's preprocessing and decision rules."""
    config = predictor.config
    height, width = predictor.model_size
    normalization = config.image.image_normalization
    return model_view_settings(predictor) | {
        "format_version": FORMAT_VERSION,
        "smokeseg_version": __version__,
        "model": MODEL_NAME,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "folds": len(predictor.models),
        "image_height": height,
        "image_width": width,
        "normalization": {"name": normalization, **NORMALIZATION_PARAMETERS[normalization]},
        "probability_threshold": predictor.threshold,
        "rle_order": config.dataset.rle_order,
        "class_name": CLASS_NAME,
        "test_time_augmentations": list(config.prediction.test_time_augmentations),
        "batch_size": predictor.batch_size,
        "min_region": {"fraction": MIN_REGION_FRACTION, "floor": MIN_REGION_FLOOR},
    }


def model_view_settings(predictor: Predictor) -> dict[str, Any]:
    """How the predictor's inference transform makes the model's input, in the two forms score.py
    re-implements: a resize to the model size (shrinking by area or bilinearly), or, at native
    resolution, padding to the encoder's stride, with the view also scored at other scales
    (``prediction.test_time_scales``) and the context pass's resize to the model size
    (``image.context_pass``). Any other custom pipeline cannot be packaged."""
    image = predictor.config.image
    steps = predictor.transform.transforms
    step = steps[0] if len(steps) == 1 else None
    if image.resolution == "native" and isinstance(step, A.PadIfNeeded) and _pads_like_score_py(step):
        side, enlarge = image.native_fit() or (None, False)
        pad = step.pad_height_divisor
        return {
            "resolution": "native",
            "side": side,
            "enlarge": enlarge,
            "pad_multiple": pad,
            "context_pass": image.context_pass,
            "test_time_scales": list(predictor.config.prediction.test_time_scales),
        }
    if (
        image.resolution == "resize"
        and isinstance(step, A.Resize)
        and (step.height, step.width) == predictor.model_size
        and step.interpolation == cv2.INTER_LINEAR
    ):
        shrink = "area" if step.area_for_downscale in ("image", "image_mask") else "linear"
        return {"resolution": "resize", "shrink": shrink}
    raise SmokesegError(
        "The scoring package re-implements a plain resize to the model size (or native-resolution "
        f"padding), but this model's inference transform is {predictor.transform.transforms}. Score "
        "with `smokeseg predict`, or export the graph alone with `smokeseg export MODEL` and "
        "preprocess as that pipeline does."
    )


def _pads_like_score_py(step: A.PadIfNeeded) -> bool:
    return (
        step.min_height is None
        and step.min_width is None
        and step.pad_height_divisor == step.pad_width_divisor
        and step.position == "top_left"
        and step.border_mode == cv2.BORDER_REFLECT_101
    )


def build_package(model_path: str | Path, out_dir: str | Path, scoring_overrides: Sequence[str] = ()) -> Path:
    """Write the scoring package of a checkpoint, fold folder or experiment folder (all folds) to ``out_dir``,
    scoring as the model does at its stored operating point, with ``scoring_overrides`` (``SCORING_KEYS``
    only, as ``Predictor.from_path`` takes them) on top.

    The package is built in a temporary folder beside ``out_dir`` and renamed into place, so ``out_dir``
    is either a whole package or untouched. An earlier package there is replaced; any other non-empty
    folder is refused.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    ensure_writable_folder(out_dir.parent)  # a read-only or full disk fails before the model loads
    _remove_abandoned_staging(out_dir)
    predictor = Predictor.from_path(model_path, scoring_overrides=scoring_overrides)
    settings = scoring_settings(predictor)  # a model score.py cannot mirror fails before the export
    staging = _new_folder_beside(out_dir, "new")
    try:
        with reporting_write_errors(out_dir.parent):
            write_model(predictor, staging / MODEL_NAME, "onnx")
            (staging / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
            (staging / CONFIG_NAME).write_text(config_to_yaml(predictor.config), encoding="utf-8")
            for name in TEMPLATE_FILES:
                (staging / name).write_text(template_text(name), encoding="utf-8")
            (staging / README_NAME).write_text(_readme(predictor, settings), encoding="utf-8")
            _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _readme(predictor: Predictor, settings: dict[str, Any]) -> str:
    architecture = predictor.config.architecture
    folds = settings["folds"]
    return Template(template_text(README_NAME)).substitute(
        experiment_name=predictor.config.experiment_name,
        architecture=architecture.architecture,
        backbone=architecture.backbone,
        folds=f"{folds} folds" if folds > 1 else "1 fold",
        class_name=settings["class_name"],
        rle_order_words=_RLE_ORDER_WORDS[settings["rle_order"]],
        threshold=settings["probability_threshold"],
        min_region_percent=f"{100 * MIN_REGION_FRACTION:g}",
        min_region_floor=MIN_REGION_FLOOR,
        batch_size=settings["batch_size"],
        model_input=_describe_model_input(settings),
        normalization=settings["normalization"]["name"],
        test_time_augmentations=", ".join(settings["test_time_augmentations"]) or "none",
        smokeseg_version=__version__,
    )


def _describe_model_input(settings: dict[str, Any]) -> str:
    if settings["resolution"] == "native":
        shrink = ""
        if settings["side"] and settings["enlarge"]:
            shrink = f", first scaled so that the longer side is {settings['side']} pixels"
        elif settings["side"]:
            shrink = f", shrunk first to at most {settings['side']} pixels a side"
        scales = ""
        if settings.get("test_time_scales"):
            factors = ", ".join(f"{factor:g}" for factor in settings["test_time_scales"])
            scales = (
                f"; each view also scored scaled by {factors} (enlarging bilinearly, shrinking by area "
                "averaging), the maps brought back and averaged with its own"
            )
        context = ""
        if settings["context_pass"] != "none":
            context = (
                f"; also resized to {settings['image_width']}x{settings['image_height']} (shrinking by area "
                f"averaging), the two probability maps combined by their {settings['context_pass']}"
            )
        return (
            f"whole images at their own resolution, padded to multiples of {settings['pad_multiple']}"
            f"{shrink}{scales}{context}"
        )
    shrinking = "area averaging" if settings["shrink"] == "area" else "bilinear"
    return f"{settings['image_width']}x{settings['image_height']}, shrinking by {shrinking}"


def _check_target(out_dir: Path) -> None:
    """Refuse, before any work, to replace a file or a folder that is not a scoring package."""
    if out_dir.exists() and not (out_dir.is_dir() and _is_replaceable(out_dir)):
        raise SmokesegError(
            f"{out_dir} exists and is not a scoring package (no {SETTINGS_NAME}). Give a new or empty "
            "folder for the package."
        )


def _is_replaceable(folder: Path) -> bool:
    return (folder / SETTINGS_NAME).is_file() or not any(folder.iterdir())


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Rename ``staging`` to ``out_dir``; an earlier package there is moved aside first, then deleted."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    _check_target(out_dir)
    old = _new_folder_beside(out_dir, "old")
    os.replace(out_dir, old / out_dir.name)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _new_folder_beside(target: Path, tag: str) -> Path:
    """A fresh hidden folder on ``target``'s file system (so renames are atomic), with normal permissions."""
    folder = target.parent / f".{target.name}.{tag}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    folder.mkdir()
    return folder


def _remove_abandoned_staging(target: Path) -> None:
    """Delete the half-built packages of builds killed before their cleanup (SIGTERM, power loss).

    Only "new" folders of processes that no longer run: an "old" one may hold the only copy of the
    previous package, and a live process may still be building its own.
    """
    for folder in target.parent.glob(f".{target.name}.new.*.*.tmp"):
        pid = folder.name.removeprefix(f".{target.name}.new.").split(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
