"""Output files of a run: atomic writes, the output folder checked before any work, and OS errors
turned into one-line messages (docs/FAILURES.md).

Every file the engine writes (``last.pt``, ``best.pt``, ``metrics.json``, ``log.jsonl``,
``config.yaml``, ``scores.npz``, the plots) is written to a temp file in the same folder and
renamed over the target, so a crash, a Ctrl-C or a full disk leaves the previous file or the new
one, never a torn one. Temps a killed process left behind start with ``.`` and hold ``.tmp``;
:func:`remove_stale_temps` deletes them when the next run starts.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from deformact.errors import ConfigError, TrainingError


def describe_os_error(e: OSError) -> str:
    """``No space left on device (ENOSPC)``: the OS's words and the errno name, nothing else."""
    name = errno.errorcode.get(e.errno or 0, "")
    words = e.strerror or str(e) or type(e).__name__
    return f"{words} ({name})" if name else words


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before its rename (same folder, same suffix, hidden)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], object], what: str = "output") -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` over ``path``; a failed write leaves ``path`` as it was.

    An ``OSError`` (disk full, read-only or vanished folder, ...) becomes one
    :class:`TrainingError` naming the file and the OS error.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise TrainingError(f"cannot write {what} {path}: {describe_os_error(e)}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def write_text(path: str | Path, text: str, what: str = "output") -> Path:
    """``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), what)


def remove_stale_temps(folder: str | Path) -> None:
    """Delete the temp files of writes that were killed before their rename."""
    for tmp in Path(folder).glob(".*.tmp*"):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def check_out_dir(out: str | Path) -> Path:
    """ConfigError at once when ``out`` cannot become an output folder: an existing file, a path
    under a file, or a folder (or nearest existing parent) this process may not write.

    Nothing is created here; :func:`make_out_dir` does that when the run starts.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output folder {out} is an existing file; choose a folder with --out")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"output folder {out} cannot be created: {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == out else f" ({probe} is not writable)"
        raise ConfigError(f"output folder {out} is not writable{where}")
    return out


def make_out_dir(out: str | Path) -> Path:
    """Create the output folder; an OSError becomes one ConfigError line."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output folder {out} cannot be created: {describe_os_error(e)}") from None
    return out
