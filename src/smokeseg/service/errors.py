"""Service-level mistakes, each with the HTTP status it answers with; the core's errors map in app.py."""

from __future__ import annotations

from smokeseg.errors import SmokesegError


def megabytes(count: int) -> str:
    return f"{count / 1e6:.3g} MB"


class NotFoundError(SmokesegError):
    """No dataset, experiment or file by that id."""


class ConflictError(SmokesegError):
    """The request clashes with the current state: a taken name, a job still running."""


class ForbiddenError(SmokesegError):
    """A server-side path outside the allowed roots."""


class TooLargeError(SmokesegError):
    """An upload, archive or image above the configured limits."""


class UnsupportedError(SmokesegError):
    """A file type or URL scheme the service does not take."""
