"""Atomic output files: every file deformact writes goes to a hidden temp file in the target's
folder and is renamed over the target, so a crash, a Ctrl-C or a full disk leaves the previous
file or the new one, never a torn one (docs/FAILURES.md). OS errors become one line naming the
file (the user's path, never the temp) and the OS's reason, raised as the caller's
:class:`~deformact.errors.DeformactError` subclass.

Before any work, :func:`check_outputs` refuses outputs that would overwrite an input or a file
deformact did not write (docs/FAILURES.md, "Which files an output may replace"): every command
that writes a folder of outputs records their names in ``OUTPUTS_RECORD`` there before it writes
them, and a later command replaces only the files that a command of the same kind recorded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        try:
            yield tmp
        except DeformactError as e:  # a writer's own error names the user's file, not the temp
            if e.args and isinstance(e.args[0], str) and str(tmp) in e.args[0]:
                e.args = (e.args[0].replace(str(tmp), str(path)), *e.args[1:])
            raise
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


# --- which files an output may replace (docs/FAILURES.md, "Which files an output may replace") ------------

OUTPUTS_RECORD = ".deformact-outputs.json"
KINDS = {"run": "train or test"}  # a kind of output folder -> the commands that write it, in messages

# an input: a path, or (its role, a path) such as ("data.ann_file", "x.pkl"); None is skipped
Input = str | os.PathLike | tuple[str, str | os.PathLike | None] | None


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same file or folder: one inode (a symlink or hard link counts) when both exist, else the
    same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def input_at(path: str | os.PathLike, inputs: Iterable[Input]) -> str | None:
    """The input that ``path`` is, as a message names it (``x.pkl (data.ann_file)``), or None."""
    for item in inputs:
        role, src = item if isinstance(item, tuple) else ("", item)
        if src is not None and str(src) and same_path(path, src):
            return f"{src} ({role})" if role else str(src)
    return None


def probe_folder(folder: str | os.PathLike) -> None:
    """Create and remove a temp file in ``folder``: the ``OSError`` a real write would get, raised
    now (a read-only mount or ``/proc`` passes ``os.access`` but takes no file)."""
    probe = temp_path(Path(folder) / ".probe")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    with contextlib.suppress(OSError):
        probe.unlink()


def recorded_outputs(folder: str | os.PathLike) -> dict[str, str] | None:
    """``{file name: kind}`` of the outputs deformact recorded in ``folder``; None without a
    record, ``{}`` for one that cannot be read (nothing is then taken as deformact's)."""
    path = Path(folder) / OUTPUTS_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def record_outputs(folder: str | os.PathLike, names: Iterable[str], kind: str, *,
                   error: type[DeformactError] = DataError) -> None:
    """Record that a command of ``kind`` writes ``names`` in ``folder``; call it before writing them."""
    files = {**(recorded_outputs(folder) or {}), **{n.rstrip("/"): kind for n in names}}
    text = json.dumps({"written_by": "deformact", "files": dict(sorted(files.items()))}, indent=1,
                      allow_nan=False) + "\n"
    write_text(Path(folder) / OUTPUTS_RECORD, text, what="output record", error=error)


def check_outputs(folder: str | os.PathLike, names: Sequence[str], inputs: Iterable[Input] = (), *, kind: str,
                  error: type[DeformactError] = DataError, legacy: Sequence[str] = (), own: Sequence[str] = ()) -> None:
    """Refuse, as one ``error``, a folder of outputs that would destroy something: ``folder`` itself
    an input folder, one of ``folder/names`` an input (``own`` names excepted: ``--resume``'s
    own files), or an existing ``folder/name`` that no command of this ``kind`` recorded there.
    A folder without a record but holding a file of ``legacy`` (``last.pt``) is a run folder
    written before records existed: its files count as this kind's. Names ending in ``/`` are
    folders deformact adds files to (``tb/``) and are never overwritten."""
    folder = Path(folder)
    inputs = list(inputs)
    where = input_at(folder, inputs)
    if where is not None:
        raise error(f"refusing to write into {folder}: it is the input folder {where}; choose another --out")
    for name in names:
        target = folder / name.rstrip("/")
        where = input_at(target, inputs) if name not in own else None
        if where is not None:
            raise error(f"refusing to write {target}: it is the input {where}; it would be overwritten, "
                        "so choose another --out")
    record = recorded_outputs(folder)
    if record is None and any((folder / n).exists() for n in legacy):
        return
    record = record or {}
    foreign = [n for n in names if not n.endswith("/") and record.get(n) != kind
               and ((folder / n).exists() or (folder / n).is_symlink())]
    if foreign:
        raise error(f"{folder} already holds files deformact would overwrite ({', '.join(foreign)}), not written "
                    f"there by an earlier deformact {KINDS.get(kind, kind)}; choose an empty folder or another --out")
