"""The annotated video of ``deformact predict --out``: every person's skeleton, the prediction
and, with windows, the current window's label and a score bar on each frame."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deformact.errors import InferenceError

MIN_SIDE = 96  # smaller videos are enlarged (nearest neighbour) so that the text stays legible


def _edges(num_joints: int, layout: str | None) -> list[tuple[int, int]]:
    from deformact.data import get_skeleton

    if layout is None and num_joints not in (13, 17, 25):
        return []
    return list(get_skeleton(layout, num_joints).edges)


def current_window(windows: Sequence[Mapping[str, Any]], frame: int) -> int | None:
    """Index of the window shown at ``frame``: of those containing it, the one centred nearest."""
    best, dist = None, None
    for k, w in enumerate(windows):
        if w["start_frame"] <= frame < w["end_frame"]:
            d = abs((w["start_frame"] + w["end_frame"]) / 2 - frame)
            if dist is None or d < dist:
                best, dist = k, d
    return best


def annotated_frames(video: Path, ann: Mapping[str, Any], top: Sequence[Mapping[str, Any]],
                     windows: Sequence[Mapping[str, Any]] = (), max_side: int = 640) -> Iterator[np.ndarray]:
    """The frames of ``video`` with the drawings (see the module doc)."""
    import cv2

    from deformact.io import iter_frames
    from deformact.viz.draw import draw_label, draw_poses, draw_score_bar

    kp = np.asarray(ann["keypoint"], np.float32)
    sc = np.asarray(ann["keypoint_score"], np.float32)
    h0, w0 = (int(s) for s in ann["img_shape"][:2])
    edges = _edges(kp.shape[2], ann.get("layout"))
    overall = "\n".join(f"{t['label']}  {t['score']:.2f}" for t in top[:3])
    for i, frame in enumerate(iter_frames(video, max_side, strict=False)):
        if min(frame.shape[:2]) < MIN_SIDE:
            f = int(np.ceil(MIN_SIDE / max(1, min(frame.shape[:2]))))
            frame = cv2.resize(frame, (frame.shape[1] * f, frame.shape[0] * f), interpolation=cv2.INTER_NEAREST)
        else:
            frame = frame.copy()
        if i < kp.shape[1]:
            s = np.array([frame.shape[1] / w0, frame.shape[0] / h0], np.float32)
            draw_poses(frame, np.concatenate([kp[:, i] * s, sc[:, i, :, None]], -1), edges)
        k = current_window(windows, i) if windows else None
        if k is None:
            yield draw_label(frame, overall)
            continue
        best = windows[k]["top5"][0]
        w = windows[k]
        draw_label(frame, f"{w['start_s']:.1f}-{w['end_s']:.1f} s: {best['label']}")
        yield draw_score_bar(frame, best["score"], best["label"])


def write_annotated_video(video: str | Path, ann: Mapping[str, Any], top: Sequence[Mapping[str, Any]], out: str | Path,
                          *, fps: float, windows: Sequence[Mapping[str, Any]] = (), max_side: int = 640) -> int:
    """Encode :func:`annotated_frames` to ``out`` through a temp file renamed at the end; returns
    the number of frames written."""
    from deformact.io import write_video
    from deformact.tools.outpaths import atomic_output

    with atomic_output(out, "annotated video") as tmp:
        n = write_video(tmp, annotated_frames(Path(video), ann, top, windows, max_side), fps=fps or 30.0)
        if n == 0:
            raise InferenceError(f"{video}: no frame could be decoded for the annotated video")
    return n


__all__ = ["annotated_frames", "current_window", "write_annotated_video"]
