"""Draw skeletons, labels and points on RGB frames (numpy + OpenCV, in place)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# one colour per person (RGB), colour-blind friendly (Okabe-Ito)
PERSON_COLORS = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
                 (213, 94, 0), (204, 121, 167))  # fmt: skip


def skeleton_edges(layout: str | None = "coco17", num_joints: int | None = None) -> list[tuple[int, int]]:
    """Bone list of a skeleton layout (by name, or inferred from the joint count)."""
    from deformact.data import get_skeleton

    return list(get_skeleton(layout, num_joints).edges)


def draw_skeleton(
    frame: np.ndarray,
    joints: np.ndarray,
    edges: Sequence[tuple[int, int]],
    color: tuple[int, int, int] = PERSON_COLORS[0],
    min_score: float = 0.2,
    radius: int | None = None,
    joint_colors: np.ndarray | None = None,
    joint_radii: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one person (V x 3: x, y pixels, score) on ``frame`` (h x w x 3 uint8 RGB) in place.

    Joints below ``min_score`` are skipped. ``joint_colors`` (V x 3) / ``joint_radii`` (V) override
    the per-joint look, e.g. to show joint importance.
    """
    import cv2

    h, w = frame.shape[:2]
    r = radius or max(2, round(min(h, w) / 120))
    ok = joints[:, 2] > min_score
    p = np.round(joints[:, :2]).astype(np.int32)
    for a, b in edges:
        if ok[a] and ok[b]:
            pa, pb = tuple(map(int, p[a])), tuple(map(int, p[b]))
            cv2.line(frame, pa, pb, color, max(1, r // 2 + 1), cv2.LINE_AA)
    for v in np.flatnonzero(ok):
        c = tuple(int(x) for x in joint_colors[v]) if joint_colors is not None else color
        rv = int(joint_radii[v]) if joint_radii is not None else r
        cv2.circle(frame, tuple(map(int, p[v])), rv, c, -1, cv2.LINE_AA)
        cv2.circle(frame, tuple(map(int, p[v])), rv, (0, 0, 0), 1, cv2.LINE_AA)
    return frame


def draw_label(frame: np.ndarray, text: str, org: tuple[int, int] = (8, 8), scale: float | None = None,
               color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Write ``text`` (one or more lines) at the top-left corner on a dark box, in place."""
    import cv2

    h, w = frame.shape[:2]
    scale = scale or max(0.4, min(h, w) / 600)
    th = max(1, round(scale * 1.5))
    y = org[1]
    for line in text.splitlines() or [""]:
        (tw, tht), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, th)
        cv2.rectangle(frame, (org[0] - 4, y - 4), (org[0] + tw + 4, y + tht + base + 2), (0, 0, 0), -1)
        cv2.putText(frame, line, (org[0], y + tht), cv2.FONT_HERSHEY_SIMPLEX, scale, color, th, cv2.LINE_AA)
        y += tht + base + 8
    return frame


def draw_poses(frame: np.ndarray, persons: np.ndarray, edges: Sequence[tuple[int, int]],
               min_score: float = 0.2) -> np.ndarray:
    """Draw M people (M x V x 3) with one colour each; absent people (all scores 0) are skipped."""
    for m, joints in enumerate(persons):
        if joints[:, 2].max(initial=0) > 0:
            draw_skeleton(frame, joints, edges, PERSON_COLORS[m % len(PERSON_COLORS)], min_score)
    return frame


def draw_score_bar(frame: np.ndarray, score: float, label: str = "", height: int | None = None,
                   color: tuple[int, int, int] = (0, 158, 115)) -> np.ndarray:
    """A bar along the bottom edge, filled to ``score`` (0..1) of the width, with ``label`` and
    the score written on it, in place."""
    import cv2

    h, w = frame.shape[:2]
    bh = height or max(6, round(h / 18))
    y0 = h - bh
    frame[y0:, :] = (frame[y0:, :].astype(np.uint16) // 3).astype(np.uint8)
    fill = int(round(float(np.clip(score, 0.0, 1.0)) * w))
    frame[y0:, :fill] = color
    text = f"{label}  {score:.2f}".strip()
    scale = max(0.3, bh / 30)
    (_, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(frame, text, (4, y0 + (bh + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return frame
