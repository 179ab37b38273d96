"""Clip reading: the frames at given indices of a video file (seeking to them, resized on decode)
or of a folder of image frames (JPEG/PNG, also decoded by PyAV). No OpenCV/PIL needed."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np

from deformact.errors import VideoError

from .video import _LRU, frame_to_rgb, list_frames

# containers whose packet timestamps are trustworthy enough to seek by; others are decoded in order
_SEEKABLE = ("mov", "mp4", "matroska", "webm")
# a video may end this many frames before the annotation says (off-by-one exports); more is truncation
FRAME_TOLERANCE = 2

SizeFn = Callable[[int, int], tuple[int, int]]
_PTS_INDEX = _LRU(512)


class _Resizer:
    """Converts decoded frames to RGB at one size for the whole clip: ``size_fn`` is asked once,
    with the size of the first decoded frame (kept as ``src``)."""

    def __init__(self, size_fn: SizeFn | None) -> None:
        self.size_fn = size_fn
        self.src: tuple[int, int] | None = None
        self.size: tuple[int, int] = (0, 0)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.src is None:
            self.src = (frame.width, frame.height)
            self.size = self.size_fn(*self.src) if self.size_fn is not None else self.src
        w, h = self.size
        if (w, h) == (frame.width, frame.height):
            return frame_to_rgb(frame)
        # swscale's fast bilinear aliases when shrinking a lot; its filtered bilinear does not
        fast = frame.width < 2 * w and frame.height < 2 * h
        return frame_to_rgb(frame, w, h, "FAST_BILINEAR" if fast else "BILINEAR")


def _fill(path: Path, indices: np.ndarray, got: dict[int, np.ndarray], available: int) -> np.ndarray:
    """Stack frames for ``indices``; frames up to FRAME_TOLERANCE past the end reuse the last one."""
    missing = [i for i in np.unique(indices) if int(i) not in got]
    if missing:
        last = max(got) if got else -1
        if last < 0 or min(missing) <= last or max(missing) - last > FRAME_TOLERANCE:
            raise VideoError(f"{path}: cannot read frame {int(max(missing))}, only {available} frames "
                             "decodable (truncated or corrupt video?)")
        for i in missing:
            got[int(i)] = got[last]
    return np.stack([got[int(i)] for i in indices])


def _read_folder(path: Path, indices: np.ndarray, resize: _Resizer) -> np.ndarray:
    files = list_frames(path)
    got: dict[int, np.ndarray] = {}
    for i in np.unique(indices):
        i = int(i)
        if i >= len(files):
            break
        try:
            with av.open(str(files[i])) as c:
                frame = next(c.decode(video=0))
        except (av.FFmpegError, StopIteration, OSError) as e:
            raise VideoError(f"{files[i]}: cannot decode image ({e})") from None
        got[i] = resize(frame)
    return _fill(path, indices, got, len(files))


def _pts_index(container: av.container.InputContainer, stream: av.VideoStream, key: str):
    """Sorted frame pts and keyframe pts from one demux pass (no decoding), cached per file."""
    if key not in _PTS_INDEX:
        pts, kf = [], []
        for p in container.demux(stream):
            if p.pts is None or not p.size or p.is_discard:  # discard: cut by an edit list, never shown
                continue
            pts.append(p.pts)
            if p.is_keyframe:
                kf.append(p.pts)
        pts.sort()
        kf.sort()
        _PTS_INDEX.put(key, (pts, [bisect.bisect_left(pts, k) for k in kf]))
    return _PTS_INDEX[key]


def _read_seeking(c: av.container.InputContainer, s: av.VideoStream, path: Path, wanted: list[int],
                  resize: _Resizer, threads: int, got: dict[int, np.ndarray]) -> int:
    """Seek to the keyframe before each wanted frame (when one lies past the decoding point) and
    decode from there; returns the number of frames in the file."""
    st = os.stat(path)
    pts, key_idx = _pts_index(c, s, f"{path}:{st.st_size}:{st.st_mtime_ns}")
    pts_to_idx = {p: i for i, p in enumerate(pts)}
    want = set(wanted)
    # single-threaded decoding can drop unneeded non-reference frames (B-frames) for free
    skip = threads <= 1
    cur, packets = -1, None
    for n in wanted:
        if n >= len(pts):
            break
        if n in got:
            continue
        k = key_idx[bisect.bisect_right(key_idx, n) - 1] if key_idx and key_idx[0] <= n else 0
        if packets is None or k > cur + 1:  # a keyframe lies between here and n: jump to it
            c.seek(pts[k], stream=s, backward=True)
            packets = c.demux(s)
        for packet in packets:
            if skip:
                s.codec_context.skip_frame = "DEFAULT" if pts_to_idx.get(packet.pts, -1) in want \
                    or packet.pts is None else "NONREF"
            for frame in s.decode(packet):
                i = pts_to_idx.get(frame.pts)
                if i is None:  # unknown timestamp: the nearest frame at or before it
                    i = max(bisect.bisect_right(pts, frame.pts or 0) - 1, 0)
                cur = max(cur, i)
                if i in want and i not in got:
                    got[i] = resize(frame)
            if n in got or cur > n:
                break
        if n not in got and cur > n:
            raise VideoError(f"{path}: frame {n} could not be decoded")
    return len(pts)


def _read_video(path: Path, indices: np.ndarray, resize: _Resizer, threads: int) -> np.ndarray:
    wanted = sorted({int(i) for i in indices})
    got: dict[int, np.ndarray] = {}
    available = 0
    with av.open(str(path)) as c:
        if not c.streams.video:
            raise VideoError(f"{path}: no video stream")
        s = c.streams.video[0]
        s.thread_count = threads
        if any(f in c.format.name for f in _SEEKABLE):
            available = _read_seeking(c, s, path, wanted, resize, threads, got)
        else:  # decode in order and count (AVI timestamps are unreliable)
            want, last = set(wanted), wanted[-1]
            for i, frame in enumerate(c.decode(s)):
                available = i + 1
                if i in want:
                    got[i] = resize(frame)
                if i >= last:
                    break
    return _fill(path, indices, got, available)


def read_clip(path: str | os.PathLike, indices: Sequence[int] | np.ndarray, size_fn: SizeFn | None = None,
              threads: int = 1) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode frames ``indices`` (any order, repeats allowed) of a video file or frame folder.

    ``size_fn(src_w, src_h) -> (w, h)`` picks the decode size once, from the first decoded frame
    (resizing happens in swscale, so big frames are never converted at full resolution); every
    frame of the clip gets that size. Returns (len(indices) x h x w x 3 uint8 RGB, (src_w, src_h)
    = the size ``size_fn`` was given). Missing, truncated or corrupt input raises
    :class:`deformact.errors.VideoError` naming the file.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    resize = _Resizer(size_fn)
    if path.is_dir():
        frames = _read_folder(path, indices, resize)
    elif not path.is_file():
        raise VideoError(f"{path}: video not found")
    else:
        try:
            frames = _read_video(path, indices, resize, threads)
        except VideoError:
            raise
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
            raise VideoError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from None
    if resize.src is None:  # not reached: _fill raises when no frame was decoded
        raise VideoError(f"{path}: no frame decoded")
    return frames, resize.src
