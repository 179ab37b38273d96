"""Write RGB frames to an mp4 with PyAV (H.264 when the build has it, MPEG-4 otherwise)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> int:
    """Encode h x w x 3 uint8 RGB frames to ``path``; returns the number of frames written."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    n = 0
    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w - w % 2, h - h % 2  # yuv420p needs even sizes
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": "23", "preset": "veryfast"}
            img = np.ascontiguousarray(frame[: stream.height, : stream.width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
