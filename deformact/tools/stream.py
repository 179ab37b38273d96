"""Live recognition (``deformact stream``): frames from a file read as if live, a V4L2 camera or
a network URL (all through PyAV), poses estimated frame by frame into a rolling buffer, and one
answer per window as soon as its last frame is in.

Each window is the last ``window`` frames, every ``stride`` frames; it goes through the same
test-time pipeline as ``predict --window`` (:class:`deformact.tools.windows.WindowPredictor`),
with the RGB frames taken from the buffer. ``latency_ms`` runs from reading the window's last
frame to its answer (its pose estimation, the clip and the model). With ``realtime`` a frame that
arrives more than one frame period late is dropped (its poses and pixels repeat the previous
frame's), and a file is paced at its frame rate, so the stream never falls behind the source.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deformact.errors import VideoError
from deformact.pose.base import PoseEstimator

_NOT_ESTIMATED = object()  # the poses of a frame left out by pose_frames="sampled"


@dataclass
class StreamStats:
    """What a stream did, for the closing summary."""

    frames: int = 0
    windows: int = 0
    dropped: int = 0
    elapsed: float = 0.0
    startup: float = 0.0  # from the start to the first frame's poses (the estimator's graphs are built)
    startup_frames: int = 1  # the frames read by then
    fps: float = 30.0
    interrupted: bool = False
    latencies: list[float] = field(default_factory=list)

    @property
    def realtime_factor(self) -> float:
        """Seconds of video handled per second of wall time (>= 1: keeps up)."""
        return (self.frames / self.fps) / max(self.elapsed, 1e-9)

    @property
    def steady_realtime_factor(self) -> float:
        """The same after the first frame: what a long stream keeps up with once started."""
        return ((self.frames - self.startup_frames) / self.fps) / max(self.elapsed - self.startup, 1e-9)

    def summary(self) -> str:
        lat = f", latency median {np.median(self.latencies):.1f} ms" if self.latencies else ""
        end = "stopped by Ctrl-C after" if self.interrupted else "done:"
        rtf = f"{self.realtime_factor:.2f} (after the first frame {self.steady_realtime_factor:.2f})"
        return (f"{end} {self.frames} frames, {self.windows} windows, {self.dropped} dropped, {self.elapsed:.2f} s, "
                f"real-time factor {rtf} at {self.fps:g} fps{lat}")


def source_kind(source: str) -> str:
    """'camera' (/dev/video*), 'url' (anything with ://) or 'file'."""
    if source.startswith("/dev/video"):
        return "camera"
    return "url" if "://" in source else "file"


def open_source(source: str, timeout_s: float = 10.0) -> Any:
    """A PyAV container with a video stream; :class:`VideoError` (one line) when it cannot be opened."""
    from deformact.io.video import open_container, open_video

    kind = source_kind(source)
    if kind == "file":
        return open_video(source)
    options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
    return open_container(source, what=kind, format="v4l2" if kind == "camera" else None, options=options,
                          timeout=(timeout_s, timeout_s))


def iter_source(container: Any, source: str, max_side: int | None = 640) -> Iterator[tuple[float, np.ndarray]]:
    """(presentation time in s, RGB frame at most ``max_side`` long) of every frame. A stream that
    fails, or a file that ends before the frames its header declares, raises :class:`VideoError`
    after the frames it gave."""
    import av

    from deformact.io import frame_to_rgb, output_size

    stream = container.streams.video[0]
    # frame threads; slice threads without the deblocking filter (2.5 CPU-ms less per 1080p frame)
    # did not raise the real-time factor (docs/PERFORMANCE.md), so the pixels stay exact
    stream.thread_type = "AUTO"
    w, h = output_size(stream.codec_context.width, stream.codec_context.height, max_side)
    declared, n = int(stream.frames or 0), 0
    fps = float(stream.average_rate or 30.0)
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else n / fps
            yield t, frame_to_rgb(frame, w, h)
            n += 1
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{source}: the stream died after {n} frames ({type(e).__name__}: {e})") from None
    if n == 0:
        raise VideoError(f"{source}: no decodable frames")
    if source_kind(source) == "file" and declared and n < declared:
        raise VideoError(f"{source}: the stream died after {n} of {declared} declared frames (truncated file)")


POSE_FRAMES = ("all", "sampled")


def sampled_frames(window: int, stride: int, clip_len: int) -> Callable[[int], bool]:
    """Whether frame n is one of the ``clip_len`` frames the model samples from some window (the
    windows start at 0, stride, 2 stride, ...; the test-time sampling of
    :func:`deformact.data.sampling.segment_indices`). With ``--pose-frames sampled`` only these
    frames are estimated: the other frames of a window reach the model only through the crop box
    and the person ranking, which then come from the sampled frames alone."""
    from deformact.data.sampling import segment_indices

    offsets = frozenset(segment_indices(window, clip_len, 1)[0].tolist())

    def needed(n: int) -> bool:
        first = max(0, -(-(n - window + 1) // stride))  # the first window holding frame n
        return any(n - k * stride in offsets for k in range(first, n // stride + 1))

    return needed


class ReplayEstimator(PoseEstimator):
    """Poses of one pyskl annotation, frame by frame, in place of a pose estimator (replaying
    extracted poses; coordinates scaled from the annotation's frame size to the frame given)."""

    def __init__(self, *, annotation: Mapping[str, Any]) -> None:
        self.kp = np.asarray(annotation["keypoint"], np.float32)[..., :2]
        self.sc = np.asarray(annotation["keypoint_score"], np.float32)
        self.hw = tuple(int(s) for s in annotation["img_shape"][:2])
        self.num_joints, self.layout, self.i = self.kp.shape[2], annotation.get("layout"), 0

    def skip(self) -> None:
        self.i += 1

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        i, self.i = self.i, self.i + 1
        if i >= self.kp.shape[1]:
            return []
        s = np.array([frame.shape[1] / self.hw[1], frame.shape[0] / self.hw[0]], np.float32)
        return [np.concatenate([self.kp[m, i] * s, self.sc[m, i, :, None]], -1)
                for m in range(self.kp.shape[0]) if self.sc[m, i].max() > 0]


def run_stream(model: nn.Module, source: str, estimator: PoseEstimator, emit: Callable[[dict[str, Any]], None], *,
               window: int, stride: int, max_windows: int | None = None, realtime: bool = False,
               max_persons: int | None = None, max_side: int | None = 640, timeout_s: float = 10.0,
               pose_frames: str = "all") -> StreamStats:
    """Run ``model`` on ``source`` window by window, calling ``emit`` with one dict per window
    (the JSON line of ``deformact stream``). Ctrl-C ends it cleanly (``stats.interrupted``); a
    source that cannot be opened or dies raises :class:`VideoError` after the windows emitted.
    ``pose_frames="sampled"`` estimates poses only on the frames the model samples
    (:func:`sampled_frames`); the others are kept as frames where nobody was estimated."""
    from deformact.pose.tracking import OnlineTracker
    from deformact.tools.inference import adapt_layout
    from deformact.tools.windows import MemoryFrames, WindowPredictor, check_window, persons_found, top_k

    check_window(window, stride)
    if pose_frames not in POSE_FRAMES:
        raise ValueError(f"pose_frames must be one of {POSE_FRAMES}, got {pose_frames!r}")
    needed = sampled_frames(window, stride, int(model.config.frames)) if pose_frames == "sampled" else None
    predictor = WindowPredictor(model=model, batch_size=1)
    use_rgb, names = bool(model.config.use_rgb), list(model.class_names)
    m = int(max_persons or model.config.num_persons)
    tracker = OnlineTracker(max_persons=m, num_joints=int(getattr(estimator, "num_joints", 17)))
    kps: deque = deque(maxlen=window)
    nobody = (np.zeros((m, tracker.num_joints, 2), np.float32), np.zeros((m, tracker.num_joints), np.float32))
    frames: dict[int, np.ndarray] = {}
    stats = StreamStats()
    layout = getattr(estimator, "layout", None)

    def answer(end: int, shape: tuple[int, ...], read_at: float) -> dict[str, Any]:
        begin = end - len(kps)
        ann = {"keypoint": np.stack([k for k, _ in kps], 1), "keypoint_score": np.stack([c for _, c in kps], 1),
               "img_shape": tuple(shape[:2]), "total_frames": len(kps), "frame_dir": "stream", "layout": layout}
        ann = adapt_layout(ann, model)
        rgb = MemoryFrames(frames=frames) if use_rgb else None
        top = top_k(predictor.predict(ann, [(0, len(kps))], rgb, frame_offset=begin)[0], names)
        latency = (time.perf_counter() - read_at) * 1000
        stats.windows += 1
        stats.latencies.append(latency)
        return {"start_frame": begin, "end_frame": end, "t_s": round(end / stats.fps, 3), "label": top[0]["label"],
                "score": top[0]["score"], "top5": top, "latency_ms": round(latency, 2),
                "persons": persons_found(ann), "dropped": stats.dropped}

    container = open_source(source, timeout_s)
    fps = stats.fps = float(container.streams.video[0].average_rate or 30.0)
    paced = realtime and source_kind(source) == "file"
    read: deque = deque()  # (frame number, frame, read time, dropped) of every frame the source gave

    def gate() -> Iterator[np.ndarray]:
        # runs in the decoder's thread: a frame's lateness is judged when it is read, as a camera's would be
        t_wall0 = t_src0 = None
        for n, (t_src, img) in enumerate(iter_source(container, source, max_side)):
            read_at = time.perf_counter()
            if t_wall0 is None:
                t_wall0, t_src0 = read_at, t_src
            late = (read_at - t_wall0) - (t_src - t_src0)
            if paced and late < 0:
                time.sleep(-late)
                read_at, late = time.perf_counter(), 0.0
            dropped = realtime and n > 0 and late > 1.0 / fps
            read.append((n, img, read_at, dropped))
            if not dropped:
                yield img if needed is None or needed(n) else None  # None: not to be estimated

    def frame_in(n: int, img: np.ndarray, read_at: float, people: Any) -> bool:
        """One frame into the buffer (``people`` None: dropped; ``_NOT_ESTIMATED``: left out by
        ``pose_frames``); whether the stream is done."""
        if people is None:
            stats.dropped += 1
            kps.append(kps[-1])
            if use_rgb:
                frames[n] = frames[n - 1]
        elif people is _NOT_ESTIMATED:  # nobody estimated in it
            kps.append(nobody)
            if use_rgb:
                frames[n] = img
        else:
            if not stats.startup:  # the first estimated frame: the estimator has started
                stats.startup, stats.startup_frames = time.perf_counter() - start, n + 1
            kps.append(tracker.update(people))
            if use_rgb:
                frames[n] = img
        frames.pop(n - window, None)
        stats.frames = n + 1
        if n + 1 >= window and (n + 1 - window) % stride == 0:
            emit(answer(n + 1, img.shape, read_at))
            return bool(max_windows and stats.windows >= max_windows)
        return False

    # decoding and pose estimation side by side (PoseEstimator.stream); the answers keep frame order
    people_of = estimator.stream(gate())
    start, img, done = time.perf_counter(), None, False
    try:
        for people in people_of:
            while not done:  # the dropped frames before this one, then this one
                n, img, read_at, dropped = read.popleft()
                done = frame_in(n, img, read_at, None if dropped else _NOT_ESTIMATED if people is None else people)
                if not dropped:
                    break
            if done:
                break
        while read and not done:  # dropped frames after the last estimated one
            n, img, read_at, _ = read.popleft()
            done = frame_in(n, img, read_at, None)
        if stats.windows == 0 and kps:  # shorter than one window: one answer for what there is
            emit(answer(stats.frames, img.shape, time.perf_counter()))
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        stats.elapsed = time.perf_counter() - start
        people_of.close()  # stops the decoder's and the estimator's threads before the container closes
        container.close()
    return stats


def replay_annotation(path: str | Path, source: str) -> dict[str, Any]:
    """The annotation of ``source`` in a pyskl file (``--poses``)."""
    from deformact.tools.inference import load_poses, select_annotation

    return select_annotation(load_poses(path), Path(source))


__all__ = ["ReplayEstimator", "StreamStats", "iter_source", "open_source", "replay_annotation", "run_stream",
           "source_kind"]
