"""Output files of a run: atomic writes, the output folder checked before any work, and OS errors
turned into one-line messages (docs/FAILURES.md).

Every file the engine writes (``last.pt``, ``best.pt``, ``metrics.json``, ``log.jsonl``,
``config.yaml``, ``scores.npz``, the plots) is written to a temp file in the same folder and
renamed over the target, so a crash, a Ctrl-C or a full disk leaves the previous file or the new
one, never a torn one. Temps a killed process left behind start with ``.`` and hold ``.tmp``;
:func:`remove_stale_temps` deletes them when the next run starts.

Before any work, :func:`check_run_outputs` refuses an output folder that is an input folder, whose
files would overwrite an input, or that holds files of the same names no deformact run wrote
(docs/FAILURES.md, "Which files an output may replace"); :func:`claim_run_outputs` records the
run's files there before it writes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deformact.engine import dist
from deformact.errors import ConfigError, TrainingError
from deformact.io.atomic import Input, check_outputs, describe_os_error, record_outputs, remove_stale_temps, temp_path
from deformact.io.atomic import atomic_write as _atomic_write

if TYPE_CHECKING:
    from deformact.engine.schema import RunConfig

__all__ = ["atomic_write", "check_out_dir", "check_run_outputs", "claim_run_outputs", "describe_os_error",
           "make_out_dir", "remove_stale_temps", "run_inputs", "temp_path", "write_text"]

# a folder holding one of these but no output record is a run folder from before records existed
RUN_FOLDER_MARKS = ("last.pt",)


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


def run_inputs(config: RunConfig, extra: Iterable[Input] = ()) -> list[Input]:
    """The files and folders a run reads, each with the config key that names it, then ``extra``."""
    data, model = config.data.options, config.model.fields
    found: list[Input] = [(f"data.{k}", data.get(k)) for k in ("ann_file", "video_root")]
    if isinstance(data.get("label_map"), str | os.PathLike):  # else a list of class names
        found.append(("data.label_map", data["label_map"]))
    found.append(("model.backbone_weights", model.get("backbone_weights")))
    return [*found, *extra]


def check_run_outputs(out: str | Path, names: Sequence[str], inputs: Iterable[Input], ctx: dist.DistContext, *,
                      own: Sequence[str] = ()) -> None:
    """ConfigError, before any work, when writing ``names`` into ``out`` would destroy an input or
    a file no deformact run wrote (:func:`deformact.io.atomic.check_outputs`; ``own``: names a
    ``--resume`` may read and rewrite). Rank 0 checks; every rank raises the same error."""
    error = None
    if ctx.is_main:
        try:
            check_outputs(out, names, inputs, kind="run", error=ConfigError, legacy=RUN_FOLDER_MARKS, own=own)
        except ConfigError as e:
            error = e
    error = dist.broadcast_object(ctx, error)
    if error is not None:
        raise error


def claim_run_outputs(out: str | Path, names: Sequence[str], ctx: dist.DistContext) -> None:
    """Record ``names`` in ``out`` as a run's files (rank 0), just before the run writes them."""
    if ctx.is_main:
        record_outputs(out, names, "run", error=TrainingError)
