"""Atomic output files: every file deformact writes goes to a hidden temp file in the target's
folder and is renamed over the target, so a crash, a Ctrl-C or a full disk leaves the previous
file or the new one, never a torn one (docs/FAILURES.md). OS errors become one line naming the
file and the OS's reason, raised as the caller's :class:`~deformact.errors.DeformactError` subclass.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from deformact.errors import DataError, DeformactError


def describe_os_error(e: OSError) -> str:
    """``No space left on device (ENOSPC)``: the OS's words and the errno name, nothing else."""
    name = errno.errorcode.get(e.errno or 0, "")
    words = e.strerror or str(e) or type(e).__name__
    return f"{words} ({name})" if name else words


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before its rename (same folder and suffix, hidden, per process);
    :func:`remove_stale_temps` recognises it by the leading ``.`` and the ``.tmp``."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, what: str = "output", error: type[DeformactError] = DataError,
                fsync: bool = False, note: str = "") -> Iterator[Path]:
    """Yield the temp path to write; renamed over ``path`` when the block ends normally, removed
    otherwise. An ``OSError`` while writing or renaming becomes one ``error`` naming the file (plus
    ``note``); ``fsync`` flushes the file and the rename to the disk (checkpoints)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise error(f"cannot write {what} {path}: {describe_os_error(e)}{note}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    if fsync:  # make the rename itself durable (best effort; not every filesystem allows it)
        with contextlib.suppress(OSError):
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object], *, what: str = "output",
                 error: type[DeformactError] = DataError) -> Path:
    """``write(tmp)`` then the rename (see :func:`atomic_path`); returns ``path``."""
    with atomic_path(path, what=what, error=error) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, what: str = "output",
               error: type[DeformactError] = DataError) -> Path:
    """``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), what=what, error=error)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete the temp files of writes that were killed before their rename."""
    for tmp in Path(folder).glob(".*.tmp*"):
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
