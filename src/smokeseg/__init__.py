"""smokeseg: find and outline smoke in camera images."""

__version__ = "0.1.0"
