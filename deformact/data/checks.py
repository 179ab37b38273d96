"""Checks that keep bad data from training or testing quietly (docs/FAILURES.md, "Data"):
usable people in a clip, labels that are contiguous or declared, and a video that fits its
annotation (frame count and frame size, with the tolerances below).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deformact.errors import DataError, VideoError
from deformact.io.video_read import FRAME_TOLERANCE

# a video may have at most FRAME_TOLERANCE frames fewer than its annotation (the reader repeats the
# last frame that often) and max(FRAME_TOLERANCE, 5 %) more (off-by-one exports)
FRAME_TOLERANCE_FRACTION = 0.05
# frame size: equal to img_shape within this many pixels per side (encoders round to even sizes),
# or the same with width and height swapped (rotation metadata), or a uniformly scaled copy of the
# frame (the same aspect ratio within SIZE_RATIO_TOLERANCE, scale in [1/MAX_SCALE, MAX_SCALE])
SIZE_TOLERANCE_PX = 2
SIZE_RATIO_TOLERANCE = 0.02
MAX_SCALE = 8.0
# the label of the placeholder a non-training dataset returns for a clip it leaves out (skip_bad)
SKIPPED_LABEL = -1


def as_label(value: Any) -> int:
    """A class label as an int: an integer, or a float with an integral value (2.0). Anything
    else (1.7, "2", True, None) is a ``ValueError``: truncating or parsing it would train on a
    label nobody wrote."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"needs an integer 'label', got {type(value).__name__} {value!r}")
    if isinstance(value, (float, np.floating)) and not (np.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"needs an integer 'label', got {value!r}")
    return int(value)


def check_contiguous_labels(labels: Sequence[Any], names: Sequence[str], where: str) -> int:
    """The class count of labels that declare none: they must run 0..K-1 without gaps. Raises a
    :class:`DataError` naming the first clip (``names[i]``, file order) whose label lies past
    the first missing one, e.g. a stray 99 in a 3-class set."""
    values = np.empty(len(labels), dtype=np.int64)
    for i, x in enumerate(labels):
        try:
            values[i] = as_label(x)
        except ValueError as e:
            raise DataError(f"{where}: annotation {i} ({names[i]}): {e}") from None
    if not len(values):
        return 0
    present = np.unique(values[values >= 0])
    k = int(present[-1]) + 1 if len(present) else 0
    if len(present) == k:
        return k
    gap = int(np.flatnonzero(present != np.arange(len(present)))[0])  # the first missing label
    i = int(np.flatnonzero(values > gap)[0])
    missing = k - len(present)
    raise DataError(f"{where}: annotation {i} ({names[i]}) has label {int(values[i])}, but label {gap} "
                    f"(and {missing - 1} more below {k}) never occurs: labels must run 0..K-1 without gaps, "
                    "or declare the classes (data.num_classes, data.label_map or the file's class_names)")


_MEDIA: dict[str, tuple[int, int, int]] = {}


