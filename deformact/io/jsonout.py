"""Strict JSON out: every JSON file or line deformact writes is valid JSON (docs/FAILURES.md,
"Checkpoints and weights").

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no JSON parser accepts; a
non-finite number that reaches a writer here is one :class:`NonFiniteJSONError` line naming the
output and where in it the number sits, never a file with ``NaN`` in it. Where a NaN legitimately
means "undefined" (the sampling locations of masked anchors in ``explain.json``), the writer names
those subtrees in ``null_under`` and they are written as ``null``.

The module mirrors ``json.dumps`` / ``json.loads`` so that ``from deformact.io import jsonout as
json`` makes a module's existing calls strict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from deformact.errors import DeformactError

loads = json.loads


class NonFiniteJSONError(DeformactError, ValueError):
    """A NaN or infinity reached a JSON writer (a broken model, checkpoint or input upstream)."""


def _is_bad(value: Any) -> bool:
    if isinstance(value, bool | int | str) or value is None:
        return False
    try:
        return not math.isfinite(value)
    except TypeError:
        return False


def find_non_finite(obj: Any, where: str = "") -> tuple[str, Any] | None:
    """``(path, value)`` of the first NaN/inf in ``obj`` (dicts, lists, tuples, floats, numpy
    scalars), e.g. ``("top5[0].score", nan)``; ``None`` when every number is finite."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found = find_non_finite(value, f"{where}.{key}" if where else str(key))
            if found:
                return found
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            found = find_non_finite(value, f"{where}[{i}]")
            if found:
                return found
    elif _is_bad(obj):
        return where or "the value", obj
    return None


def nulls_for_non_finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf replaced by ``None`` (written as ``null``)."""
    if isinstance(obj, Mapping):
        return {key: nulls_for_non_finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [nulls_for_non_finite(value) for value in obj]
    return None if _is_bad(obj) else obj


def dumps(obj: Any, *, what: str = "JSON output", null_under: Collection[str] = (),
          error: type[DeformactError] = NonFiniteJSONError, **kwargs: Any) -> str:
    """``json.dumps(obj, allow_nan=False, **kwargs)``; a NaN/inf is one ``error`` naming ``what``
    and where the number is. Top-level keys in ``null_under`` hold values where NaN means
    "undefined": their non-finite numbers become ``null``."""
    if null_under and isinstance(obj, Mapping):
        obj = {k: nulls_for_non_finite(v) if k in null_under else v for k, v in obj.items()}
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:
        found = find_non_finite(obj)
        if found is None:
            raise
        where, value = found
        raise error(f"{what}: refusing to write {value} at {where}: JSON has no NaN or infinity "
                    "(a non-finite number there means a broken model, checkpoint or input)") from None


__all__ = ["NonFiniteJSONError", "dumps", "find_non_finite", "loads", "nulls_for_non_finite"]
