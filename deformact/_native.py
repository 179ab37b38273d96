"""Quieting native libraries: C++ code (mediapipe's TFLite/absl, torch's Kineto profiler) writes
straight to file descriptor 2, past Python's ``sys.stderr``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while the block runs: C++ libraries print there directly
    (mediapipe's TFLite/absl start-up chatter, Kineto's "USDT ... profiler_start" lines), and
    no setting of theirs turns it off. Python's own stderr is flushed first and restored after."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
