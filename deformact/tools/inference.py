"""Run a checkpoint on one raw video: poses -> clips -> class probabilities (and maps).

Shared by ``deformact predict`` and ``deformact explain``. Clips come from the checkpoint's
test-time pipeline (:func:`deformact.data.build_test_pipeline`: the same frame sampling, people
ranking, crop and normalization as ``deformact test``), applied in memory to the video's one
annotation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deformact.errors import DataError, InferenceError


@dataclass
class VideoPrediction:
    """What a checkpoint says about one video."""

    video: Path
    class_names: list[str]
    probs: np.ndarray  # C, softmax averaged over clips
    clip_probs: np.ndarray  # N x C
    frame_indices: np.ndarray  # N x T, indices into the video's frames
    annotation: dict  # the pyskl annotation used (keypoints in the video's pixels)
    person_order: np.ndarray  # model person slot m = annotation person person_order[m]
    inputs: dict[str, torch.Tensor]  # model inputs, N x ...
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # per clip (N x ...), when asked
    timings: dict[str, float] = field(default_factory=dict)  # seconds: poses, clips, model (per clip)
    fps: float = 30.0

    @property
    def persons_found(self) -> int:
        """People seen in at least one frame of the video (0: the answer rests on no pose)."""
        from deformact.tools.windows import persons_found

        return persons_found(self.annotation)

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The k best classes as ``[{"label", "score"}, ...]``, highest first."""
        from deformact.tools.windows import top_k

        return top_k(self.probs, self.class_names, k, digits=None)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if cfg is None:
        return {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def clip_settings(model: nn.Module, num_clips: int | None = None) -> dict[str, Any]:
    """Test-time data options: the checkpoint's ``data`` section with the shapes of its model
    config, ``num_clips`` overriding the stored number of test clips (default 1)."""
    cfg = model.config
    out = {k: v for k, v in _as_dict(_as_dict(getattr(model, "run_config", None)).get("data")).items()
           if v is not None}
    out.update(modality=cfg.modality, frames=cfg.frames, image_size=cfg.image_size, num_persons=cfg.num_persons)
    out.setdefault("num_clips", 1)
    if num_clips is not None:
        out["num_clips"] = int(num_clips)
    return out


def select_annotation(poses: Mapping | list, video: Path) -> dict:
    """The annotation of ``video`` in a loaded pyskl file: frame_dir = the file name, its stem, or
    the stem without NTU's ``_rgb`` suffix (pyskl's NTU files name S001C001P001R001A001, the video
    S001C001P001R001A001_rgb.avi); a file with a single annotation is taken as is."""
    anns = poses.get("annotations") if isinstance(poses, Mapping) else poses
    if not isinstance(anns, (list, tuple)) or not anns:
        raise InferenceError("the pose file has no annotations")
    stem = video.stem
    for key in (video.name, stem, stem[:-4] if stem.endswith("_rgb") else stem):
        hits = [a for a in anns if isinstance(a, Mapping) and str(a.get("frame_dir")) == key]
        if hits:
            return dict(hits[0])
    if len(anns) == 1 and isinstance(anns[0], Mapping):
        return dict(anns[0])
    raise InferenceError(f"the pose file has {len(anns)} annotations and none has frame_dir {video.stem!r}")


def adapt_layout(ann: Mapping, model: nn.Module) -> dict:
    """``ann`` with its joints in the checkpoint's skeleton layout: poses of another layout (e.g.
    COCO-17 from the estimator for a Penn-13 checkpoint) are mapped by joint name
    (:func:`deformact.data.skeletons.map_joints`); a layout that cannot be mapped is a
    :class:`DataError` naming the joints it lacks."""
    from deformact.data.skeletons import get_skeleton, map_joints

    ann = dict(ann)
    kp = np.asarray(ann.get("keypoint", np.zeros((0, 0, 0, 2))))
    cfg = model.config
    if kp.ndim != 4 or not cfg.use_pose or kp.shape[2] == cfg.num_joints:
        return ann
    src = get_skeleton(ann.get("layout"), kp.shape[2])
    dst = get_skeleton(getattr(cfg, "layout", None), cfg.num_joints)
    score = ann.get("keypoint_score")
    if score is None:
        kp, score = kp[..., :2], kp[..., 2] if kp.shape[-1] == 3 else np.ones(kp.shape[:3], np.float32)
    try:
        ann["keypoint"], ann["keypoint_score"] = map_joints(kp[..., :2], score, src, dst)
    except DataError as e:
        raise DataError(f"the poses have {src.num_joints} joints ({src.name}) but the checkpoint expects "
                        f"{dst.num_joints} ({dst.name}): {e}") from None
    ann["layout"] = dst.name
    return ann


def check_annotation(ann: Mapping, model: nn.Module, video: Path, num_frames: int) -> None:
    """Poses must have the model's joint count and (about) the video's length."""
    kp = np.asarray(ann.get("keypoint", np.zeros((0, 0, 0, 2))))
    if kp.ndim != 4:
        raise InferenceError(f"{video}: keypoint must be M x T x V x 2, got shape {kp.shape}")
    v = model.config.num_joints
    if model.config.use_pose and kp.shape[2] != v:
        raise InferenceError(f"{video}: the poses have {kp.shape[2]} joints but the checkpoint expects {v}; "
                             "extract poses in the layout it was trained on and pass them with --poses")
    if num_frames and abs(kp.shape[1] - num_frames) > 2:
        raise InferenceError(f"{video}: the poses cover {kp.shape[1]} frames but the video has {num_frames}")


def load_poses(path: str | os.PathLike) -> Mapping | list:
    """A ``--poses`` file: a pyskl pickle (``{"annotations": [...]}``), a list of annotations or one
    annotation; anything else is an :class:`InferenceError` naming the file."""
    from deformact.io import load_pyskl

    data = load_pyskl(path)
    if isinstance(data, Mapping) and ("annotations" in data or "keypoint" in data):
        anns = data.get("annotations", [data])
    elif isinstance(data, list):
        anns = data
    else:
        raise InferenceError(f"{path}: not a pyskl pose file (top level is a {type(data).__name__}, expected a "
                             "dict with 'annotations')")
    if not isinstance(anns, (list, tuple)) or not all(isinstance(a, Mapping) and "keypoint" in a for a in anns):
        raise InferenceError(f"{path}: not a pyskl pose file ('annotations' must be a list of dicts with "
                             "'keypoint')")
    return data


def video_annotation(video: str | Path, poses: Mapping | list | None = None, *, estimator: str = "mediapipe",
                     max_persons: int = 2, max_side: int = 640, progress: bool = True) -> dict:
    """One pyskl annotation for ``video``: picked from ``poses`` (a loaded pyskl file, or one
    annotation) or extracted with ``estimator``."""
    video = Path(video)
    if poses is None:
        from deformact.pose.extract import extract_video
        from deformact.tools.poses import make_estimator

        with make_estimator(estimator, max_persons) as est:
            return extract_video(video, est, max_persons, max_side=max_side, progress=progress)
    if isinstance(poses, Mapping) and "annotations" not in poses:
        return dict(poses)
    return select_annotation(poses, video)


def build_clips(ann: Mapping, video: Path, settings: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor],
                                                                                np.ndarray, np.ndarray]:
    """(model inputs with a leading clip axis, N x T frame indices, person order: slot m = annotation
    person ``order[m]``) of one annotation through the test-time pipeline, in memory."""
    from deformact.data import build_test_pipeline

    n = int(settings["num_clips"])
    pipeline = build_test_pipeline({k: v for k, v in settings.items() if k != "num_clips"}, num_clips=n)
    item, state = pipeline.run({**ann, "filename": str(video), "label": 0})
    inputs = {}
    for key in ("rgb", "pose", "person_mask"):
        if key in item:
            x = torch.as_tensor(item[key])
            inputs[key] = x if n > 1 else x[None]
    indices = np.asarray(state["frame_inds"]).reshape(n, -1)
    order = np.asarray(state.get("rank", np.arange(int(settings["num_persons"]))))
    return inputs, indices, order


