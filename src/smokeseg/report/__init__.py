"""Human-readable outputs of a run: the HTML training report and mask overlays."""

from smokeseg.report.html import write_report
from smokeseg.report.overlay import overlay_mask

__all__ = ["overlay_mask", "write_report"]
