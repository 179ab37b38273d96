"""Per-video class scores of one test run: ``scores.npz``, written by ``deformact test`` and at
the end of ``deformact train``, read by ``deformact ensemble``.

The file holds plain arrays only (it loads with ``allow_pickle=False``; nothing in it can run):

* ``scores``      N x C float32, the clip-averaged softmax (``test.average: prob``) or logits
* ``labels``      N int64
* ``frame_dir``   N video names, in the order they were scored
* ``split``       the split name; ``class_names`` C names; ``average`` "prob" | "score"
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deformact.errors import DataError, DeformactError
from deformact.io.atomic import atomic_path

SCORES_FILE = "scores.npz"


@dataclass(frozen=True)
class RunScores:
    """One run's saved test scores (see the module docstring)."""

    path: Path
    scores: np.ndarray
    labels: np.ndarray
    frame_dir: np.ndarray
    split: str
    class_names: tuple[str, ...]
    average: str


def save_scores(path: str | os.PathLike, *, scores: np.ndarray, labels: np.ndarray, frame_dir: Sequence[str],
                split: str, class_names: Sequence[str], average: str = "prob",
                error: type[DeformactError] = DataError) -> Path:
    """Write ``scores.npz`` atomically (plain arrays only: it loads with ``allow_pickle=False``);
    an OS error (full disk, ...) is one ``error`` naming the file."""
    path = Path(path)
    scores, labels = np.asarray(scores, np.float32), np.asarray(labels, np.int64)
    if scores.ndim != 2 or labels.shape != scores.shape[:1] or len(frame_dir) != len(labels):
        raise ValueError(f"scores {scores.shape}, labels {labels.shape} and {len(frame_dir)} names disagree")
    with atomic_path(path, what="scores", error=error) as tmp, open(tmp, "wb") as f:
        np.savez(f, scores=scores, labels=labels, frame_dir=np.asarray([str(n) for n in frame_dir], dtype=str),
                 split=np.asarray(str(split)), class_names=np.asarray([str(c) for c in class_names], dtype=str),
                 average=np.asarray(str(average)))
    return path


def load_scores(run: str | os.PathLike) -> RunScores:
    """A run directory's (or a file's) ``scores.npz``; nothing in the file can run code."""
    path = Path(run)
    if path.is_dir():
        path = path / SCORES_FILE
    if not path.is_file():
        raise DataError(f"{path}: no saved scores (run `deformact test` on that run first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in ("scores", "labels", "frame_dir", "split", "class_names", "average")}
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: not a deformact scores file ({type(e).__name__}: {e})") from None
    scores, labels = got["scores"], got["labels"]
    if scores.ndim != 2 or labels.shape != scores.shape[:1] or got["frame_dir"].shape != labels.shape \
            or len(got["class_names"]) != scores.shape[1]:
        raise DataError(f"{path}: inconsistent shapes (scores {scores.shape}, labels {labels.shape})")
    if not np.isfinite(scores).all():
        raise DataError(f"{path}: scores hold NaN or inf")
    return RunScores(path=path, scores=scores.astype(np.float64), labels=labels.astype(np.int64),
                     frame_dir=got["frame_dir"].astype(str), split=str(got["split"]),
                     class_names=tuple(str(c) for c in got["class_names"]), average=str(got["average"]))
