"""Export a model, or a whole fold ensemble, as one graph (ONNX or TorchScript) that serves without smokeseg.

The graph maps Bx3xHxW float32 images, normalised as in training, to Bx1xHxW smoke probabilities: the
mean of the folds' sigmoids, as ``Predictor`` averages them. Batch, height and width are free (height
and width multiples of 32, the encoders' stride), so callers can score any batch, tile, or rotated
test-time view. Resizing, normalisation and test-time augmentation stay with the caller.

Every file is run against PyTorch right after writing, before it gets its real name: an export either
scores like the checkpoint or is not written.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smokeseg.errors import ModelError, SmokesegError
from smokeseg.inference.predictor import Predictor
from smokeseg.model.factory import split_outputs
from smokeseg.storage import atomic_path, ensure_writable_folder, reporting_write_errors, write_failure

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
OPSET = 18
# Exported probabilities may differ from PyTorch's by float rounding, never by more than this.
TOLERANCE = 1e-3
_STRIDE = 32
_ONNX_OPTIMIZER_LOGGERS = ("onnx_ir", "onnxscript")
# onnx, onnxscript and onnxruntime are dependencies of smokeseg itself: no extra brings them.
_INSTALL_HINT = (
    "If onnx, onnxscript or onnxruntime is missing or broken, reinstall them: "
    "pip install --force-reinstall onnx onnxscript onnxruntime"
)

Runner = Callable[[np.ndarray], np.ndarray]


class Ensemble(torch.nn.Module):
    """The folds' sigmoids averaged into one probability map: a single model is an ensemble of one."""

    def __init__(self, models: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.models = torch.nn.ModuleList(models)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # the argument name is the ONNX input name
        return torch.stack(
            [torch.sigmoid(split_outputs(model(images))[0].float()) for model in self.models]
        ).mean(0)


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    """Hold loggers at WARNING for a while: the ONNX optimiser logs every pass at INFO."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels, strict=True):
            item.setLevel(level)


def _onnx_dynamo(module: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    dim = torch.export.Dim
    height, width = _STRIDE * dim("height_32", min=1), _STRIDE * dim("width_32", min=1)
    shapes = {INPUT_NAME: {0: dim("batch", min=1), 2: height, 3: width}}
    with _quiet(_ONNX_OPTIMIZER_LOGGERS):
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=shapes,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            verbose=False,
        )
    assert program is not None, "torch.onnx.export returns the ONNXProgram when dynamo=True"
    program.save(target, external_data=False)  # one self-contained file, whatever it is renamed to


def _onnx_legacy(module: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it is the fallback on purpose
        torch.onnx.export(
            module,
            (example,),
            str(target),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
        )


# Tried in order: the torch.export-based exporter, then the TorchScript-based one for models it cannot trace.
ONNX_EXPORTERS: dict[str, Callable[[torch.nn.Module, torch.Tensor, Path], None]] = {
    "dynamo": _onnx_dynamo,
    "legacy": _onnx_legacy,
}


def _write_onnx(module: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    failures = []
    for name, exporter in ONNX_EXPORTERS.items():
        try:
            exporter(module, example, target)
            return
        except Exception as error:  # each exporter fails in its own ways; the next one may succeed
            if write_failure(error) is not None:
                raise  # a full or read-only disk: no exporter (or export extra) helps
            failures.append(f"{name} exporter: {type(error).__name__}: {error}")
            logger.warning("ONNX %s exporter failed (%s: %s)", name, type(error).__name__, error)
    raise ModelError(f"Could not export the model to ONNX. {' '.join(failures)} {_INSTALL_HINT}")


def _onnx_runner(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"Cannot check {path}: onnxruntime is not installed. {_INSTALL_HINT}") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


def _write_torchscript(module: torch.nn.Module, example: torch.Tensor, target: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit is deprecated, yet TorchScript is still what LibTorch (C++, Java) loads.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(module, example, check_trace=False).save(str(target))  # write_model checks it


def _torchscript_runner(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return run


@dataclass(frozen=True)
class ExportFormat:
    """How to write a format, and how to run the written file to check it."""

    suffix: str
    write: Callable[[torch.nn.Module, torch.Tensor, Path], None]
    runner: Callable[[Path], Runner]


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _write_onnx, _onnx_runner),
    "torchscript": ExportFormat(".pt", _write_torchscript, _torchscript_runner),
}


def export_format(name: str) -> ExportFormat:
    if name not in EXPORT_FORMATS:
        raise SmokesegError(f"Unknown export format {name!r}: choose one of {', '.join(EXPORT_FORMATS)}.")
    return EXPORT_FORMATS[name]


def default_output(model_path: str | Path, format: str = "onnx") -> Path:
    """``model.<suffix>`` in the experiment or fold folder, or beside a checkpoint file."""
    model_path = Path(model_path)
    folder = model_path if model_path.is_dir() else model_path.parent
    return folder / f"model{export_format(format).suffix}"


def export_model(model_path: str | Path, output: str | Path | None = None, format: str = "onnx") -> Path:
    """Export a checkpoint, fold folder or experiment folder (all folds: one ensemble graph); return the file.

    ``output`` defaults to ``default_output``. Raises ModelError if the file does not score like PyTorch.
    """
    export_format(format)  # an unknown name fails before the model loads
    target = Path(output) if output is not None else default_output(model_path, format)
    ensure_writable_folder(target.parent)  # and so does a read-only or full disk
    with reporting_write_errors(target.parent):
        return write_model(Predictor.from_path(model_path), target, format)


def write_model(predictor: Predictor, target: str | Path, format: str = "onnx") -> Path:
    """Write ``predictor``'s models as one graph, verified against PyTorch before it takes its name."""
    exporter = export_format(format)
    target = Path(target)
    modules = [model for model in predictor.models if isinstance(model, torch.nn.Module)]
    if len(modules) < len(predictor.models):
        raise ModelError(
            "Only PyTorch checkpoints can be exported: a scoring package already holds its graph as "
            "model.onnx. Export the checkpoint, fold or experiment folder the package was built from."
        )
    if predictor.image_threshold is not None:
        raise ModelError(
            "The exported graph carries the mask only, and this model's verdict also needs its "
            f"classification head (prediction.classification_threshold={predictor.image_threshold}). "
            "Score it with the checkpoint itself (smokeseg predict, smokeseg serve); the package "
            "cannot give the same verdict yet."
        )
    module = Ensemble(modules).cpu().eval()
    height, width = predictor.model_size
    # Batch 2, not 1: an example batch of 1 lets the tracer treat the batch size as a constant.
    example = torch.zeros(2, 3, height, width)
    with atomic_path(target) as tmp:
        exporter.write(module, example, tmp)
        verify_export(module, exporter.runner(tmp), predictor.model_size, target)
    return target


def verify_export(module: torch.nn.Module, runner: Runner, model_size: tuple[int, int], target: Path) -> None:
    """Random images at the model size and at a larger, non-square size must score as in PyTorch."""
    height, width = model_size
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 3, height, width), (1, 3, height + _STRIDE, width + 2 * _STRIDE)):
        images = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = module(images).numpy()
        try:
            got = np.asarray(runner(images.numpy()))
        except Exception as error:
            raise ModelError(
                f"The export to {target} fails on a {'x'.join(map(str, shape))} batch "
                f"({type(error).__name__}: {error}). Try the other export format, or report the model's "
                "architecture and backbone as a bug."
            ) from None
        difference = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
        if difference > TOLERANCE:
            raise ModelError(
                f"The export to {target} does not score like the PyTorch model on a "
                f"{'x'.join(map(str, shape))} batch (output {got.shape}, largest probability difference "
                f"{difference:.2g} > {TOLERANCE}). Nothing was written; try the other export format, or "
                "report the model's architecture and backbone as a bug."
            )
