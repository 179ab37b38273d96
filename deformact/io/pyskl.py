"""pyskl-format pose pickles: a safe reader (no code runs, no allocation beyond the file's own
bytes) and a writer.

Format (pyskl, https://github.com/kennymckormick/pyskl)::

    {"split": {name: [frame_dir, ...]},
     "annotations": [{"frame_dir": str, "label": int, "total_frames": int, "img_shape": (h, w),
                      "original_shape": (h, w), "keypoint": M x T x V x 2 float,
                      "keypoint_score": M x T x V float}, ...]}

Keypoints are pixel coordinates in the ``img_shape`` frame. Extra top-level keys (e.g.
``"class_names"``, written by our converters) are allowed.

The reader admits only what pickled numpy data reduces to: ``multiarray._reconstruct`` (with
``numpy.ndarray`` as its argument, never called), its ``__setstate__``, ``numeric._frombuffer``,
``multiarray.scalar``, ``numpy.dtype`` and a few builtins. Every array's declared size (shape x
itemsize) is checked against the bytes (or, for object arrays, the items) the pickle actually
holds before numpy allocates it, so a small file cannot ask for a big array (docs/FAILURES.md,
"Data").
"""

from __future__ import annotations

import codecs
import collections
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from deformact.errors import DataError
from deformact.io.atomic import atomic_path

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

_REFUSED = pickle.UnpicklingError


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1"); allow exactly that
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise _REFUSED(f"_codecs.encode only allowed with latin1, got {encoding!r}")
    return obj.encode("latin1", errors)


def _bytes_like(kind: type) -> Any:
    """``bytes``/``bytearray`` from data the pickle holds (never from a size: ``bytes(10**10)``)."""

    def make(source: Any = b"", *args: Any) -> Any:
        if not isinstance(source, (bytes, bytearray, str, list)):
            raise _REFUSED(f"{kind.__name__}() only from data in the file, got {type(source).__name__}")
        return kind(source, *args)

    return make


