"""The errors a user can cause: one hierarchy, caught once by ``deformact.cli.main`` and printed
as one line (``deformact <command>: <message>``, exit status 2).

Library code raises the most specific subclass with a message that names the file, key or value
at fault; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class DeformactError(Exception):
    """Base of every user-facing error; the message is complete on its own (one line)."""


class ConfigError(DeformactError, ValueError):
    """A run config, ``--set`` override or preset that cannot be used."""


class DataError(DeformactError, ValueError):
    """Bad input data (missing/truncated file, wrong shapes, unsafe pickle...); names the file."""


class VideoError(DataError):
    """A video or frame folder that cannot be opened, probed, decoded or written."""


class CheckpointError(DeformactError, ValueError):
    """A checkpoint or weights file that cannot be read or does not fit the model/config."""


class TrainingError(DeformactError, RuntimeError):
    """Training that cannot go on (diverged loss, empty loader, run directory in use...)."""


class InferenceError(DeformactError, ValueError):
    """predict/explain/export inputs that do not fit the model (no poses, wrong layout...)."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "DeformactError", "InferenceError", "TrainingError",
           "VideoError"]
