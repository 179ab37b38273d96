"""Sliding-window recognition: one answer per window of a long video or a live source.

A window is ``window`` consecutive video frames; windows start every ``stride`` frames and the
last one ends at the last frame, so together they cover the video. Each window is one
pyskl annotation (the poses of its frames) sent through the checkpoint's test-time pipeline
(:func:`deformact.data.build_test_pipeline`: the model samples its T frames inside the window,
ranks the people seen in it and crops around them), in memory; windows are run through the model
in batches. RGB frames come from a :class:`FrameSource`: the video file (seeking) or the frames
a live source has kept in memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from deformact.errors import InferenceError

SizeFn = Callable[[int, int], tuple[int, int]]


def check_window(window: int, stride: int) -> None:
    """The one check of ``--window`` / ``--stride`` (predict and stream)."""
    if window < 1 or stride < 1:
        raise InferenceError(f"--window and --stride must be >= 1 frame, got {window} and {stride}")


def window_spans(num_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) frame spans, end exclusive: starts 0, stride, 2 stride... and a last window
    ending at ``num_frames``; a video shorter than ``window`` is one window."""
    check_window(window, stride)
    if num_frames < 1:
        raise InferenceError("the video has no frames to cut into windows")
    if num_frames <= window:
        return [(0, num_frames)]
    spans = [(s, s + window) for s in range(0, num_frames - window + 1, stride)]
    if spans[-1][1] < num_frames:
        spans.append((num_frames - window, num_frames))
    return spans


class FrameSource(Protocol):
    """RGB frames by absolute index, decoded at the size ``size_fn(src_w, src_h)`` picks."""

    def read(self, indices: np.ndarray, size_fn: SizeFn) -> tuple[np.ndarray, tuple[int, int]]: ...


class FileFrames:
    """Frames of a video file or frame folder (:func:`deformact.io.read_clip`)."""

    def __init__(self, *, path: Any, threads: int = 1) -> None:
        self.path, self.threads = path, int(threads)

    def read(self, indices: np.ndarray, size_fn: SizeFn) -> tuple[np.ndarray, tuple[int, int]]:
        from deformact.io import read_clip

        return read_clip(self.path, indices, size_fn, self.threads)


class MemoryFrames:
    """Frames kept in memory by absolute index (a live source's rolling buffer), all one size;
    resized with OpenCV (area filter when shrinking) to the decode size."""

    def __init__(self, *, frames: Mapping[int, np.ndarray]) -> None:
        self.frames = frames

    def read(self, indices: np.ndarray, size_fn: SizeFn) -> tuple[np.ndarray, tuple[int, int]]:
        import cv2

        try:
            first = self.frames[int(indices[0])]
        except KeyError:
            raise InferenceError(f"frame {int(indices[0])} is no longer in the stream buffer") from None
        h, w = first.shape[:2]
        dw, dh = size_fn(w, h)
        interp = cv2.INTER_AREA if dw * dh < w * h else cv2.INTER_LINEAR
        cache: dict[int, np.ndarray] = {}
        out = np.empty((len(indices), dh, dw, 3), np.uint8)
        for k, i in enumerate(int(i) for i in indices):
            if i not in cache:
                img = self.frames[i]
                cache[i] = img if (dw, dh) == (w, h) else cv2.resize(img, (dw, dh), interpolation=interp)
            out[k] = cache[i]
        return out, (w, h)


def _window_rgb_step(image_size: int) -> Any:
    """A transform in place of :class:`deformact.data.pipeline.rgb.DecodeRGB`: the same decode
    plan, frames read from ``results["frame_source"]`` at ``window_start + frame_inds``."""
    from deformact.data import transforms as tf
    from deformact.data.pipeline import Transform

    class WindowRGB(Transform):
        reads = ("frame_source", "window_start", "frame_inds", "crop_box")
        writes = ("imgs", "img_pbox", "crop_box")

        def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
            box = results["crop_box"]
            inds = np.asarray(results["frame_inds"]) + int(results.get("window_start", 0))
            frames, src = results["frame_source"].read(inds, functools.partial(tf.decode_size, box, image_size))
            _, pbox, snapped = tf.decode_plan(box, src, image_size)
            results.update(imgs=frames, img_pbox=pbox, crop_box=snapped)
            return results

    return WindowRGB()


