"""Assign per-frame detections to M person tracks (box IoU + centroid distance, Hungarian).

pyskl stores M x T x V arrays, so person m must be the same human in every frame. Detectors give
unordered people per frame; this links them to the track whose last box they overlap most.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def person_box(kp: np.ndarray, min_score: float = 0.1) -> np.ndarray:
    """(x0, y0, x1, y1) around the confident joints of one V x 3 person (all joints if none)."""
    ok = kp[:, 2] > min_score
    pts = kp[ok, :2] if ok.sum() >= 2 else kp[:, :2]
    return np.concatenate([pts.min(0), pts.max(0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N x 4) and b (K x 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-6)


class OnlineTracker:
    """Frame-by-frame track assignment (box IoU + centroid distance, Hungarian) for ``max_persons``
    slots: :meth:`update` takes one frame's detections and returns them in slot order. A slot
    keeps its person's last box while they are unseen, so they get the slot back on return."""

    def __init__(self, *, max_persons: int, num_joints: int = 17) -> None:
        self.max_persons, self.num_joints = int(max_persons), int(num_joints)
        self.reset()

    def reset(self) -> None:
        self.last_box: list[np.ndarray | None] = [None] * self.max_persons

    def update(self, people: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(M x V x 2 keypoints, M x V scores) of this frame; empty slots are zero. At most
        ``max_persons`` detections are kept (highest mean score first)."""
        M = self.max_persons
        kp = np.zeros((M, self.num_joints, 2), np.float32)
        sc = np.zeros((M, self.num_joints), np.float32)
        people = sorted(people, key=lambda p: -float(p[:, 2].mean()))[:M]
        if not people:
            return kp, sc
        boxes = np.stack([person_box(p) for p in people])
        # cost = 1 - IoU + centroid distance in units of the box size; never-used tracks cost 2
        cost = np.full((len(people), M), 2.0)
        for m, lb in enumerate(self.last_box):
            if lb is None:
                continue
            iou = box_iou(boxes, lb[None])[:, 0]
            size = max(lb[2] - lb[0], lb[3] - lb[1], 1.0)
            dist = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - (lb[:2] + lb[2:]) / 2, axis=1) / size
            cost[:, m] = 1.0 - iou + np.minimum(dist, 1.0)
        rows, cols = linear_sum_assignment(cost)
        for r, m in zip(rows, cols):
            kp[m] = people[r][:, :2]
            sc[m] = people[r][:, 2]
            self.last_box[m] = boxes[r]
        return kp, sc


def track_persons(
    per_frame: list[list[np.ndarray]], max_persons: int, num_joints: int = 17
) -> tuple[np.ndarray, np.ndarray]:
    """Link detections into ``max_persons`` tracks (:class:`OnlineTracker` over the whole video).

    Returns ``keypoint`` M x T x V x 2 and ``keypoint_score`` M x T x V (float32; absent = 0),
    tracks ordered by total score (pyskl puts the main actor first). Per frame, at most
    ``max_persons`` detections are kept (highest mean score first).
    """
    T, M = len(per_frame), max_persons
    kp = np.zeros((M, T, num_joints, 2), np.float32)
    sc = np.zeros((M, T, num_joints), np.float32)
    tracker = OnlineTracker(max_persons=M, num_joints=num_joints)
    for t, people in enumerate(per_frame):
        kp[:, t], sc[:, t] = tracker.update(people)
    order = np.argsort(-sc.sum((1, 2)), kind="stable")
    return kp[order], sc[order]
