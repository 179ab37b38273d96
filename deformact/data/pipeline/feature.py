"""Input features of the pose stream: joints, bones, and their motions (the four streams of
multi-stream skeleton recognition; docs/RESULTS.md, "Penn Action ensemble").

* ``joint``: the packed pose as it is, (x, y, score) per joint.
* ``bone``: each joint minus its parent in the layout's tree (:data:`BONE_PARENTS`); the root's
  bone is zero. Its score is the smaller of the two joints' scores, so a bone with a missing end
  is missing too (zero vector, score 0).
* ``joint_motion`` / ``bone_motion``: the frame difference of the joint / bone feature after
  sampling, ``x[t + 1] - x[t]`` within each clip, zero at the clip's last step (which keeps the
  joint's score); the score is the smaller of the two frames' scores.
"""

from __future__ import annotations

from typing import Any

import torch

from deformact.errors import DataError

from ..skeletons import get_skeleton
from .base import Transform

FEATURES = ("joint", "bone", "joint_motion", "bone_motion")

# parent of every joint (the root is its own parent); trees rooted at the head/neck, as in the
# skeleton graphs of pyskl and ST-GCN for COCO-17 and NTU-25
BONE_PARENTS: dict[str, tuple[int, ...]] = {
    "coco17": (0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 0, 0, 11, 12, 13, 14),
    "ntu25": (1, 20, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 20, 22, 7, 24, 11),
    "penn13": (0, 0, 0, 1, 2, 3, 4, 1, 2, 7, 8, 9, 10),
}


def check_feature(feature: str) -> str:
    if feature not in FEATURES:
        raise DataError(f"data.feature must be one of {', '.join(FEATURES)}; got {feature!r}")
    return feature


def pose_feature(pose: torch.Tensor, feature: str, layout: str | None = None) -> torch.Tensor:
    """``pose`` ... x T x V x (x, y, score) -> the same shape holding ``feature`` (module docstring).
    ``layout`` names the skeleton (inferred from V when None)."""
    check_feature(feature)
    if feature == "joint":
        return pose
    x = pose
    if feature.startswith("bone"):
        parents = torch.as_tensor(BONE_PARENTS[get_skeleton(layout, pose.shape[-2]).name])
        score = torch.minimum(x[..., 2], x[..., parents, 2])
        xy = (x[..., :2] - x[..., parents, :2]) * (score[..., None] > 0)
        x = torch.cat([xy, score[..., None]], -1)
    if feature.endswith("motion"):
        out = torch.zeros_like(x)
        score = torch.minimum(x[..., 1:, :, 2], x[..., :-1, :, 2])
        out[..., :-1, :, :2] = (x[..., 1:, :, :2] - x[..., :-1, :, :2]) * (score[..., None] > 0)
        out[..., :-1, :, 2] = score
        out[..., -1, :, 2] = x[..., -1, :, 2]
        x = out
    return x.contiguous()


class PoseFeature(Transform):
    """Turns the packed joints into bones and/or motions (module docstring); the person mask is
    left as the joints gave it.

    Reads: pose. Writes: pose.
    """

    reads = ("pose",)
    writes = ("pose",)

    def __init__(self, *, feature: str = "joint", layout: str | None = None) -> None:
        self.feature, self.layout = check_feature(feature), layout

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        results["pose"] = pose_feature(results["pose"], self.feature, self.layout)
        return results
