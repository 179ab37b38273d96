"""pyskl-format dataset: the annotations of a pyskl pickle (checked at build time) run through the
clip pipeline of :mod:`deformact.data.pipeline`; RGB from videos/frame folders under
``video_root``, the same frame indices and crop for both modalities."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deformact.errors import DataError
from deformact.io.pyskl import load_pyskl
from deformact.io.video import count_frames, find_media

from .checks import SKIPPED_LABEL, as_label, check_contiguous_labels, frames_allowed
from .labels import load_label_map
from .pipeline import Compose, RankPersons, clip_pipeline, parse_modality
from .sampling import segment_indices
from .skeletons import Skeleton, get_skeleton
from .store import ClipStore, release_free_memory

__all__ = ["PysklDataset", "parse_modality"]


class _SkipCounter:
    """Bad samples seen, summed over processes: one shared slot per DataLoader worker (no lock,
    works with fork and spawn); a private list after a plain pickle/deepcopy."""

    SLOTS = 64

    def __init__(self) -> None:
        self.slots = multiprocessing.RawArray("q", self.SLOTS + 1)

    def add(self) -> None:
        info = torch.utils.data.get_worker_info()
        self.slots[0 if info is None else 1 + info.id % self.SLOTS] += 1

    @property
    def value(self) -> int:
        return int(sum(self.slots))

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is None:
            return {"slots": list(self.slots)}
        return {"slots": self.slots}


class PysklDataset(torch.utils.data.Dataset):
    """Clips of a pyskl annotation file (see :mod:`deformact.io.pyskl`), optionally with RGB.

    Items: ``{"pose": M x T x V x 3, "person_mask": M x T, "rgb": 3 x T x H x W, "label": int}``
    (absent modalities omitted; with ``num_clips = N > 1`` at test time every tensor gets a leading
    N). Pose x, y are in [0, 1] relative to the (cropped) frame, score in [0, 1]; a missing joint
    is (0, 0, 0). Every check that can fail on the annotation file runs here, at build time;
    :attr:`anns` holds the checked annotations (a :class:`deformact.data.store.ClipStore`:
    contiguous arrays, ``anns[i]`` a dict of pyskl keys with people ranked once in ``rank``) and
    :attr:`pipeline` turns one into an item (:func:`deformact.data.build_test_pipeline` builds
    the same test-time pipeline from a config's ``data:`` section).

    Bad data (docs/FAILURES.md, "Data"): labels must run 0..K-1 or be declared (``num_classes``,
    ``label_map``, the file's ``class_names``); a clip with nobody in it (no frame with a joint
    whose position is finite and score > 0) is an error naming it, or with ``skip_bad`` left out
    and counted in :attr:`left_out`; a split with nobody in any clip is an error. A clip that
    fails to load (unreadable video, or one that contradicts its annotation,
    :func:`deformact.data.checks.check_media`) is an error, or with ``skip_bad``: when training,
    replaced by the next good clip; otherwise returned as a placeholder item whose ``label`` is
    :data:`deformact.data.checks.SKIPPED_LABEL` (-1), which evaluation must drop and count.
    Both kinds are counted in :attr:`num_skipped` (load time) and :attr:`num_left_out` (build time).
    """

    def __init__(self, ann_file: str | os.PathLike, split: str | None = None, modality: str = "rgb+pose",
                 frames: int = 16, image_size: int = 224, train: bool = False, num_clips: int = 1,
                 num_persons: int = 2, video_root: str | os.PathLike | None = None,
                 label_map: str | os.PathLike | Sequence[str] | None = None, num_classes: int | None = None,
                 layout: str | None = None, skip_bad: bool = False, compact: bool = True,
                 compact_padding: float = 0.25, crop_scale: Sequence[float] = (0.56, 1.0),
                 crop_ratio: Sequence[float] = (3 / 4, 4 / 3), flip: float = 0.5, pose_norm: str = "frame",
                 pose_rotate: float = 0.0, pose_scale: float = 0.0, pose_shift: float = 0.0,
                 decode_threads: int = 1, feature: str = "joint") -> None:
        self.ann_file = Path(ann_file)
        self.use_rgb, self.use_pose = parse_modality(modality)
        self.modality = modality
        self.frames, self.image_size, self.train = int(frames), int(image_size), bool(train)
        self.num_clips = 1 if train else int(num_clips)
        self.num_persons, self.skip_bad = int(num_persons), bool(skip_bad)
        self._rank = RankPersons(num_persons=self.num_persons)
        # the options are checked here, before the file is read
        self.pipeline: Compose = clip_pipeline(
            train=self.train, modality=modality, frames=frames, image_size=image_size, num_clips=num_clips,
            num_persons=num_persons, layout=layout, compact=compact, compact_padding=compact_padding,
            crop_scale=crop_scale, crop_ratio=crop_ratio, flip=flip, pose_norm=pose_norm, pose_rotate=pose_rotate,
            pose_scale=pose_scale, pose_shift=pose_shift, decode_threads=decode_threads, feature=feature)

        data = load_pyskl(self.ann_file)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), (list, tuple)):
            raise DataError(f"{self.ann_file}: not a pyskl file (expected a dict with an 'annotations' list)")
        anns = list(data["annotations"])
        if not anns:
            raise DataError(f"{self.ann_file}: the annotation list is empty")
        self.split = split
        anns = self._select_split(data, anns, split)
        self.class_names = self._class_names(data, label_map, num_classes)
        self.num_classes = len(self.class_names)
        self.skeleton: Skeleton | None = get_skeleton(layout) if layout else None
        self.left_out: list[str] = []
        checked = [self._check_ann(a, i) for i, a in enumerate(anns)]
        del data, anns  # only the packed copy below is kept
        self.layout = self.skeleton.name if self.skeleton else None
        self.anns = self._drop_unusable(ClipStore(checked), split)
        del checked
        release_free_memory()

        self.video_root = Path(video_root) if video_root is not None else None
        if self.use_rgb:
            if self.video_root is None:
                raise DataError(f"modality {modality!r} needs video_root (a folder of videos or frame folders)")
            if not self.video_root.is_dir():
                raise DataError(f"{self.video_root}: video_root is not a folder")
        self._skipped = _SkipCounter()
        self.bad_files: list[str] = []
        self._rng: np.random.Generator | None = None
        self._rng_seed: int | None = None
        self._media: dict[str, Path] = {}

    # ----------------------------------------------------------------------------- build-time checks
    def _by_frame_dir(self, anns: list) -> dict[str, dict]:
        """``frame_dir`` -> annotation; two annotations with one name are an error (a split,
        the scores and the video lookup all go by the name)."""
        by_dir: dict[str, dict] = {}
        for i, a in enumerate(anns):
            if not isinstance(a, dict) or "frame_dir" not in a:
                raise DataError(f"{self.ann_file}: annotation {i} has no 'frame_dir': {str(a)[:80]}")
            name = str(a["frame_dir"])
            if name in by_dir:
                first = next(j for j, b in enumerate(anns) if str(b["frame_dir"]) == name)
                raise DataError(f"{self.ann_file}: annotations {first} and {i} share frame_dir {name!r}; "
                                "every clip needs its own name")
            by_dir[name] = a
        return by_dir

    def _select_split(self, data: dict, anns: list, split: str | None) -> list:
        by_dir = self._by_frame_dir(anns)  # checked with or without a split
        if split is None:
            return anns
        splits = data.get("split")
        if not isinstance(splits, dict):
            raise DataError(f"{self.ann_file}: has no 'split' dict, cannot select split {split!r}")
        if split not in splits:
            raise DataError(f"{self.ann_file}: split {split!r} not found; available: "
                            + ", ".join(map(repr, splits)))
        names = list(splits[split])
        if not names:
            raise DataError(f"{self.ann_file}: split {split!r} is empty")
        twice = {n for n, c in Counter(map(str, names)).items() if c > 1}
        if twice:
            raise DataError(f"{self.ann_file}: split {split!r} lists {len(twice)} clip(s) more than once, "
                            f"e.g. {sorted(twice)[:3]}; each clip would be counted twice")
        names = [str(n) for n in names]
        missing = [n for n in names if n not in by_dir]
        if missing:
            raise DataError(f"{self.ann_file}: split {split!r} lists {len(missing)} clip(s) with no annotation, "
                            f"e.g. {missing[:3]}")
        return [by_dir[n] for n in names]

    def _drop_unusable(self, store: ClipStore, split: str | None) -> ClipStore:
        if not self.use_pose:
            return store
        store = self._drop_far_off(store, split)
        usable = store.usable()
        if usable.all():
            return store
        where = f"{self.ann_file}" + (f", split {split!r}" if split else "")
        if not usable.any():
            raise DataError(f"{where}: no clip shows anybody (every joint is missing, not finite or has "
                            f"score 0 in all {len(store)} clips); nothing to learn from or test on")
        bad = np.flatnonzero(~usable)
        first = f"annotation {bad[0]} ({store.frame_dir[bad[0]]})"
        if not self.skip_bad:
            raise DataError(f"{where}: {first} shows nobody (no frame has a joint with a finite position "
                            f"and score > 0; {len(bad)} such clip(s)); fix the file or set data.skip_bad: true "
                            "to leave them out (counted)")
        self.left_out += [str(store.frame_dir[i]) for i in bad]
        warnings.warn(f"{where}: left out {len(bad)} clip(s) that show nobody, e.g. {first}", stacklevel=3)
        return store.subset(usable)

    def _drop_far_off(self, store: ClipStore, split: str | None) -> ClipStore:
        """Clips with a scored joint more than a frame size outside their ``img_shape``: keypoints
        of another frame or garbage (docs/FAILURES.md, "Data"); an error, or left out with ``skip_bad``."""
        far = store.far_off()
        bad = np.flatnonzero(far)
        if not len(bad):
            return store
        where = f"{self.ann_file}" + (f", split {split!r}" if split else "")
        h, w = store.img_shape[bad[0]]
        first = (f"annotation {bad[0]} ({store.frame_dir[bad[0]]}): {far[bad[0]]} joint(s) lie more than a frame "
                 f"size outside the {w}x{h} frame (img_shape); the keypoints are not in this frame's pixels")
        if not self.skip_bad:
            raise DataError(f"{where}: {first}; {len(bad)} such clip(s); fix the file or set data.skip_bad: true "
                            "to leave them out (counted)")
        if len(bad) == len(store):
            raise DataError(f"{where}: every clip of the split is bad, e.g. {first}")
        self.left_out += [str(store.frame_dir[i]) for i in bad]
        warnings.warn(f"left out {len(bad)} clip(s) with joints far off the frame of {where}, e.g. {first}",
                      stacklevel=4)
        return store.subset(far == 0)

    def _class_names(self, data: dict, label_map, num_classes: int | None) -> list[str]:
        if label_map is not None:
            names = load_label_map(label_map) if isinstance(label_map, (str, os.PathLike)) else list(label_map)
            if num_classes is not None and int(num_classes) != len(names):
                raise DataError(f"num_classes={num_classes} but the label map has {len(names)} names")
            return [str(n) for n in names]
        stored = data.get("class_names")
        if num_classes is None and isinstance(stored, (list, tuple)) and stored:
            return [str(n) for n in stored]
        if num_classes is None:  # nothing declared: the labels must run 0..K-1
            anns = data["annotations"]
            try:
                labels = [a["label"] for a in anns]
            except (KeyError, TypeError):
                raise DataError(f"{self.ann_file}: every annotation needs an integer 'label'") from None
            names = [a.get("frame_dir", "?") for a in anns]
            num_classes = max(check_contiguous_labels(labels, names, str(self.ann_file)), 1)
        if isinstance(stored, (list, tuple)) and len(stored) == int(num_classes):
            return [str(n) for n in stored]
        return [str(i) for i in range(int(num_classes))]

    def _check_ann(self, a: Any, i: int) -> dict:
        where = f"{self.ann_file}: annotation {i} ({a.get('frame_dir', '?') if isinstance(a, dict) else '?'})"
        if not isinstance(a, dict) or "frame_dir" not in a:
            raise DataError(f"{where}: not a dict with 'frame_dir'")
        if "label" not in a:
            raise DataError(f"{where}: no 'label'")
        try:
            label = as_label(a["label"])
        except ValueError as e:
            raise DataError(f"{where}: {e}") from None
        if not 0 <= label < self.num_classes:
            raise DataError(f"{where}: label {label} out of range [0, {self.num_classes})")
        total = a.get("total_frames")
        if total is not None and (isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0):
            raise DataError(f"{where}: total_frames must be a whole number >= 0, got {total!r}")
        out = {"frame_dir": str(a["frame_dir"]), "label": label, "total_frames": total}
        shape = a.get("img_shape", a.get("original_shape"))
        if shape is not None:
            try:
                h, w = (int(s) for s in tuple(shape)[:2])
            except (TypeError, ValueError):
                raise DataError(f"{where}: bad img_shape {shape!r}") from None
            if h <= 0 or w <= 0:
                raise DataError(f"{where}: bad img_shape {shape!r}")
            out["img_shape"] = (h, w)
        kp = a.get("keypoint")
        if kp is None:
            if self.use_pose:
                raise DataError(f"{where}: no 'keypoint' array but modality needs pose")
            return out
        kp = np.asarray(kp)
        if kp.ndim != 4 or kp.shape[-1] not in (2, 3) or not np.issubdtype(kp.dtype, np.number):
            raise DataError(f"{where}: keypoint must be a numeric M x T x V x 2 (or x 3) array, got "
                            f"{kp.dtype} {kp.shape}")
        score = a.get("keypoint_score")
        if score is None:
            if kp.shape[-1] != 3:
                raise DataError(f"{where}: no keypoint_score and keypoint has no score channel")
            kp, score = kp[..., :2], kp[..., 2]
        kp, score = kp[..., :2], np.asarray(score)
        if score.shape != kp.shape[:3]:
            raise DataError(f"{where}: keypoint_score shape {score.shape} != keypoint shape {kp.shape[:3]}")
        v = kp.shape[2]
        try:
            if self.skeleton is None:
                self.skeleton = get_skeleton(None, v)
            get_skeleton(self.skeleton.name, v)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        if kp.shape[1] < 1:
            raise DataError(f"{where}: keypoint has no frames")
        if "img_shape" not in out:
            raise DataError(f"{where}: needs 'img_shape' (h, w) to normalize the keypoints")
        if total:
            lo, hi = frames_allowed(int(total))
            if not lo <= kp.shape[1] <= hi:
                raise DataError(f"{where}: keypoint has {kp.shape[1]} frames but total_frames says {total} "
                                f"(allowed: {lo}..{hi}); the poses do not belong to this clip's frames")
        out["keypoint"] = kp
        out["keypoint_score"] = score
        return self._rank(out)  # people ranked once, here, not per item

    # ------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.anns)

    @property
    def num_skipped(self) -> int:
        """Bad samples met while loading so far (``skip_bad=True``; replaced when training, else
        returned as placeholders), summed over DataLoader workers."""
        return int(self._skipped.value)

    @property
    def num_left_out(self) -> int:
        """Clips of the split left out at build time (``skip_bad=True``): they show nobody."""
        return len(self.left_out)

    def video_names(self) -> list[str]:
        """``frame_dir`` of every item, in dataset order."""
        return [str(n) for n in self.anns.frame_dir]

    def placeholder(self) -> dict[str, Any]:
        """The item standing for a clip left out at test time: the shapes of a real item, zeros,
        ``label`` = :data:`SKIPPED_LABEL`; evaluation drops and counts it."""
        t, p, n = self.frames, self.num_persons, self.num_clips
        lead = (n,) if n > 1 else ()
        item: dict[str, Any] = {}
        if self.use_rgb:
            item["rgb"] = torch.zeros(*lead, 3, t, self.image_size, self.image_size)
        if self.use_pose:
            v = self.skeleton.num_joints if self.skeleton else 17
            item["pose"] = torch.zeros(*lead, p, t, v, 3)
            item["person_mask"] = torch.zeros(*lead, p, t, dtype=torch.bool)
        item["label"] = SKIPPED_LABEL
        return item

    def _bad(self, e: DataError) -> None:
        self._skipped.add()
        msg = str(e)
        if msg not in self.bad_files:
            self.bad_files.append(msg)
            warnings.warn(f"skipping bad sample: {msg}", stacklevel=3)

    def _get_rng(self) -> np.random.Generator:
        # torch seeds each DataLoader worker (and re-seeds every epoch): follow it, so runs repeat
        seed = torch.initial_seed()
        if self._rng is None or self._rng_seed != seed:
            self._rng, self._rng_seed = np.random.default_rng(seed), seed
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.skip_bad:
            return self.load(index)
        if not self.train:  # never score another clip in its place: left out, counted
            try:
                return self.load(index)
            except DataError as e:
                self._bad(e)
                return self.placeholder()
        tries = min(len(self), 20)
        for k in range(tries):
            try:
                return self.load((index + k) % len(self))
            except DataError as e:
                self._bad(e)
        raise DataError(f"{self.ann_file}: {tries} bad sample(s) in a row from index {index}; giving up")

    def frame_indices(self, index: int) -> np.ndarray:
        """The (num_clips x frames) indices ``load`` would use at test time (deterministic)."""
        return segment_indices(self._num_frames(self.anns[index]), self.frames, self.num_clips)

    def _num_frames(self, ann: dict) -> int:
        if "keypoint" in ann:
            return int(ann["keypoint"].shape[1])
        if ann.get("total_frames"):
            return int(ann["total_frames"])
        return count_frames(self._media_path(ann))

    def _media_path(self, ann: dict) -> Path:
        fd = ann["frame_dir"]
        if fd not in self._media:
            self._media[fd] = find_media(self.video_root, fd)
        return self._media[fd]

    def load(self, index: int) -> dict[str, Any]:
        """Load one sample (no bad-sample replacement): the annotation through :attr:`pipeline`."""
        ann = self.anns[index]
        results = {**ann, "rng": self._get_rng() if self.train else None}
        if self.use_rgb:
            results["filename"] = self._media_path(ann)
        return self.pipeline(results)
