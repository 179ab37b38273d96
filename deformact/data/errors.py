"""The one exception users see for bad data."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data (missing/truncated file, wrong shapes, unsafe pickle...); the message names the file."""
