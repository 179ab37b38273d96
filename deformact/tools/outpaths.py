"""Output paths of predict, explain, extract-poses and stream: checked before any work, never an
input, written to a temp file beside the target and renamed (docs/FAILURES.md).

A crash, a Ctrl-C or a full disk then leaves the previous file or the new one, and an output
that names an input (the same path, a symlink or a hard link to it) is refused before anything
is opened for writing. A folder of outputs (explain's) replaces only files an earlier run of the
same command recorded there (:func:`deformact.io.atomic.check_outputs`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from deformact.errors import InferenceError
from deformact.io.atomic import (
    Input,
    atomic_path,
    check_outputs,
    describe_os_error,
    input_at,
    probe_folder,
    record_outputs,
)


def _writable_folder(folder: Path, target: Path, what: str) -> None:
    """``folder`` is (or can be made) a folder that takes new files."""
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
    try:
        probe_folder(folder)
    except OSError as e:
        raise InferenceError(f"cannot write {what} {target}: folder {folder} takes no new file "
                             f"({describe_os_error(e)})") from None


def check_output_file(path: str | os.PathLike, inputs: Iterable[Input] = (), what: str = "output") -> Path:
    """``path`` as a file to (over)write: not a folder, its folder writable (made when missing),
    and not the same file as any of ``inputs``. Raises :class:`InferenceError` (one line)."""
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise InferenceError(f"cannot write {what} {path}: it is a folder, expected a file name")
    src = input_at(path, inputs)
    if src is not None:
        raise InferenceError(f"refusing to write {what} {path}: it is the input {src}")
    _writable_folder(path.parent, path, what)
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise InferenceError(f"cannot write {what} {path}: not writable")
    return path


def check_output_dir(path: str | os.PathLike, names: Sequence[str] = (), inputs: Iterable[Input] = (),
                     what: str = "output folder", kind: str | None = None) -> Path:
    """``path`` as a folder (made when missing, writable) whose files ``names`` are none of ``inputs``;
    with ``kind`` (a command's name), existing ``names`` must be its outputs (:func:`claim_outputs`)."""
    path, inputs = Path(path), list(inputs)
    if path.exists() and not path.is_dir():
        raise InferenceError(f"cannot write {what} {path}: it is a file, expected a folder")
    if kind is not None:
        check_outputs(path, names, inputs, kind=kind, error=InferenceError)
    _writable_folder(path, path, what)
    for name in names:
        check_output_file(path / name, inputs, what="output")
    return path


def claim_outputs(path: str | os.PathLike, names: Sequence[str], kind: str) -> None:
    """Record ``names`` in ``path`` as outputs of ``kind`` (a command's name), just before writing them."""
    record_outputs(path, names, kind, error=InferenceError)


def atomic_output(path: str | os.PathLike, what: str = "output") -> contextlib.AbstractContextManager[Path]:
    """A temp path beside ``path``, renamed over it when the block ends normally, removed otherwise;
    an ``OSError`` becomes one :class:`InferenceError` (:func:`deformact.io.atomic.atomic_path`)."""
    return atomic_path(path, what=what, error=InferenceError)


__all__ = ["atomic_output", "check_output_dir", "check_output_file", "claim_outputs"]
