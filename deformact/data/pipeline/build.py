"""The clip pipelines of a config's ``data:`` section: the one :class:`PysklDataset` runs and the
test-time one that turns a single annotation (e.g. freshly extracted poses) into model inputs."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from deformact.errors import DataError

from .base import Compose, Transform
from .clip import Collect, FlipPose, PlanCrop, RandomFlip, SampleFrames
from .feature import PoseFeature, check_feature
from .pose import CropPose, GatherPose, PackPose, PoseAugment, RankPersons
from .rgb import CropRGB, DecodeRGB, PackRGB


def parse_modality(modality: str) -> tuple[bool, bool]:
    """'rgb+pose' | 'rgb' | 'pose' -> (use_rgb, use_pose)."""
    parts = {p.strip() for p in str(modality).lower().split("+")}
    if not parts or not parts <= {"rgb", "pose"}:
        raise DataError(f"modality must be 'rgb+pose', 'rgb' or 'pose', got {modality!r}")
    return "rgb" in parts, "pose" in parts


def clip_pipeline(*, train: bool = False, modality: str = "rgb+pose", frames: int = 16, image_size: int = 224,
                  num_clips: int = 1, num_persons: int = 2, layout: str | None = None, compact: bool = True,
                  compact_padding: float = 0.25, crop_scale: Sequence[float] = (0.56, 1.0),
                  crop_ratio: Sequence[float] = (3 / 4, 4 / 3), flip: float = 0.5, pose_norm: str = "frame",
                  pose_rotate: float = 0.0, pose_scale: float = 0.0, pose_shift: float = 0.0,
                  decode_threads: int = 1, feature: str = "joint") -> Compose:
    """The clip pipeline of the pyskl data options (see :mod:`deformact.data`; the same defaults
    as :class:`deformact.data.PysklDataset`). At test time (``train`` False) there is no flip or
    pose augmentation; training samples one clip. Bad options raise :class:`DataError`.

    Steps: sample frames, draw the flip, rank and gather people, plan the crop, decode and crop
    RGB, normalize and flip the pose, augment the pose, pack (mirroring the pixels), turn joints
    into the chosen ``feature`` (joint | bone | joint_motion | bone_motion), collect.
    """
    use_rgb, use_pose = parse_modality(modality)
    num_clips = 1 if train else int(num_clips)
    flip = float(flip) if train else 0.0
    aug = (float(pose_rotate), float(pose_scale), float(pose_shift)) if train else (0.0, 0.0, 0.0)
    crop_scale, crop_ratio = tuple(crop_scale), tuple(crop_ratio)
    if int(frames) < 1 or int(image_size) < 8 or num_clips < 1 or int(num_persons) < 1:
        raise DataError("frames, num_clips and num_persons must be >= 1 and image_size >= 8")
    if pose_norm not in ("frame", "person"):
        raise DataError(f"pose_norm must be 'frame' or 'person', got {pose_norm!r}")
    if use_rgb and (pose_norm != "frame" or any(aug)):
        raise DataError("pose_norm='person' and pose_rotate/scale/shift are pose-only options "
                        "(they would misalign the joints with the pixels)")
    if not (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise DataError(f"crop_scale must be [min, max] within (0, 1], got {list(crop_scale)}")
    if not (len(crop_ratio) == 2 and 0 < crop_ratio[0] <= crop_ratio[1]):
        raise DataError(f"crop_ratio must be [min, max] > 0, got {list(crop_ratio)}")

    steps: list[Transform] = [SampleFrames(clip_len=int(frames), num_clips=num_clips), RandomFlip(prob=flip),
                              RankPersons(num_persons=int(num_persons)), GatherPose()]
    if use_rgb or pose_norm == "frame":
        steps.append(PlanCrop(compact=compact, padding=compact_padding, scale=crop_scale, ratio=crop_ratio))
    if use_rgb:
        steps += [DecodeRGB(image_size=int(image_size), threads=int(decode_threads)),
                  CropRGB(image_size=int(image_size))]
    if use_pose:
        steps += [CropPose(mode=pose_norm), FlipPose(layout=layout)]
    if use_pose and any(aug):
        steps.append(PoseAugment(rotate=aug[0], scale=aug[1], shift=aug[2]))
    if use_rgb:
        steps.append(PackRGB())
    if use_pose:
        steps.append(PackPose(num_persons=int(num_persons)))
        if check_feature(feature) != "joint":
            steps.append(PoseFeature(feature=feature, layout=layout))
    steps.append(Collect())
    return Compose(steps)


CLIP_KEYS = tuple(p for p in inspect.signature(clip_pipeline).parameters if p != "train")


def _options(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(data_cfg, Mapping):
        raise DataError(f"the data section must be a mapping, got {type(data_cfg).__name__}")
    return {k: v for k, v in data_cfg.items() if k in CLIP_KEYS and v is not None}


def build_test_pipeline(data_cfg: Mapping[str, Any], *, num_clips: int | None = None) -> Compose:
    """The test-time pipeline of a run config's ``data:`` section (e.g. ``run_config["data"]`` of
    a checkpoint; keys as :data:`deformact.data.PYSKL_KEYS`, others such as ``type``, ``ann_file``
    or the splits ignored). ``pipeline(ann)`` on one pyskl annotation (``keypoint`` M x T x V x 2,
    ``keypoint_score``, ``img_shape``, ``total_frames``, ``filename`` = the video to decode when
    the modality has RGB; ``label`` optional) returns exactly the item
    ``PysklDataset(..., train=False)`` gives for it, in memory. ``num_clips`` overrides the config's.
    """
    opts = _options(data_cfg)
    if num_clips is not None:
        opts["num_clips"] = int(num_clips)
    return clip_pipeline(train=False, **opts)


def build_train_pipeline(data_cfg: Mapping[str, Any]) -> Compose:
    """The training pipeline of a ``data:`` section (one clip, flip and augmentation drawn from
    ``results["rng"]``)."""
    return clip_pipeline(train=True, **_options(data_cfg))
