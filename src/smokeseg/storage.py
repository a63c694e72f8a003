"""Atomic file writes: an output either exists whole or not at all; a folder that cannot take them says so."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smokeseg.errors import OutputError

# A write probe the size of a file system block: a full disk refuses it, where an empty file still fits.
_PROBE_BYTES = 4096


def ensure_writable_folder(path: Path) -> None:
    """Create ``path`` if needed and write a probe file in it, so that a read-only or full disk fails
    before the work (minutes or hours of it), not after."""
    path = Path(path)
    with reporting_write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-probe.") as probe:
            probe.write(b"\0" * _PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())


@contextmanager
def reporting_write_errors(folder: Path) -> Iterator[None]:
    """Turn an OSError met while writing into ``folder`` (read-only, full, not a folder) into one line
    naming the file and the way out."""
    try:
        yield
    except OSError as error:
        where = folder if error.filename is None else error.filename
        raise OutputError(
            f"Cannot write {where}: {error.strerror or error}. Free space on that disk or make the folder "
            "writable, or give another output folder."
        ) from None


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    A crash or an exception inside the block leaves no half-written file under the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are shared like any file
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_bytes_atomic(target: str | Path, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)
