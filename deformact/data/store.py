"""The checked annotations of a pyskl dataset in a few contiguous arrays (docs/PERFORMANCE.md,
"NTU-scale data").

Tens of thousands of per-clip dicts of small arrays cost Python objects whose reference counts
every DataLoader worker writes to (copying the pages they sit on) and a slow start; here all
clips' joints are two arrays (rows = person-frames) plus per-clip offsets, so a forked worker
shares them untouched. ``store[i]`` gives back the per-clip dict (the pipeline's ``results``
keys) whose arrays are views into the shared ones: the same values and dtypes as the dicts it
was built from, so items are bit-identical.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


class ClipStore(Sequence):
    """``len(store)`` clips; ``store[i]`` -> ``{"frame_dir", "label", "total_frames", "img_shape"
    (when known), "keypoint" M x T x V x 2, "keypoint_score" M x T x V, "rank"}`` (the last three
    only for clips with keypoints). Built from checked annotation dicts (see
    :class:`deformact.data.PysklDataset`)."""

    def __init__(self, anns: Sequence[dict[str, Any]]) -> None:
        n = len(anns)
        self.frame_dir = np.array([a["frame_dir"] for a in anns], dtype=str)
        self.label = np.array([a["label"] for a in anns], dtype=np.int64)
        self.total_frames = np.array([-1 if a.get("total_frames") is None else int(a["total_frames"]) for a in anns],
                                     dtype=np.int64)
        self.img_shape = np.array([a.get("img_shape", (-1, -1)) for a in anns], dtype=np.int64).reshape(n, 2)
        with_kp = [a for a in anns if "keypoint" in a]
        self.has_pose = np.array(["keypoint" in a for a in anns], dtype=bool)
        self.persons = np.zeros(n, np.int64)
        self.frames = np.zeros(n, np.int64)
        width = max((len(a["rank"]) for a in with_kp), default=0)
        self.rank = np.full((n, width), -1, np.int64)
        self.rank_len = np.zeros(n, np.int64)
        v = with_kp[0]["keypoint"].shape[2] if with_kp else 0
        kp_dtype = np.result_type(*{a["keypoint"].dtype for a in with_kp}) if with_kp else np.float32
        sc_dtype = np.result_type(*{a["keypoint_score"].dtype for a in with_kp}) if with_kp else np.float32
        for i, a in enumerate(anns):
            if "keypoint" in a:
                m, t = a["keypoint"].shape[:2]
                self.persons[i], self.frames[i] = m, t
                self.rank_len[i] = len(a["rank"])
                self.rank[i, :len(a["rank"])] = a["rank"]
        rows = self.persons * self.frames
        self.start = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.keypoint = np.empty((int(self.start[-1]), v, 2), kp_dtype)
        self.keypoint_score = np.empty((int(self.start[-1]), v), sc_dtype)
        for i, a in enumerate(anns):
            if "keypoint" in a:
                s, e = self.start[i], self.start[i + 1]
                self.keypoint[s:e] = a["keypoint"].reshape(-1, v, 2)
                self.keypoint_score[s:e] = a["keypoint_score"].reshape(-1, v)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        t = int(self.total_frames[i])
        out: dict[str, Any] = {"frame_dir": str(self.frame_dir[i]), "label": int(self.label[i]),
                               "total_frames": t if t >= 0 else None}
        if self.img_shape[i, 0] >= 0:
            out["img_shape"] = (int(self.img_shape[i, 0]), int(self.img_shape[i, 1]))
        if self.has_pose[i]:
            m, f, s = int(self.persons[i]), int(self.frames[i]), int(self.start[i])
            e = s + m * f
            out["keypoint"] = self.keypoint[s:e].reshape(m, f, *self.keypoint.shape[1:])
            out["keypoint_score"] = self.keypoint_score[s:e].reshape(m, f, -1)
            out["rank"] = self.rank[i, :int(self.rank_len[i])]
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(len(self)))

    def usable(self, chunk: int = 1 << 20) -> np.ndarray:
        """Per clip: does it show anybody, i.e. a joint with a finite position and a finite score
        > 0 in some frame (clips without keypoints count as usable). Finiteness is read from the
        exponent bits (all ones = inf/NaN), in chunks of rows: no float16 arithmetic, no big
        temporaries."""
        rows = np.zeros(len(self.keypoint) + 1, np.int64)
        for a in range(0, len(self.keypoint), chunk):
            kp, sc = self.keypoint[a:a + chunk], self.keypoint_score[a:a + chunk]
            seen = (sc > 0) & _finite(sc)  # NaN > 0 is False; inf is not finite
            seen &= _finite(kp[..., 0]) & _finite(kp[..., 1])
            rows[a + 1:a + 1 + len(kp)] = seen.any(-1)
        np.cumsum(rows, out=rows)
        found = rows[self.start[1:]] - rows[self.start[:-1]]
        return (found > 0) | ~self.has_pose

    def far_off(self, chunk: int = 1 << 18) -> np.ndarray:
        """Per clip: how many of its joints lie far off its frame
        (:func:`deformact.data.checks.far_off_mask`), in chunks of rows as :meth:`usable` reads.
        A row is worth that per-joint test only when a coordinate's magnitude exceeds
        ``FAR_OFF_FRAMES`` times the smallest frame width (x) or height (y) of the store, read
        from the bits as :func:`_finite` does (no float16 arithmetic: real files have no such row)."""
        from .checks import FAR_OFF_FRAMES, far_off_mask

        counts = np.zeros(len(self), np.int64)
        sized = self.img_shape[self.has_pose]
        if not len(self.keypoint) or not len(sized):
            return counts
        limits = (FAR_OFF_FRAMES * sized[:, 1].min(), FAR_OFF_FRAMES * sized[:, 0].min())  # x, y
        for a in range(0, len(self.keypoint), chunk):
            kp = self.keypoint[a:a + chunk]
            rows = np.flatnonzero((_beyond(kp[..., 0], limits[0]) | _beyond(kp[..., 1], limits[1])).any(-1))
            if not len(rows):
                continue
            clip = np.searchsorted(self.start, a + rows, side="right") - 1  # the clip of each such row
            n = far_off_mask(kp[rows], self.keypoint_score[a + rows], self.img_shape[clip]).sum(-1)
            counts += np.bincount(clip, weights=n, minlength=len(self)).astype(np.int64)
        return counts

    def subset(self, keep: np.ndarray) -> ClipStore:
        """The clips where ``keep`` (bool per clip) is set, in order."""
        return ClipStore([self[i] for i in np.flatnonzero(keep)])


def _finite(x: np.ndarray) -> np.ndarray:
    """``np.isfinite`` for IEEE floats through their exponent bits (fast for float16 too)."""
    if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):
        return np.isfinite(x)
    bits = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}
    kind, exp = bits[x.dtype.itemsize]
    b = np.ascontiguousarray(x).view(kind)
    return (b & kind(exp)) != kind(exp)


def _beyond(x: np.ndarray, limit: float) -> np.ndarray:
    """``|x| > limit`` for finite IEEE floats, compared as bits (sign bit cleared): positive floats
    order as their bit patterns do. NaN and inf are False (the "shows nobody" check judges them)."""
    if x.dtype.kind != "f" or x.dtype.itemsize not in (2, 4, 8):
        return np.isfinite(x) & (np.abs(x) > limit)
    kind, exp = {2: (np.uint16, 0x7C00), 4: (np.uint32, 0x7F800000), 8: (np.uint64, 0x7FF0000000000000)}[
        x.dtype.itemsize]
    b = np.ascontiguousarray(x).view(kind) & (~kind(0) >> kind(1))  # |x|
    t = np.array(limit, x.dtype).view(kind)
    return (b > t) & (b < kind(exp))


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; nothing elsewhere):
    the per-clip arrays freed after packing would otherwise stay counted in the process."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