class _NdarrayType:
    """Stands for ``numpy.ndarray`` where a pickle names it (as ``_reconstruct``'s argument);
    calling it, which would allocate an array of any shape, is refused."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _REFUSED("numpy.ndarray(...) is refused (arrays are only built from the bytes in the file)")

    def __reduce__(self) -> Any:  # pragma: no cover - never pickled
        raise TypeError("not picklable")


_NDARRAY = _NdarrayType()


def _nbytes(shape: Any, dtype: np.dtype) -> tuple[tuple[int, ...], int, int]:
    """(shape, items, bytes) of a declared array, or refused for a malformed shape."""
    if not isinstance(shape, tuple) or len(shape) > 64 or not all(type(s) is int and s >= 0 for s in shape):
        raise _REFUSED(f"bad array shape {shape!r}")
    n = math.prod(shape)
    return shape, n, n * dtype.itemsize


class _PendingArray:
    """What ``_reconstruct`` returns: an array filled by ``__setstate__`` only after its declared
    size has been checked against the data present; replaced by the array once loading ends."""

    __slots__ = ("array",)
    __hash__ = None  # type: ignore[assignment]  # like an ndarray: never a dict key

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5):
            raise _REFUSED("bad numpy array state")
        version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, np.dtype):
            raise _REFUSED(f"bad numpy array dtype {type(dtype).__name__}")
        shape, n, nbytes = _nbytes(shape, dtype)
        if dtype.hasobject:
            if not isinstance(raw, list) or len(raw) != n:
                have = len(raw) if isinstance(raw, list) else type(raw).__name__
                raise _REFUSED(f"object array declares {n:,} items {shape} but holds {have}")
            raw = [_resolve(x) for x in raw]
        else:
            have = len(raw) if isinstance(raw, (bytes, bytearray, str)) else -1
            if have != nbytes:
                raise _REFUSED(f"array declares {_size(nbytes)} ({dtype} {shape}) but holds "
                               + (f"{_size(have)}" if have >= 0 else type(raw).__name__))
        arr = np.ndarray.__new__(np.ndarray, (0,), np.uint8)
        arr.__setstate__((version, shape, dtype, fortran, raw))
        self.array = arr


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _PendingArray:
    # numpy pickles call _reconstruct(ndarray, (0,), b"b") and then __setstate__ with the data
    if subtype is not _NDARRAY:
        raise _REFUSED("_reconstruct only builds numpy.ndarray")
    if not isinstance(shape, tuple) or math.prod(s if type(s) is int else 1 for s in shape) != 0:
        raise _REFUSED(f"_reconstruct with a non-empty shape {shape!r}")
    return _PendingArray()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    # protocol-5 pickles: a view of the bytes in the file, checked against its declared size
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _REFUSED("_frombuffer needs bytes and a plain dtype")
    shape, _, nbytes = _nbytes(tuple(shape) if isinstance(shape, list) else shape, dtype)
    if nbytes != len(buf):
        raise _REFUSED(f"array declares {_size(nbytes)} ({dtype} {shape}) but holds {_size(len(buf))}")
    return _numeric._frombuffer(buf, dtype, shape, order)


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _REFUSED("numpy scalar without a dtype")
    if not dtype.hasobject and not (isinstance(data, (bytes, str)) and len(data) == dtype.itemsize):
        raise _REFUSED(f"numpy scalar declares {_size(dtype.itemsize)} but holds other data")
    return _multiarray.scalar(dtype, data) if data is not None else _multiarray.scalar(dtype)


_SAFE: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
for _mod in ("numpy.core", "numpy._core"):
    _SAFE[(f"{_mod}.multiarray", "_reconstruct")] = _reconstruct
    _SAFE[(f"{_mod}.multiarray", "scalar")] = _scalar
    _SAFE[(f"{_mod}.numeric", "_frombuffer")] = _frombuffer
for _mod in ("builtins", "__builtin__"):
    for _t in (set, frozenset, complex):
        _SAFE[(_mod, _t.__name__)] = _t
    _SAFE[(_mod, "bytes")] = _bytes_like(bytes)
    _SAFE[(_mod, "bytearray")] = _bytes_like(bytearray)


def _resolve(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """``obj`` with every :class:`_PendingArray` replaced by its array (in place in dicts and
    lists; tuples rebuilt), shared and cyclic references kept."""
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise _REFUSED("numpy array without its data")
        return obj.array
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    memo[key] = obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list, tuple, _PendingArray)):
                obj[k] = _resolve(v, memo)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if isinstance(v, (dict, list, tuple, _PendingArray)):
                obj[i] = _resolve(v, memo)
    else:
        new = tuple(_resolve(v, memo) for v in obj)
        if any(a is not b for a, b in zip(new, obj)):
            memo[key] = new
            return new
    return obj


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that only builds plain containers, scalars, strings and numpy arrays/dtypes, each
    array checked against the bytes present before it is allocated (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE[(module, name)]
        except KeyError:
            raise _REFUSED(f"refused to load {module}.{name} (only plain data and numpy arrays "
                           "are allowed)") from None

    def load(self) -> Any:
        return _resolve(super().load())


class _BoundedReader:
    """The file as the unpickler sees it: ``read``/``readline`` only (no ``readinto``, so the C
    unpickler cannot size a buffer from a declared length before this check), and a declared
    length longer than what is left of the file fails before anything is allocated."""

    def __init__(self, f: io.BufferedIOBase, size: int) -> None:
        self._f, self._left = f, int(size)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        if n > self._left:
            raise pickle.UnpicklingError(f"a record declares {n:,} bytes but only {self._left:,} remain "
                                         "(truncated or hostile file)")
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._f.readline(self._left)
        self._left -= len(line)
        return line


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes with :class:`SafeUnpickler`."""
    return SafeUnpickler(_BoundedReader(io.BytesIO(data), len(data))).load()


def load_pyskl(path: str | os.PathLike) -> Any:
    """Load a pyskl pickle safely; any disallowed or inconsistent content (an array declaring more
    data than the file holds, a callable that is not plain data) raises :class:`DataError` naming
    the file, runs no code and allocates nothing beyond the file's size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # torch.save's format: a checkpoint given as annotations
                raise DataError(f"{path}: a zip archive (a torch checkpoint?), not a pyskl pickle")
            f.seek(0)
            return SafeUnpickler(_BoundedReader(f, os.fstat(f.fileno()).st_size)).load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: unsafe or invalid pickle: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise DataError(f"{path}: cannot read pickle (nested too deeply)") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OSError, UnicodeDecodeError, OverflowError) as e:
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


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a file that can be written (before long work): a :class:`DataError` naming it
    when it is a folder, lies under a file, or its folder cannot be made or written."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"cannot write {path}: it is a folder")
    parent = path.parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise DataError(f"cannot write {path}: {p} is a file")
            if not os.access(p, os.W_OK | os.X_OK):
                raise DataError(f"cannot write {path}: {p} is not writable")
            break
    return path


def save_pyskl(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (plain containers + numpy arrays only, so :func:`load_pyskl` reads it back)
    atomically (a temp file renamed over ``path``). A folder that cannot be made, a path that is
    a folder, no permission or a full disk raise :class:`DataError` naming the path; an earlier
    file at ``path`` is then left as it was."""
    _check_plain(obj)
    path = check_output_path(path)
    with atomic_path(path, what="pose file") as tmp, open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path