@torch.no_grad()
def predict_video(model: nn.Module, video: str | Path, poses: Mapping | list | None = None, *,
                  estimator: str = "mediapipe", return_maps: bool = False, num_clips: int | None = None,
                  progress: bool = True, max_side: int = 640, max_persons: int | None = None) -> VideoPrediction:
    """Class probabilities for ``video`` (averaged softmax over the checkpoint's test clips).

    ``poses``: a loaded pyskl file (or one annotation) to use instead of running ``estimator``.
    ``num_clips`` overrides the checkpoint's number of test clips; ``max_persons`` people are
    extracted (default: the checkpoint's M; the pipeline keeps the M most visible). Poses of
    another skeleton layout are mapped to the checkpoint's (:func:`adapt_layout`). Nothing is
    written to disk.
    """
    from deformact.io import probe

    video = Path(video)
    info = probe(video)  # VideoError for a missing or unreadable file
    settings = clip_settings(model, num_clips)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ann = video_annotation(video, poses, estimator=estimator, max_persons=max_persons or settings["num_persons"],
                           max_side=max_side, progress=progress)
    timings["poses"] = time.perf_counter() - t0
    ann = adapt_layout(ann, model)
    check_annotation(ann, model, video, info.frames)
    ann.setdefault("img_shape", (info.height, info.width))

    t0 = time.perf_counter()
    inputs, indices, order = build_clips(ann, video, settings)
    timings["clips"] = time.perf_counter() - t0

    n = int(settings["num_clips"])
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    out = model(**{k: v.to(device) for k, v in inputs.items()}, return_maps=return_maps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings["model"] = time.perf_counter() - t0
    timings["model_per_clip"] = timings["model"] / n
    logits, maps = out if return_maps else (out, {})
    clip_probs = logits.float().softmax(-1).cpu().numpy()
    return VideoPrediction(
        video=video, class_names=list(model.class_names), probs=clip_probs.mean(0), clip_probs=clip_probs,
        frame_indices=indices, annotation=ann, person_order=order, inputs=inputs,
        maps={k: v.float().cpu().numpy() for k, v in maps.items()}, timings=timings, fps=info.fps or 30.0)


def load_model(ckpt: str | os.PathLike, labels: str | os.PathLike | None = None, device: str = "cpu") -> nn.Module:
    """``deformact.load_checkpoint`` on ``device`` ("auto" = the GPU when there is one), with an
    optional label map replacing the stored class names."""
    from deformact.engine.checkpoint import load_checkpoint
    from deformact.engine.runtime import resolve_device

    model = load_checkpoint(ckpt, map_location=resolve_device(device, name="--device"))
    if labels is not None:
        from deformact.data import load_label_map

        names = load_label_map(labels)
        if len(names) != len(model.class_names):
            raise InferenceError(f"{labels}: {len(names)} class names but the checkpoint predicts "
                                 f"{len(model.class_names)} classes")
        model.class_names = names
    return model


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Print "nobody in this video" warnings as one ``<prog>: warning: ...`` line on stderr."""
    from deformact.pose.extract import NoPersonWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoPersonWarning)
        yield
    for w in caught:
        if issubclass(w.category, NoPersonWarning):
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def write_annotated(prediction: VideoPrediction, path: str | Path, max_side: int = 640,
                    windows: list[dict[str, Any]] | None = None) -> int:
    """The whole video with every person's skeleton and the top-3 classes (with ``windows``: the
    current window's label and score bar) drawn on each frame; see :mod:`deformact.tools.annotate`."""
    from deformact.tools.annotate import write_annotated_video

    return write_annotated_video(prediction.video, prediction.annotation, prediction.top(3), path,
                                 fps=prediction.fps, windows=windows or (), max_side=max_side)


__all__ = ["VideoPrediction", "adapt_layout", "build_clips", "check_annotation", "clip_settings", "load_model",
           "load_poses", "one_line_warnings", "predict_video", "select_annotation", "video_annotation",
           "write_annotated"]
