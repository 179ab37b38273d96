"""Files in and out: videos and frame folders (PyAV) and pyskl pose pickles.

* :mod:`deformact.io.video`: :data:`VIDEO_EXTS` (the one extension list), :func:`find_media`,
  :func:`list_videos`, :func:`probe` / :class:`VideoInfo`, :func:`count_frames`,
  :func:`iter_frames` and :func:`read_frames` (a whole video, resized), :func:`frame_to_rgb`
* :mod:`deformact.io.video_read`: :func:`read_clip`, the frames at given indices (seeking)
* :mod:`deformact.io.video_write`: :func:`write_video`, a video file or a folder of images
* :mod:`deformact.io.staged`: :func:`staged`, a frame source and stages of work in threads of their
  own (decoding beside pose estimation), results in order
* :mod:`deformact.io.pyskl`: :func:`load_pyskl` (restricted unpickler: runs no code from the
  file) and :func:`save_pyskl`
* :mod:`deformact.io.jsonout`: :func:`~deformact.io.jsonout.dumps`, strict JSON for every JSON
  file or line deformact writes (a NaN or inf is one error naming the output and the key, never
  ``NaN`` in the file)

Every failure is a :class:`deformact.errors.VideoError` or :class:`deformact.errors.DataError`
naming the file. Submodules load lazily (PyAV only when a video is touched).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VIDEO_EXTS": "video", "IMAGE_EXTS": "video", "VideoInfo": "video", "probe": "video",
    "count_frames": "video", "find_media": "video", "list_videos": "video", "list_frames": "video",
    "iter_frames": "video", "read_frames": "video", "frame_to_rgb": "video", "output_size": "video",
    "open_video": "video", "open_container": "video",
    "read_clip": "video_read", "FRAME_TOLERANCE": "video_read",
    "write_video": "video_write",
    "load_pyskl": "pyskl", "save_pyskl": "pyskl", "safe_loads": "pyskl", "SafeUnpickler": "pyskl",
    "save_scores": "scores", "load_scores": "scores", "RunScores": "scores", "SCORES_FILE": "scores",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
