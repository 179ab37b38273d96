"""Video -> pyskl annotation (``deformact extract-poses`` and ``deformact predict``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from deformact.io.video import iter_frames, output_size, probe

from .base import PoseEstimator
from .tracking import track_persons


class NoPersonWarning(UserWarning):
    """A video in which the estimator found nobody (its annotation has zero scores)."""


def extract_video(
    path: str | Path,
    estimator: PoseEstimator,
    max_persons: int = 2,
    max_side: int | None = 640,
    progress: bool = True,
    label: int = -1,
    frame_dir: str | None = None,
) -> dict:
    """Estimate 2D poses on every frame of a video and return one pyskl annotation.

    Keys: frame_dir (``frame_dir`` or the file stem), label, total_frames, img_shape and original_shape (h, w of the
    video; keypoints are in its pixels), keypoint M x T x V x 2, keypoint_score M x T x V
    (float32). Frames are decoded at most ``max_side`` pixels long (the estimator sees small
    frames, coordinates are scaled back). Raises :class:`deformact.errors.VideoError` for a
    missing or truncated video.
    """
    from tqdm import tqdm

    path = Path(path)
    info = probe(path)
    H, W = info.height, info.width
    estimator.reset()
    per_frame: list[list[np.ndarray]] = []
    bar = tqdm(total=info.frames or None, desc=path.name, unit="frame", disable=not progress, leave=False)
    w, h = output_size(W, H, max_side)  # the size iter_frames decodes to
    sx, sy = W / w, H / h
    try:
        # decoding and estimation side by side (PoseEstimator.stream); the people come in frame order
        for persons in estimator.stream(iter_frames(path, max_side)):
            people = []
            for p in persons:
                p = np.asarray(p, np.float32).copy()
                p[:, 0] *= sx
                p[:, 1] *= sy
                people.append(p)
            per_frame.append(people)
            bar.update(1)
    finally:
        bar.close()
    kp, score = track_persons(per_frame, max_persons, estimator.num_joints)
    if not score.any():
        warnings.warn(f"{path}: no person found in any of {len(per_frame)} frames; its annotation has zero "
                      "scores", NoPersonWarning, stacklevel=2)
    return {
        "frame_dir": frame_dir or path.stem,
        "label": int(label),
        "total_frames": len(per_frame),
        "img_shape": (H, W),
        "original_shape": (H, W),
        "keypoint": kp,
        "keypoint_score": score,
    }