def persons_found(ann: Mapping[str, Any]) -> int:
    """People (tracks) of an annotation seen in at least one frame: a joint with a finite position
    and a finite score > 0, the rule the datasets use (:meth:`deformact.data.store.ClipStore.usable`)."""
    score = np.asarray(ann.get("keypoint_score", np.zeros((0, 0, 0))), dtype=np.float64)
    if not score.size:
        return 0
    seen = np.isfinite(score) & (np.nan_to_num(score) > 0)
    kp = ann.get("keypoint")
    if kp is not None:
        kp = np.asarray(kp, dtype=np.float64)
        seen &= np.isfinite(kp[..., :2]).all(-1)
    return int(seen.reshape(score.shape[0], -1).any(1).sum())


class WindowPredictor:
    """Class probabilities of windows of one annotation (poses in the model's layout)."""

    def __init__(self, *, model: nn.Module, batch_size: int = 16) -> None:
        from deformact.data import build_test_pipeline
        from deformact.data.pipeline.rgb import DecodeRGB
        from deformact.tools.inference import clip_settings

        self.model, self.batch_size = model, max(1, int(batch_size))
        settings = clip_settings(model, 1)
        pipe = build_test_pipeline({k: v for k, v in settings.items() if k != "num_clips"}, num_clips=1)
        pipe.transforms = [_window_rgb_step(int(settings["image_size"])) if isinstance(t, DecodeRGB) else t
                           for t in pipe.transforms]
        self.pipeline = pipe
        self.device = next(model.parameters()).device

    def window_inputs(self, ann: Mapping[str, Any], span: tuple[int, int], source: FrameSource | None = None,
                      frame_offset: int = 0) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """(model inputs of one window without a batch axis, its T absolute frame indices). The
        source's frame of annotation frame i is i + ``frame_offset`` (a stream's rolling buffer)."""
        s, e = span
        sub = {k: v for k, v in ann.items() if k not in ("keypoint", "keypoint_score", "rank")}
        sub.update(keypoint=np.asarray(ann["keypoint"])[:, s:e],
                   keypoint_score=np.asarray(ann["keypoint_score"])[:, s:e],
                   total_frames=e - s, label=0, window_start=s + frame_offset, frame_source=source)
        item, state = self.pipeline.run(sub)
        inputs = {k: torch.as_tensor(item[k]) for k in ("rgb", "pose", "person_mask") if k in item}
        return inputs, np.asarray(state["frame_inds"]) + s

    @torch.no_grad()
    def predict(self, ann: Mapping[str, Any], spans: Sequence[tuple[int, int]], source: FrameSource | None = None,
                frame_offset: int = 0) -> np.ndarray:
        """len(spans) x C softmax probabilities, windows batched ``batch_size`` at a time."""
        out = []
        for b in range(0, len(spans), self.batch_size):
            items = [self.window_inputs(ann, span, source, frame_offset)[0] for span in spans[b:b + self.batch_size]]
            batch = {k: torch.stack([it[k] for it in items]).to(self.device) for k in items[0]}
            out.append(self.model(**batch).float().softmax(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.model.class_names)), np.float32)


def top_k(probs: np.ndarray, names: Sequence[str], k: int = 5, digits: int | None = 6) -> list[dict[str, Any]]:
    """``[{"label", "score"}, ...]``, the k best classes of one probability vector, highest first
    (scores rounded to ``digits``, or exact with None)."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": names[i], "score": float(probs[i]) if digits is None else round(float(probs[i]), digits)}
            for i in order]


def window_entries(spans: Sequence[tuple[int, int]], probs: np.ndarray, names: Sequence[str], fps: float
                   ) -> list[dict[str, Any]]:
    """The ``windows`` list of ``predict --json``: spans in frames (end exclusive) and seconds, top-5."""
    fps = fps or 30.0
    return [{"start_frame": int(s), "end_frame": int(e), "start_s": round(s / fps, 3), "end_s": round(e / fps, 3),
             "top5": top_k(p, names)} for (s, e), p in zip(spans, probs)]


def predict_windows(model: nn.Module, ann: Mapping[str, Any], video: Any, *, window: int, stride: int,
                    fps: float, batch_size: int = 16) -> list[dict[str, Any]]:
    """Windows of ``video`` (poses ``ann``, already in the model's layout) with their top-5."""
    spans = window_spans(int(np.shape(ann["keypoint"])[1]), window, stride)
    predictor = WindowPredictor(model=model, batch_size=batch_size)
    source = FileFrames(path=video) if model.config.use_rgb else None
    probs = predictor.predict(ann, spans, source)
    return window_entries(spans, probs, list(model.class_names), fps)


__all__ = ["FileFrames", "FrameSource", "MemoryFrames", "WindowPredictor", "persons_found", "predict_windows",
           "top_k", "window_entries", "window_spans"]
