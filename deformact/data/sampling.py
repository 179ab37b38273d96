"""Uniform segment sampling: one frame per equal segment, the same indices for RGB and pose."""

from __future__ import annotations

import numpy as np


def segment_indices(num_frames: int, clip_len: int, num_clips: int = 1,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """``num_clips x clip_len`` frame indices into a clip of ``num_frames`` frames.

    The clip is cut into ``clip_len`` equal segments and one frame is taken from each: a random
    point per segment when ``rng`` is given (training), else evenly shifted points, clip k at
    fraction (k + 0.5) / num_clips of every segment (deterministic multi-clip testing). Clips
    shorter than ``clip_len`` repeat frames evenly (temporal order kept).
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample from {num_frames} frames")
    if rng is None:
        u = np.broadcast_to(((np.arange(num_clips) + 0.5) / num_clips)[:, None], (num_clips, clip_len))
    else:
        u = rng.random((num_clips, clip_len))
    idx = np.floor((np.arange(clip_len) + u) * (num_frames / clip_len)).astype(np.int64)
    return np.minimum(idx, num_frames - 1)
