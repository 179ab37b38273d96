"""Run a checkpoint on one raw video: poses -> clips -> class probabilities (and maps).

Shared by ``deformact predict`` and ``deformact explain``. Clips are built by the same
:class:`deformact.data.PysklDataset` the checkpoint was tested with (same frame sampling, crop
and normalization), from a one-video pyskl file written to a temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deformact.pose import VideoError, build_estimator, probe
from deformact.pose.extract import NoPersonWarning, extract_video

# data keys of the checkpoint's config that shape test-time clips (the rest name files or train aug)
_CLIP_KEYS = ("modality", "frames", "image_size", "num_clips", "num_persons", "layout", "compact",
              "compact_padding", "pose_norm")


class PredictError(ValueError):
    """Input a user can fix: poses that do not fit the checkpoint, a bad label map, ..."""


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

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        """The k best classes as ``[{"label", "score"}, ...]``, highest first."""
        order = np.argsort(-self.probs, kind="stable")[:k]
        return [{"label": self.class_names[i], "score": float(self.probs[i])} for i in order]


def clip_settings(model: nn.Module) -> dict[str, Any]:
    """Test-time clip options: the checkpoint's data section, shapes from its model config."""
    cfg = model.config
    data = dict(getattr(model, "run_config", {}) or {}).get("data", {}) or {}
    out = {k: data[k] for k in _CLIP_KEYS if k in data and data[k] is not None}
    out.update(modality=cfg.modality, frames=cfg.frames, image_size=cfg.image_size, num_persons=cfg.num_persons)
    out.setdefault("num_clips", 1)
    if out.get("layout") is None:
        out.pop("layout", None)
    return out


def select_annotation(poses: dict | list, video: Path) -> dict:
    """The annotation of ``video`` in a loaded pyskl file: frame_dir = the file name, its stem, or
    the stem without NTU's ``_rgb`` suffix (pyskl's NTU files name S001C001P001R001A001, the video
    S001C001P001R001A001_rgb.avi); a file with a single annotation is taken as is."""
    anns = poses.get("annotations") if isinstance(poses, dict) else poses
    if not isinstance(anns, (list, tuple)) or not anns:
        raise PredictError("the pose file has no annotations")
    stem = video.stem
    for key in (video.name, stem, stem[:-4] if stem.endswith("_rgb") else stem):
        hits = [a for a in anns if isinstance(a, dict) and str(a.get("frame_dir")) == key]
        if hits:
            return dict(hits[0])
    if len(anns) == 1 and isinstance(anns[0], dict):
        return dict(anns[0])
    raise PredictError(f"the pose file has {len(anns)} annotations and none has frame_dir "
                       f"{video.stem!r}")


def check_annotation(ann: dict, model: nn.Module, video: Path, num_frames: int) -> None:
    """Poses must have the model's joint count and (about) the video's length."""
    kp = np.asarray(ann.get("keypoint", np.zeros((0, 0, 0, 2))))
    if kp.ndim != 4:
        raise PredictError(f"{video}: keypoint must be M x T x V x 2, got shape {kp.shape}")
    v = model.config.num_joints
    if model.config.use_pose and kp.shape[2] != v:
        raise PredictError(f"{video}: the poses have {kp.shape[2]} joints but the checkpoint expects {v}; "
                           "extract poses in the layout it was trained on and pass them with --poses")
    if num_frames and abs(kp.shape[1] - num_frames) > 2:
        raise PredictError(f"{video}: the poses cover {kp.shape[1]} frames but the video has {num_frames}")


@torch.no_grad()
def predict_video(model: nn.Module, video: str | Path, poses: dict | None = None, *, estimator: str = "mediapipe",
                  return_maps: bool = False, num_clips: int | None = None, progress: bool = True,
                  max_side: int = 640) -> VideoPrediction:
    """Class probabilities for ``video`` (averaged softmax over the checkpoint's test clips).

    ``poses``: a loaded pyskl file (or one annotation) to use instead of running ``estimator``.
    ``num_clips`` overrides the checkpoint's number of test clips.
    """
    import deformact.data as dd

    video = Path(video)
    info = probe(video)  # VideoError for a missing or unreadable file
    settings = clip_settings(model)
    if num_clips is not None:
        settings["num_clips"] = int(num_clips)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if poses is None:
        with build_estimator(estimator, **({"max_persons": settings["num_persons"]}
                                           if estimator == "mediapipe" else {})) as est:
            ann = extract_video(video, est, settings["num_persons"], max_side=max_side, progress=progress)
    else:
        ann = select_annotation(poses, video) if "annotations" in poses else dict(poses)
    timings["poses"] = time.perf_counter() - t0
    check_annotation(ann, model, video, info.frames)

    ann.update(frame_dir=video.name, label=0)  # the file name itself: find_media opens exactly it
    ann.setdefault("img_shape", (info.height, info.width))
    class_names = list(model.class_names)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deformact-") as tmp:
        ann_file = Path(tmp) / "video.pkl"
        dd.save_pyskl({"split": {}, "annotations": [ann]}, ann_file)
        ds = dd.build_dataset(type="pyskl", ann_file=str(ann_file), video_root=str(video.parent), train=False,
                              label_map=class_names, **settings)
        item = ds[0]
        order = np.asarray(ds.anns[0].get("rank", np.arange(settings["num_persons"])))
        indices = ds.frame_indices(0)
    timings["clips"] = time.perf_counter() - t0

    n = int(settings["num_clips"])
    inputs = {}
    for key in ("rgb", "pose", "person_mask"):
        if key in item:
            x = torch.as_tensor(item[key])
            inputs[key] = x if n > 1 else x[None]
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
        video=video, class_names=class_names, probs=clip_probs.mean(0), clip_probs=clip_probs,
        frame_indices=np.asarray(indices), annotation=ann, person_order=order, inputs=inputs,
        maps={k: v.float().cpu().numpy() for k, v in maps.items()}, timings=timings)


def resolve_device(device: str = "auto") -> torch.device:
    """"auto" = the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {device}: no CUDA GPU is available (use cpu or auto)")
    return dev


def load_model(ckpt: str | os.PathLike, labels: str | os.PathLike | None = None, device: str = "cpu") -> nn.Module:
    """``deformact.load_checkpoint`` on ``device``, with an optional label map replacing the stored
    class names."""
    from deformact.engine.checkpoint import load_checkpoint

    model = load_checkpoint(ckpt, map_location=resolve_device(device))
    if labels is not None:
        from deformact.data import load_label_map

        names = load_label_map(labels)
        if len(names) != len(model.class_names):
            raise PredictError(f"{labels}: {len(names)} class names but the checkpoint predicts "
                               f"{len(model.class_names)} classes")
        model.class_names = names
    return model


@contextlib.contextmanager
def one_line_warnings(prog: str) -> Iterator[None]:
    """Print "nobody in this video" warnings as one ``<prog>: warning: ...`` line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NoPersonWarning)
        yield
    for w in caught:
        if issubclass(w.category, NoPersonWarning):
            print(f"{prog}: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input (printed as one line by the commands)."""
    from deformact.data import DataError
    from deformact.engine.checkpoint import CheckpointError

    return (PredictError, VideoError, DataError, CheckpointError)
