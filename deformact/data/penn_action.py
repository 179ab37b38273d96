"""Penn Action (Zhang et al., ICCV 2013) native release -> pyskl format.

``ROOT/labels/NNNN.mat`` (x, y, visibility: nframes x 13; action; train = 1 / -1; dimensions =
(h, w, nframes)) becomes one pyskl annotation per clip: keypoint 1 x T x 13 x 2 (pixels),
keypoint_score = visibility, labels 0..14 in alphabetical action order, splits ``train``/``test``
(official: 1,258 / 1,068). ``frame_dir`` is the clip id ``NNNN``, matching ``ROOT/frames/NNNN/``,
so ``video_root=ROOT/frames`` gives the RGB frames.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from deformact.errors import DataError
from deformact.io.pyskl import save_pyskl

PENN_ACTIONS = ("baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk", "golf_swing",
                "jump_rope", "jumping_jacks", "pullup", "pushup", "situp", "squat", "strum_guitar",
                "tennis_forehand", "tennis_serve")
_FIELDS = ["x", "y", "visibility", "action", "train", "dimensions"]


def _read_mat(path: Path) -> dict[str, Any]:
    try:
        m = scipy.io.loadmat(str(path), variable_names=_FIELDS)
        x, y, vis = (np.asarray(m[k], dtype=np.float32) for k in ("x", "y", "visibility"))
        action = str(np.asarray(m["action"]).reshape(-1)[0]).strip()
        train = int(np.asarray(m["train"]).reshape(-1)[0])
        h, w = (int(d) for d in np.asarray(m["dimensions"]).reshape(-1)[:2])
    except Exception as e:  # scipy raises many kinds (MatReadError, ValueError, ...) on a bad file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not a Penn Action label file ({type(e).__name__}: {reason})") from None
    if x.ndim != 2 or x.shape[1] != 13 or y.shape != x.shape or vis.shape != x.shape or x.shape[0] < 1:
        raise DataError(f"{path}: x, y, visibility must be nframes x 13, got {x.shape} {y.shape} {vis.shape}")
    if action not in PENN_ACTIONS:
        raise DataError(f"{path}: unknown action {action!r}")
    if train not in (1, -1):
        raise DataError(f"{path}: 'train' must be 1 or -1, got {train}")
    return {
        "frame_dir": path.stem,
        "label": PENN_ACTIONS.index(action),
        "total_frames": int(x.shape[0]),
        "img_shape": (h, w),
        "original_shape": (h, w),
        "keypoint": np.stack([x, y], -1)[None],
        "keypoint_score": np.clip(vis, 0, 1)[None],
        "_train": train == 1,
    }


def _read_or_reason(path: Path) -> dict[str, Any] | str:
    try:
        return _read_mat(path)
    except DataError as e:
        return str(e)


def convert_penn_action(root: str | os.PathLike, out: str | os.PathLike | None = None,
                        workers: int = 1, skip_bad: bool = False) -> dict[str, Any]:
    """Convert ``ROOT/labels/*.mat`` to a pyskl dict (and write it to ``out`` when given).

    ``workers`` > 1 reads the .mat files in that many processes (0 = one per CPU, at most 8); one
    process already converts the 2,326 clips in about a second. A label file that cannot be read
    (empty, text, truncated, wrong fields) is a :class:`DataError` naming it, or with
    ``skip_bad`` left out: named in a warning and listed under the dict's ``"skipped_files"``.
    ``out`` is checked before any file is read.
    """
    from deformact.io.pyskl import check_output_path

    if out is not None:
        check_output_path(out)
    labels = Path(root) / "labels"
    if not labels.is_dir():
        raise DataError(f"{labels}: not found (expected the Penn Action release: ROOT/labels/NNNN.mat)")
    try:
        files = sorted(labels.glob("*.mat"))
    except OSError as e:
        raise DataError(f"{labels}: cannot list ({e.strerror})") from None
    if not files:
        raise DataError(f"{labels}: no .mat files")
    if workers == 0:
        workers = min(8, os.cpu_count() or 1)
    if workers > 1 and len(files) > 200:
        with ProcessPoolExecutor(workers) as ex:
            read = list(ex.map(_read_or_reason, files, chunksize=64))
    else:
        read = [_read_or_reason(f) for f in files]
    bad = [r for r in read if isinstance(r, str)]
    if bad and not skip_bad:
        more = f" (and {len(bad) - 1} more; --skip-bad leaves them out)" if len(bad) > 1 else \
            " (--skip-bad leaves such files out)"
        raise DataError(bad[0] + more)
    for reason in bad:
        warnings.warn(f"skipped {reason}", stacklevel=2)
    anns = [r for r in read if not isinstance(r, str)]
    if not anns:
        raise DataError(f"{labels}: none of the {len(files)} .mat files is a Penn Action label file")
    split = {"train": [a["frame_dir"] for a in anns if a["_train"]],
             "test": [a["frame_dir"] for a in anns if not a["_train"]]}
    for a in anns:
        del a["_train"]
    data = {"split": split, "annotations": anns, "class_names": list(PENN_ACTIONS)}
    if bad:
        data["skipped_files"] = [r.split(": not a Penn Action", 1)[0] for r in bad]
    if out is not None:
        save_pyskl(data, out)
    return data
