"""Transforms shared by both modalities: frame sampling, the flip draw, the crop plan, the pose
flip and the final packing.

The crop box is planned once per clip in normalized frame coordinates and used for the pixels
and the joints alike, and the flip mirrors both (swapping left/right joints), so the two
modalities stay aligned (the paper fuses them token by token, Sec. 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deformact.errors import DataError

from .. import transforms as tf
from ..sampling import segment_indices
from ..skeletons import get_skeleton
from .base import Transform, image_wh


class SampleFrames(Transform):
    """``num_clips`` x ``clip_len`` frame indices, one per equal segment (random point per segment
    when training). The frame count is the keypoints' T, else ``total_frames``, else counted in
    the video (``frame_count``: the count used, None when it came from the video itself).

    Reads: keypoint, total_frames, filename, rng. Writes: frame_inds, clip_len, num_clips, frame_count.
    """

    reads = ("keypoint", "total_frames", "filename", "rng")
    writes = ("frame_inds", "clip_len", "num_clips", "frame_count")

    def __init__(self, *, clip_len: int, num_clips: int = 1) -> None:
        self.clip_len, self.num_clips = int(clip_len), int(num_clips)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if "keypoint" in results:
            n = int(np.shape(results["keypoint"])[1])
        elif results.get("total_frames"):
            n = int(results["total_frames"])
        elif results.get("filename") is not None:
            from deformact.io.video import count_frames

            n = count_frames(results["filename"])
            results["frame_count"] = None  # nothing to check the video against
        else:
            raise DataError(f"{results.get('frame_dir', 'annotation')}: no keypoint, total_frames or filename "
                            "to count the frames of")
        inds = segment_indices(n, self.clip_len, self.num_clips, results.get("rng"))
        results.setdefault("frame_count", n)
        results.update(frame_inds=inds.reshape(-1), clip_len=self.clip_len, num_clips=self.num_clips)
        return results


class RandomFlip(Transform):
    """Draws whether this clip is mirrored (probability ``prob``, training only); :class:`FlipPose`
    and :class:`PackRGB` apply it after cropping. Drawn right after the frames, before the crop.

    Reads: rng. Writes: flip.
    """

    reads = ("rng",)
    writes = ("flip",)

    def __init__(self, *, prob: float = 0.5) -> None:
        self.prob = float(prob)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        rng = results.get("rng")
        results["flip"] = bool(rng is not None and self.prob > 0 and rng.random() < self.prob)
        return results


class PlanCrop(Transform):
    """The crop box, normalized frame coordinates (x0, y0, x1, y1): with ``compact`` a square
    around all visible joints enlarged by ``padding`` (pyskl's PoseCompact), else the whole
    frame; then a random resized crop inside it (training) or its centred square (test). The
    frame size is ``img_shape``, else probed from ``filename``.

    Reads: keypoint, keypoint_score, img_shape, original_shape, filename, rng. Writes: crop_box.
    """

    reads = ("keypoint", "keypoint_score", "img_shape", "original_shape", "filename", "rng")
    writes = ("crop_box",)

    def __init__(self, *, compact: bool = True, padding: float = 0.25, scale: Sequence[float] = (0.56, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        self.compact, self.padding = bool(compact), float(padding)
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        wh = image_wh(results)
        if wh is None:
            if results.get("filename") is None:
                raise DataError(f"{results.get('frame_dir', 'annotation')}: no img_shape and no video to "
                                "take the frame size from")
            from deformact.io.video import probe

            info = probe(results["filename"])
            wh = (info.width, info.height)
        kp = results.get("keypoint")
        region = (tf.compact_box(kp, results["keypoint_score"], wh, self.padding)
                  if self.compact and kp is not None else (0.0, 0.0, 1.0, 1.0))
        rng = results.get("rng")
        results["crop_box"] = (tf.random_resized_box(region, wh, rng, self.scale, self.ratio)
                               if rng is not None else tf.center_box(region, wh))
        return results


class FlipPose(Transform):
    """Mirrors the joints when ``flip`` is set: x -> 1 - x with left/right joints swapped (the
    ``layout``'s flip pairs; inferred from V when None). The pixels are mirrored by
    :class:`PackRGB`, in the same pass that converts them to float (a separate copy would cost
    more than the conversion).

    Reads: flip, keypoint, keypoint_score. Writes: keypoint, keypoint_score.
    """

    reads = ("flip", "keypoint", "keypoint_score")
    writes = ("keypoint", "keypoint_score")

    def __init__(self, *, layout: str | None = None) -> None:
        self.layout = layout
        self._flip_index: dict[int, np.ndarray] = {}

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if not results.get("flip") or "keypoint" not in results:
            return results
        kp = results["keypoint"]
        v = kp.shape[-2]
        if v not in self._flip_index:
            self._flip_index[v] = get_skeleton(self.layout, v).flip_index
        results["keypoint"], results["keypoint_score"] = tf.flip_pose(kp, results["keypoint_score"],
                                                                       self._flip_index[v])
        return results


class Collect(Transform):
    """The model inputs: a new dict with the ``keys`` that are present (what a dataset item holds).

    Reads: rgb, pose, person_mask, label. Writes: nothing (returns the new dict).
    """

    reads = ("rgb", "pose", "person_mask", "label")
    writes = ()

    def __init__(self, *, keys: Sequence[str] = ("rgb", "pose", "person_mask", "label")) -> None:
        self.keys = tuple(keys)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        return {k: results[k] for k in self.keys if k in results}
