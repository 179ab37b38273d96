"""Label maps: one class name per line (line N = label N-1), e.g. the 60 NTU RGB+D action names."""

from __future__ import annotations

import os
from pathlib import Path

from deformact.errors import DataError


def load_label_map(path: str | os.PathLike) -> list[str]:
    """Class names from a text file; blank lines at the end are ignored, blank lines inside are errors."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read label map ({e})") from None
    names = [ln.strip() for ln in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DataError(f"{path}: label map is empty")
    if "" in names:
        raise DataError(f"{path}: blank line {names.index('') + 1} in label map")
    return names
