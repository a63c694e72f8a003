"""smokeseg: find and outline smoke in camera images.

The public API, imported on first use (PEP 562) so that ``import smokeseg`` stays light: neither
Lightning nor the model stack loads until a name that needs it is touched.

    import smokeseg
    model = smokeseg.Predictor.from_path("output/my_experiment")
    results = model.predict_paths(["frame1.jpg", "frames/"])
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# albumentations asks PyPI for its newest version when imported: smokeseg runs offline and never reaches
# the network unasked (a user can still set the variable to 0).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Public name -> the module that defines it.
_API: dict[str, str] = {
    "load_config": "smokeseg.config.load",
    "train": "smokeseg.training.run",
    "Predictor": "smokeseg.inference.predictor",
    "TileSpec": "smokeseg.inference.predictor",
    "evaluate": "smokeseg.inference.evaluate",
    "export_model": "smokeseg.export.onnx",
    "build_package": "smokeseg.export.package",
}

__all__ = [
    "Predictor",
    "TileSpec",
    "__version__",
    "build_package",
    "evaluate",
    "export_model",
    "load_config",
    "train",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time, __getattr__ imports
    from smokeseg.config.load import load_config
    from smokeseg.export.onnx import export_model
    from smokeseg.export.package import build_package
    from smokeseg.inference.evaluate import evaluate
    from smokeseg.inference.predictor import Predictor, TileSpec
    from smokeseg.training.run import train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'smokeseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # the next access skips this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
