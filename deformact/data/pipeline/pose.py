"""Pose transforms: rank and select people, gather the sampled frames, normalize, augment, pack.

Keypoints arrive as a pyskl annotation holds them (M x T x V x 2 pixels of the ``img_shape``
frame, scores M x T x V; or M x T x V x 3 with the score last) and leave as the model's pose
input M x T x V x (x, y, score), x, y relative to the crop box (README "Python").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deformact.errors import DataError

from .. import transforms as tf
from .base import Transform, image_wh


def _where(results: dict[str, Any]) -> str:
    return str(results.get("frame_dir", "annotation"))


def pose_arrays(results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(keypoint ... x 2, keypoint_score) of an annotation; the score may be the keypoints' third channel."""
    kp = np.asarray(results["keypoint"])
    score = results.get("keypoint_score")
    if score is None:
        if kp.shape[-1] != 3:
            raise DataError(f"{_where(results)}: no keypoint_score and keypoint has no score channel")
        return kp[..., :2], kp[..., 2]
    return kp[..., :2], np.asarray(score)


class RankPersons(Transform):
    """Up to ``num_persons`` people, highest total score over the clip first (NaN counts as 0);
    kept when the annotation already has ``rank`` (a dataset ranks once, at build time).

    Reads: rank, keypoint, keypoint_score. Writes: rank.
    """

    reads = ("rank", "keypoint", "keypoint_score")
    writes = ("rank",)

    def __init__(self, *, num_persons: int = 2) -> None:
        self.num_persons = int(num_persons)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "rank" in results or "keypoint" not in results:
            return results
        _, score = pose_arrays(results)
        score = score.astype(np.float32)
        finite = np.isfinite(score)
        if not finite.all():  # what np.nan_to_num(nan=0, posinf=0, neginf=0) gives, at a fraction of its cost
            score[~finite] = 0.0
        results["rank"] = tf.rank_persons(score, self.num_persons)
        return results


class GatherPose(Transform):
    """The ranked people at the sampled frames (one gather), non-finite joints set missing, scores
    clipped to [0, 1], coordinates divided by the frame size (normalized frame coordinates).
    Does nothing without keypoints (RGB-only annotations).

    Reads: keypoint, keypoint_score, rank, frame_inds, img_shape, original_shape.
    Writes: keypoint, keypoint_score.
    """

    reads = ("keypoint", "keypoint_score", "rank", "frame_inds", "img_shape", "original_shape")
    writes = ("keypoint", "keypoint_score")

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "keypoint" not in results:
            return results
        wh = image_wh(results)
        if wh is None:
            raise DataError(f"{_where(results)}: needs 'img_shape' (h, w) to normalize the keypoints")
        kp, score = pose_arrays(results)
        sel = np.ix_(results["rank"], results["frame_inds"])
        kp, score = tf.sanitize(kp[sel], score[sel])
        results["keypoint"] = kp / np.asarray(wh, dtype=np.float32)
        results["keypoint_score"] = score
        return results


class CropPose(Transform):
    """Joint coordinates relative to the crop box (``mode`` "frame", the same box as the pixels),
    or centred and scaled per clip around all visible joints (``mode`` "person", pose-only).

    Reads: keypoint, keypoint_score, crop_box, img_shape, original_shape. Writes: keypoint.
    """

    reads = ("keypoint", "keypoint_score", "crop_box", "img_shape", "original_shape")
    writes = ("keypoint",)

    def __init__(self, *, mode: str = "frame") -> None:
        if mode not in ("frame", "person"):
            raise DataError(f"pose_norm must be 'frame' or 'person', got {mode!r}")
        self.mode = mode

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if self.mode == "person":
            results["keypoint"] = tf.person_normalize(results["keypoint"], results["keypoint_score"],
                                                      image_wh(results))
        else:
            results["keypoint"] = tf.crop_pose(results["keypoint"], results["crop_box"])
        return results


class PoseAugment(Transform):
    """Pose-only training augmentation about the centre: rotation in +-``rotate`` degrees, scale
    in 1 +- ``scale``, shift in +-``shift`` (drawn per clip; nothing at test time).

    Reads: keypoint, rng. Writes: keypoint.
    """

    reads = ("keypoint", "rng")
    writes = ("keypoint",)

    def __init__(self, *, rotate: float = 0.0, scale: float = 0.0, shift: float = 0.0) -> None:
        self.rotate, self.scale, self.shift = float(rotate), float(scale), float(shift)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = results.get("rng")
        if rng is not None:
            results["keypoint"] = tf.affine_augment(results["keypoint"], rng, self.rotate, self.scale, self.shift)
        return results


class PackPose(Transform):
    """The pose tensor ``num_persons`` x T x V x (x, y, score) (missing joints and absent people
    all zero) and the per-frame person mask ``num_persons`` x T: a person counts in a frame when
    any of its joints is seen there, so frames where the estimator lost a present person are
    masked in the model's attention and pooling (docs/DESIGN.md, "person mask"); with
    ``num_clips`` N > 1 both get a leading N.

    Reads: keypoint, keypoint_score, clip_len, num_clips. Writes: pose, person_mask.
    """

    reads = ("keypoint", "keypoint_score", "clip_len", "num_clips")
    writes = ("pose", "person_mask")

    def __init__(self, *, num_persons: int = 2) -> None:
        self.num_persons = int(num_persons)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "keypoint" not in results:
            raise DataError(f"{_where(results)}: no 'keypoint' array but the modality needs pose")
        kp, score = results["keypoint"], results["keypoint_score"]
        n_clip, t, p = results["num_clips"], results["clip_len"], self.num_persons
        m, nt, v = score.shape
        out = np.zeros((p, nt, v, 3), dtype=np.float32)
        vis = score > 0
        out[:m, ..., :2] = np.where(vis[..., None], kp, 0.0)
        out[:m, ..., 2] = score
        pose = torch.from_numpy(out)
        mask = torch.zeros(p, n_clip, t, dtype=torch.bool)
        mask[:m] = torch.from_numpy(vis.any(-1)).view(m, n_clip, t)  # seen in the frame
        if n_clip > 1:
            results["pose"] = pose.view(p, n_clip, t, v, 3).transpose(0, 1).contiguous()
            results["person_mask"] = mask.transpose(0, 1).contiguous()
        else:
            results["pose"], results["person_mask"] = pose, mask[:, 0]
        return results
