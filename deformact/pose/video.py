"""Video decoding for pose extraction and visualization: PyAV, resized on decode.

Full-HD NTU clips are decoded straight to a small size by libswscale (no full-resolution copy
in Python), which is what makes extraction fast on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoError(RuntimeError):
    """A video that is missing, unreadable or truncated; the message names the file."""


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    frames: int  # as declared by the container (0 when unknown)
    fps: float


def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot open video ({e.__class__.__name__}: {e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size, declared frame count and frame rate of a video, without decoding it."""
    with _open(path) as container:
        s = container.streams.video[0]
        fps = float(s.average_rate) if s.average_rate else 30.0
        return VideoInfo(Path(path), s.codec_context.width, s.codec_context.height, int(s.frames or 0), fps)


def output_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so the longer side is at most ``max_side`` (even numbers, aspect kept)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def iter_frames(path: str | Path, max_side: int | None = 640, strict: bool = True) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (h x w x 3), resized so the longer side is <= ``max_side``.

    With ``strict``, a stream that ends before the frame count its container declares, or that
    fails mid-way, raises :class:`VideoError` naming the file (a truncated download).
    """
    import av

    from deformact.data.video import frame_to_rgb

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = output_size(stream.codec_context.width, stream.codec_context.height, max_side)
        declared, n = int(stream.frames or 0), 0
        try:
            for frame in container.decode(stream):
                yield frame_to_rgb(frame, w, h)
                n += 1
        except (av.error.FFmpegError, OSError) as e:
            if strict:
                raise VideoError(f"{path}: decoding failed after {n} frames ({e})") from None
        if n == 0:
            raise VideoError(f"{path}: no decodable frames")
        if strict and declared and n < declared:
            raise VideoError(f"{path}: truncated video, decoded {n} of {declared} declared frames")
    finally:
        container.close()


def read_frames(path: str | Path, max_side: int | None = 640, strict: bool = True) -> np.ndarray:
    """All frames of a video as one T x h x w x 3 uint8 array (see :func:`iter_frames`)."""
    return np.stack(list(iter_frames(path, max_side, strict)))


def list_videos(inputs: list[str | Path]) -> list[tuple[Path, str]]:
    """Expand files and folders (searched recursively) into (video, frame_dir) pairs.

    frame_dir is the file stem for a file given directly, and the path relative to the folder
    without extension for a video found in a folder, so that ``video_root=<folder>`` finds it.
    """
    out: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
            out += [(p, p.relative_to(item).with_suffix("").as_posix()) for p in found]
        else:
            out.append((item, item.stem))  # missing files are reported when they are opened
    return out
