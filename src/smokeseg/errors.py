"""One exception family, so the CLI can print a user's mistake as a message, not a traceback."""


class SmokesegError(Exception):
    """A problem the user can fix; the message says what and how."""


class ConfigError(SmokesegError):
    """A config key or value that is not allowed."""


class DataError(SmokesegError):
    """A dataset problem: a missing column, a bad RLE, an unreadable image."""


class ModelError(SmokesegError):
    """A model that cannot be built or loaded."""


class TrainingInterrupted(SmokesegError):
    """Ctrl-C during training; the last good checkpoint is kept for ``--resume``."""


class OutputError(SmokesegError):
    """An output folder that cannot take the outputs: read-only, full, not a folder, or in use by another
    run."""
