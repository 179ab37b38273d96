"""Data: pyskl pose pickles, Penn Action, RGB videos/frame folders, the synthetic cross-modal set.

    import deformact.data as dd
    ds = dd.build_dataset(type="pyskl", ann_file="ntu60_hrnet.pkl", split="xsub_val", modality="rgb+pose",
                          frames=16, video_root="videos/", image_size=224, train=False)
    item = ds[0]  # {"pose": M x T x V x 3, "person_mask": M x T, "rgb": 3 x T x H x W, "label": int}

``build_dataset`` takes a config's ``data:`` section plus ``split``/``train``. Keys (defaults):

* both types: ``modality`` ("rgb+pose" | "rgb" | "pose"), ``frames`` (16; synthetic 8), ``image_size``
  (224; synthetic 64), ``num_clips`` (1; test only, training samples one clip), ``num_persons`` (2),
  ``train_split`` / ``test_split`` (used when ``split`` is None).
* pyskl: ``ann_file``, ``video_root`` (``<root>/<frame_dir>.<ext>`` with an extension of
  :data:`deformact.io.VIDEO_EXTS`, or a folder of frames),
  ``label_map`` (text file or list), ``num_classes``, ``layout`` (coco17 | ntu25 | penn13, inferred
  from V), ``skip_bad`` (False), ``compact`` (True: crop around the people, pyskl's PoseCompact),
  ``compact_padding`` (0.25), ``crop_scale`` ([0.56, 1]), ``crop_ratio`` ([3/4, 4/3]), ``flip``
  (0.5), ``pose_norm`` ("frame" | "person", pose-only), ``pose_rotate`` (degrees), ``pose_scale``,
  ``pose_shift`` (pose-only training augmentation, 0 = off), ``decode_threads`` (1), ``feature``
  ("joint" | "bone" | "joint_motion" | "bone_motion", the pose stream's input; also synthetic).
* synthetic: ``seed`` (0), ``num_classes`` (12 = 4 motions x 3 colours), ``num_train`` (1000),
  ``num_test`` (400), ``regenerate_every`` (0 = never; K: a fresh training set every K epochs);
  see :mod:`deformact.data.synthetic` for the design and Bayes ceilings;
  ``variant`` ("demo" | "objects": the held-object set of :mod:`deformact.data.synthetic_objects`,
  16 frames at 112², 12 classes, items with ``object_track``).

Unknown keys raise :class:`DataError`. Clips are made by the transforms of
:mod:`deformact.data.pipeline`; :func:`build_test_pipeline` gives the test-time pipeline of a
``data:`` section for single annotations (predict, explain). Files are read by
:mod:`deformact.io`. Submodules load lazily.
"""

from __future__ import annotations

import importlib
from typing import Any

from deformact.errors import DataError, VideoError

from .constants import RGB_MEAN, RGB_STD

_LAZY = {
    "SKELETONS": "skeletons", "Skeleton": "skeletons", "get_skeleton": "skeletons", "COCO17": "skeletons",
    "load_label_map": "labels", "segment_indices": "sampling",
    "PysklDataset": "dataset", "SyntheticDataset": "synthetic",
    "convert_penn_action": "penn_action", "PENN_ACTIONS": "penn_action", "add_holdout_split": "splits",
    "Compose": "pipeline", "build_test_pipeline": "pipeline", "build_train_pipeline": "pipeline",
    "clip_pipeline": "pipeline", "parse_modality": "pipeline",
    "SKIPPED_LABEL": "checks", "check_media": "checks", "ClipStore": "store",
}
# kept here for callers of the old paths; they live in deformact.io
_IO = {"load_pyskl": "pyskl", "save_pyskl": "pyskl", "SafeUnpickler": "pyskl",
       "read_clip": "video_read", "find_media": "video", "count_frames": "video",
       "read_frames": "video_read:read_clip"}

# data-section keys accepted by each dataset type (besides type/split/train/train_split/test_split)
PYSKL_KEYS = ("ann_file", "video_root", "modality", "frames", "image_size", "num_clips", "num_persons",
              "label_map", "num_classes", "layout", "skip_bad", "compact", "compact_padding", "crop_scale",
              "crop_ratio", "flip", "pose_norm", "pose_rotate", "pose_scale", "pose_shift", "decode_threads",
              "feature")
SYNTHETIC_KEYS = ("modality", "frames", "image_size", "num_clips", "num_persons", "num_classes", "seed",
                  "num_train", "num_test", "layout", "skip_bad", "flip", "feature", "variant",
                  "regenerate_every")

__all__ = ["DataError", "VideoError", "RGB_MEAN", "RGB_STD", "build_dataset", "PYSKL_KEYS", "SYNTHETIC_KEYS",
           *_LAZY, *_IO]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _IO:
        module, _, attr = _IO[name].partition(":")
        return getattr(importlib.import_module(f"deformact.io.{module}"), attr or name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_dataset(type: str = "pyskl", split: str | None = None, train: bool = False,
                  train_split: str | None = None, test_split: str | None = None, **kwargs: Any):
    """A dataset from a config ``data:`` section. ``split`` defaults to ``train_split`` when
    ``train`` else ``test_split``; ``num_clips`` only applies when ``train`` is False (training
    samples one clip). Unknown keys raise :class:`DataError`."""
    if split is None:
        split = train_split if train else test_split
    if type == "pyskl":
        _check_keys(kwargs, PYSKL_KEYS, type)
        if "ann_file" not in kwargs:
            raise DataError("data.ann_file is required for type 'pyskl'")
        from .dataset import PysklDataset

        return PysklDataset(split=split, train=train, **kwargs)
    if type == "synthetic":
        _check_keys(kwargs, SYNTHETIC_KEYS, type)
        if kwargs.pop("flip", 0):
            raise DataError("the synthetic classes are chiral (left vs right limb): flip must be 0")
        if kwargs.pop("layout", None) not in (None, "coco17"):
            raise DataError("the synthetic set uses the coco17 layout")
        kwargs.pop("skip_bad", None)
        variant = kwargs.pop("variant", "demo")
        if variant == "objects":  # the held-object benchmark (deformact.data.synthetic_objects)
            from .synthetic_objects import SyntheticObjectsDataset

            return SyntheticObjectsDataset(split=split or ("train" if train else "test"), train=train, **kwargs)
        if variant != "demo":
            raise DataError(f"data.variant must be 'demo' or 'objects' for type 'synthetic', got {variant!r}")
        from .synthetic import SyntheticDataset

        return SyntheticDataset(split=split or ("train" if train else "test"), train=train, **kwargs)
    raise DataError(f"unknown data type {type!r}; use 'pyskl' or 'synthetic'")


def _check_keys(kwargs: dict, known: tuple[str, ...], type: str) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise DataError(f"unknown data key(s) for type {type!r}: {', '.join(unknown)}; known: "
                        + ", ".join(("type", "train_split", "test_split") + known))
