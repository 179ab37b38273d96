"""Writing RGB frames: a video file (H.264 when the PyAV build has it, MPEG-4 otherwise) or a
folder of numbered PNG/JPEG images (the frame-folder layout that training reads)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from deformact.errors import VideoError


def _write_images(path: Path, frames: Iterable[np.ndarray], codec: str) -> int:
    path.mkdir(parents=True, exist_ok=True)
    ext, fmt = (".png", "rgb24") if codec == "png" else (".jpg", "yuvj420p")
    n = 0
    for n, img in enumerate(frames, start=1):
        img = np.ascontiguousarray(img, dtype=np.uint8)
        with av.open(str(path / f"img_{n:05d}{ext}"), "w", format="image2") as c:
            s = c.add_stream(codec, rate=1)
            s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], fmt
            if codec == "mjpeg":
                s.codec_context.qmin = s.codec_context.qmax = 2
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=fmt)
            for pkt in (*s.encode(frame), *s.encode()):
                c.mux(pkt)
    return n


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 30.0, *,
                codec: str | None = None, gop: int = 32, preset: str = "veryfast", crf: int = 23,
                pix_fmt: str = "yuv420p", threads: int = 1) -> int:
    """Encode h x w x 3 uint8 RGB ``frames`` (an array or any iterable, consumed one at a time) to
    ``path``; returns the number of frames written. Odd sizes are cropped to even ones (yuv420p).

    ``codec``: None = libx264 when available, else mpeg4 (fixed fine quantizer); libx264 uses
    ``preset``/``crf``/``threads``, every codec a keyframe each ``gop`` frames. ``codec`` "png" or
    "mjpeg" with a ``path`` without suffix writes a folder of numbered images
    (``img_00001.png``...) instead. A folder for the file is created when missing.
    """
    path = Path(path)
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    if codec in ("png", "mjpeg") and not path.suffix:
        return _write_images(path, frames, codec)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        with av.open(str(path), "w") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    h, w = frame.shape[:2]
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
                    stream.pix_fmt = pix_fmt
                    stream.codec_context.gop_size = gop
                    if codec == "libx264":
                        stream.options = {"preset": preset, "crf": str(crf), "threads": str(threads)}
                    else:  # e.g. mpeg4: fixed fine quantizer
                        stream.codec_context.qmin = stream.codec_context.qmax = 2
                img = np.ascontiguousarray(frame[: stream.height, : stream.width], dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
                n += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(f"{path}: cannot write video ({type(e).__name__}: {e})") from None
    return n