def media_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(width, height, frames) of a video or frame folder, from its header when it declares the
    frame count, else counted; cached per process by path, size and modification time."""
    from deformact.io.video import count_frames, probe

    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise VideoError(f"{path}: video not found ({e.strerror})") from None
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    if key not in _MEDIA:
        info = probe(path)
        frames = info.frames if info.frames > 0 else count_frames(path)
        if len(_MEDIA) > 4096:
            _MEDIA.clear()
        _MEDIA[key] = (int(info.width), int(info.height), int(frames))
    return _MEDIA[key]


def frames_allowed(num_frames: int) -> tuple[int, int]:
    """The frame counts (lo, hi) a video may have when its annotation says ``num_frames``: at most
    ``FRAME_TOLERANCE`` fewer and max(``FRAME_TOLERANCE``, 5 %) more."""
    more = max(FRAME_TOLERANCE, int(round(FRAME_TOLERANCE_FRACTION * num_frames)))
    return num_frames - FRAME_TOLERANCE, num_frames + more


# a joint more than this many frame sizes beyond the frame's edges is not a pose estimate but a
# broken file (pixel coordinates written as normalized ones, or garbage): the clip is bad
FAR_OFF_FRAMES = 1.0


def far_off_mask(kp: np.ndarray, score: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """Per joint of ``kp`` (N x V x 2 pixels, ``score`` N x V): scored > 0, finite, and more than
    ``FAR_OFF_FRAMES`` frame sizes outside its frame; ``hw`` is (h, w), or one (h, w) per row (N x 2).
    No division and no float64 copy: the bounds are scaled instead (NaN compares False)."""
    hw = np.asarray(hw, np.float32).reshape(-1, 2)
    h, w = hw[:, :1], hw[:, 1:]
    x, y = kp[..., 0], kp[..., 1]
    inf = np.float32(np.inf)
    lo, hi = -FAR_OFF_FRAMES, 1 + FAR_OFF_FRAMES
    off = (((x < lo * w) | (x > hi * w)) & (np.abs(x) < inf)) | (((y < lo * h) | (y > hi * h)) & (np.abs(y) < inf))
    return off & (score > 0)


def far_off_joints(kp: np.ndarray, score: np.ndarray, img_shape: Sequence[int]) -> int:
    """How many joints of ``kp`` (... x V x 2, pixels) are scored > 0, finite and more than
    ``FAR_OFF_FRAMES`` frame sizes outside the ``img_shape`` (h, w) frame."""
    v = kp.shape[-2]
    return int(far_off_mask(kp.reshape(-1, v, 2), score.reshape(-1, v), tuple(img_shape)[:2]).sum())


def _size_fits(w: int, h: int, aw: int, ah: int) -> bool:
    if abs(w - aw) <= SIZE_TOLERANCE_PX and abs(h - ah) <= SIZE_TOLERANCE_PX:
        return True
    sx, sy = w / aw, h / ah
    # rounding to whole (even) pixels moves the ratio of a scaled copy by up to 2 px per side
    slack = SIZE_RATIO_TOLERANCE + SIZE_TOLERANCE_PX / min(w, h)
    return 1 / MAX_SCALE <= sx <= MAX_SCALE and abs(sx / sy - 1) <= slack


def check_media(path: str | os.PathLike, num_frames: int | None, img_shape: Sequence[int] | None) -> None:
    """A :class:`VideoError` (a :class:`DataError`; a counted skip with ``skip_bad``) when the
    video or frame folder at ``path`` contradicts its annotation: ``num_frames`` (the frames the
    poses were sampled from) more than ``FRAME_TOLERANCE`` above the video's count or more than
    max(``FRAME_TOLERANCE``, 5 %) below it; ``img_shape`` (h, w) neither the video's size (up to
    ``SIZE_TOLERANCE_PX`` per side), nor that size rotated, nor a uniformly scaled copy of it."""
    w, h, n = media_info(path)
    if num_frames:
        lo, hi = frames_allowed(num_frames)
        if not lo <= n <= hi:
            raise VideoError(f"{path}: the video has {n} frames but its annotation {num_frames} "
                             f"(allowed: {lo}..{hi}); RGB and pose would not line up")
    if img_shape is not None:
        ah, aw = (int(s) for s in tuple(img_shape)[:2])
        if w < 1 or h < 1 or not (_size_fits(w, h, aw, ah) or _size_fits(h, w, aw, ah)):
            raise VideoError(f"{path}: the video is {w}x{h} but its annotation's img_shape is {aw}x{ah} "
                             "(w x h), neither the same size, rotated, nor a scaled copy of that frame")


def drop_placeholders(batch: dict[str, Any], order: list[int], pos: int) -> tuple[dict[str, Any], int]:
    """Evaluation side of ``skip_bad`` off the training split: remove the placeholder items
    (``label == SKIPPED_LABEL``) from a collated ``batch`` and their dataset indices from
    ``order`` (a list, changed in place) at ``pos``, so that ``order[pos:pos + len(kept)]`` still
    names the kept items. Returns (the kept batch, how many were dropped); a batch holding only
    placeholders comes back empty (``{}``)."""
    import torch

    label = torch.as_tensor(batch["label"])
    bad = label == SKIPPED_LABEL
    n = int(bad.sum())
    if not n:
        return batch, 0
    for j in sorted(np.flatnonzero(bad.numpy()).tolist(), reverse=True):
        del order[pos + j]
    if n == len(label):
        return {}, n
    keep = ~bad
    out = {k: v[keep] if isinstance(v, torch.Tensor) else [x for x, k_ in zip(v, keep.tolist()) if k_]
           for k, v in batch.items()}
    return out, n
