"""pyskl-format pose pickles: a safe reader (no code runs) and a writer.

Format (pyskl, https://github.com/kennymckormick/pyskl)::

    {"split": {name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "label": int, "total_frames": int, "img_shape": (h, w),
                      "original_shape": (h, w), "keypoint": M x T x V x 2 float,
                      "keypoint_score": M x T x V float}, ...]}

Keypoints are pixel coordinates in the ``img_shape`` frame. Extra top-level keys (e.g.
``"class_names"``, written by our converters) are allowed.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from deformact.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); allow exactly that
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode only allowed with latin1, got {encoding!r}")
    return obj.encode("latin1", errors)


_SAFE: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _mod in ("numpy.core", "numpy._core"):
    _SAFE[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _SAFE[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    _SAFE[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer
for _mod in ("builtins", "__builtin__"):
    for _t in (set, frozenset, bytes, bytearray, complex):
        _SAFE[(_mod, _t.__name__)] = _t


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers, scalars, strings and numpy arrays/dtypes."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name} (only plain data and numpy arrays "
                                         "are allowed)") from None


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes with :class:`SafeUnpickler`."""
    return SafeUnpickler(io.BytesIO(data)).load()


def load_pyskl(path: str | os.PathLike) -> Any:
    """Load a pyskl pickle safely; any disallowed content raises :class:`DataError` and runs no code."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: unsafe or invalid pickle: {e}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read pickle ({type(e).__name__}: {e})") from None


def _check_plain(obj: Any, where: str = "obj") -> None:
    if obj is None or isinstance(obj, (str, bytes, bool, int, float, complex, np.generic, np.dtype)):
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for i, x in enumerate(obj.flat):
                _check_plain(x, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, f"{where} key")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple, set, frozenset)):
        for i, x in enumerate(obj):
            _check_plain(x, f"{where}[{i}]")
        return
    raise DataError(f"cannot save {where}: type {type(obj).__name__} is not plain data")


def save_pyskl(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (plain containers + numpy arrays only, so :func:`load_pyskl` reads it back) atomically."""
    _check_plain(obj)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            pickle.dump(obj, f, protocol=4)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
