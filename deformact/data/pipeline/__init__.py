"""Composable clip pipeline, in the manner of pyskl's ``Compose([...])``: small transforms that
each read and write named keys of one ``results`` dict.

    import deformact.data as dd
    pipeline = dd.build_test_pipeline(model.run_config["data"])
    item = pipeline({**ann, "filename": "video.mp4"})  # == PysklDataset(..., train=False)[i]

``results`` keys, in the order the default pipeline (:func:`clip_pipeline`) meets them:

* from the annotation (pyskl): ``frame_dir``, ``label``, ``total_frames``, ``img_shape`` (h, w)
  (or ``original_shape``), ``keypoint`` M x T x V x 2 pixels, ``keypoint_score`` M x T x V;
  ``filename`` (the video or frame folder, when the modality has RGB); ``rank`` (optional:
  people already ranked); ``rng`` (a ``numpy.random.Generator`` when training, else None/absent)
* :class:`SampleFrames` -> ``frame_inds`` (N*T), ``clip_len`` (T), ``num_clips`` (N)
* :class:`RandomFlip` -> ``flip``;  :class:`RankPersons` -> ``rank``
* :class:`GatherPose` -> ``keypoint`` m x N*T x V x 2 in normalized frame coordinates, ``keypoint_score``
* :class:`PlanCrop` -> ``crop_box`` (x0, y0, x1, y1), normalized frame coordinates
* :class:`DecodeRGB` -> ``imgs`` (N*T x h x w x 3 uint8), ``img_pbox``, snapped ``crop_box``;
  :class:`CropRGB` -> ``imgs`` (N*T x S x S x 3)
* :class:`CropPose` -> ``keypoint`` relative to the crop;  :class:`FlipPose`;  :class:`PoseAugment`
* :class:`PackRGB` -> ``rgb`` (mirrored when ``flip``);  :class:`PackPose` -> ``pose``, ``person_mask`` (per frame)
* :class:`Collect` -> the item: ``{"rgb", "pose", "person_mask", "label"}`` (those present)

The random draws come from ``results["rng"]`` in the order of the transforms (frames, flip, crop,
pose augmentation), so a seeded generator gives the same clip every time.
"""

from .base import Compose, Transform, image_wh
from .build import CLIP_KEYS, build_test_pipeline, build_train_pipeline, clip_pipeline, parse_modality
from .clip import Collect, FlipPose, PlanCrop, RandomFlip, SampleFrames
from .pose import CropPose, GatherPose, PackPose, PoseAugment, RankPersons, pose_arrays
from .rgb import CropRGB, DecodeRGB, PackRGB

TRANSFORMS = (SampleFrames, RandomFlip, RankPersons, GatherPose, PlanCrop, DecodeRGB, CropRGB, CropPose, FlipPose,
              PoseAugment, PackRGB, PackPose, Collect)

__all__ = [
    "CLIP_KEYS", "Collect", "Compose", "CropPose", "CropRGB", "DecodeRGB", "FlipPose", "GatherPose", "PackPose",
    "PackRGB", "PlanCrop", "PoseAugment", "RandomFlip", "RankPersons", "SampleFrames", "TRANSFORMS", "Transform",
    "build_test_pipeline", "build_train_pipeline", "clip_pipeline", "image_wh", "parse_modality", "pose_arrays",
]  # fmt: skip
