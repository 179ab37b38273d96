"""Output paths of predict, explain, extract-poses and stream: checked before any work, never an
input, written to a temp file beside the target and renamed (docs/FAILURES.md).

A crash, a Ctrl-C or a full disk then leaves the previous file or the new one, and an output
that names an input (the same path, a symlink or a hard link to it) is refused before anything
is opened for writing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from deformact.errors import InferenceError
from deformact.io.atomic import atomic_path, describe_os_error


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _writable_folder(folder: Path, target: Path, what: str) -> None:
    """``folder`` is (or can be made) a writable folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise InferenceError(f"cannot write {what} {target}: {probe} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InferenceError(f"cannot write {what} {target}: {describe_os_error(e)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InferenceError(f"cannot write {what} {target}: folder {folder} is not writable")


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                      what: str = "output") -> Path:
    """``path`` as a file to (over)write: not a folder, its folder writable (made when missing),
    and not the same file as any of ``inputs``. Raises :class:`InferenceError` (one line)."""
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise InferenceError(f"cannot write {what} {path}: it is a folder, expected a file name")
    for src in inputs:
        if src is not None and Path(src).exists() and (path.exists() or path.is_symlink()) and _same(path, Path(src)):
            raise InferenceError(f"refusing to write {what} {path}: it is the input {src}")
        if src is not None and path.resolve() == Path(src).resolve():
            raise InferenceError(f"refusing to write {what} {path}: it is the input {src}")
    _writable_folder(path.parent, path, what)
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise InferenceError(f"cannot write {what} {path}: not writable")
    return path


def check_output_dir(path: str | os.PathLike, names: Iterable[str] = (),
                     inputs: Iterable[str | os.PathLike | None] = (), what: str = "output folder") -> Path:
    """``path`` as a folder (made when missing, writable) whose files ``names`` are none of ``inputs``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InferenceError(f"cannot write {what} {path}: it is a file, expected a folder")
    _writable_folder(path, path, what)
    for name in names:
        check_output_file(path / name, inputs, what="output")
    return path


def atomic_output(path: str | os.PathLike, what: str = "output") -> contextlib.AbstractContextManager[Path]:
    """A temp path beside ``path``, renamed over it when the block ends normally, removed otherwise;
    an ``OSError`` becomes one :class:`InferenceError` (:func:`deformact.io.atomic.atomic_path`)."""
    return atomic_path(path, what=what, error=InferenceError)


__all__ = ["atomic_output", "check_output_dir", "check_output_file"]
