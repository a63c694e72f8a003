"""Models out of smokeseg: ONNX or TorchScript graphs, and self-contained scoring packages."""

from smokeseg.export.onnx import EXPORT_FORMATS, export_model
from smokeseg.export.package import build_package

__all__ = ["EXPORT_FORMATS", "build_package", "export_model"]
