"""Atomic file writes: an output either exists whole or not at all; a folder that cannot take them says so."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smokeseg.errors import OutputError


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


@contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it becomes ``target`` only if the block succeeds.

    A folder that is a dataset (a table and its images) then never looks complete half-written.
    ``target`` must not exist, or be empty.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


# Failures that mean "this disk will not take the file", as opposed to a bug or a bad input.
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM})


def ensure_writable_folder(path: Path) -> None:
    """Create ``path`` if needed and write a probe file in it, so a read-only or full disk fails before
    the work (minutes or hours of it), not after."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-probe.") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise write_error(path, error) from None


def write_error(folder: Path, error: OSError) -> OutputError:
    """One line naming the folder (and file), what the system said, and the way out."""
    where = f"{folder}" if error.filename is None else f"{error.filename}"
    return OutputError(
        f"Cannot write {where}: {error.strerror or error}. Free space on that disk or make the folder "
        "writable, or give another output folder."
    )


@contextmanager
def reporting_write_errors(folder: Path) -> Iterator[None]:
    """Turn a full disk or a read-only folder met while writing into ``OutputError``; others pass on."""
    try:
        yield
    except Exception as error:
        refused = write_failure(error)
        if refused is None:
            raise
        raise write_error(Path(folder), refused) from None


def write_failure(error: BaseException) -> OSError | None:
    """The disk refusing a write (full, read-only) behind ``error``, even where a library wrapped it."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _WRITE_FAILURES:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
