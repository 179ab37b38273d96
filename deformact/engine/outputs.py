"""Output files of a run: atomic writes, the output folder checked before any work, and OS errors
turned into one-line messages (docs/FAILURES.md).

Every file the engine writes (``last.pt``, ``best.pt``, ``metrics.json``, ``log.jsonl``,
``config.yaml``, ``scores.npz``, the plots) is written to a temp file in the same folder and
renamed over the target, so a crash, a Ctrl-C or a full disk leaves the previous file or the new
one, never a torn one. Temps a killed process left behind start with ``.`` and hold ``.tmp``;
:func:`remove_stale_temps` deletes them when the next run starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from deformact.errors import ConfigError, TrainingError
from deformact.io.atomic import atomic_write as _atomic_write
from deformact.io.atomic import describe_os_error, remove_stale_temps, temp_path

__all__ = ["atomic_write", "check_out_dir", "describe_os_error", "make_out_dir", "remove_stale_temps", "temp_path",
           "write_text"]


def atomic_write(path: str | Path, write: Callable[[Path], object], what: str = "output") -> Path:
    """``write(tmp)`` and the rename (:func:`deformact.io.atomic.atomic_write`); an ``OSError``
    (disk full, read-only or vanished folder, ...) becomes one :class:`TrainingError`."""
    return _atomic_write(path, write, what=what, error=TrainingError)


def write_text(path: str | Path, text: str, what: str = "output") -> Path:
    """``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text), what)


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
