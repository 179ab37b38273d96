"""2D poses of many videos into one pyskl file (``deformact extract-poses``), and the estimator
set-up shared with :mod:`deformact.tools.inference`."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deformact.errors import DataError, InferenceError, VideoError


def make_estimator(name: str = "mediapipe", max_persons: int = 2, min_score: float | None = None) -> Any:
    """The named pose estimator (mediapipe gets its cascade size and score threshold). A missing
    package or an unknown name is an :class:`InferenceError` (one line on the command line)."""
    from deformact.pose import build_estimator

    kwargs: dict[str, Any] = {}
    if name in ("mediapipe", "mediapipe-multi"):
        kwargs["max_persons"] = max_persons
        if min_score is not None:
            kwargs["min_score"] = min_score
    try:
        return build_estimator(name, **kwargs)
    except (ImportError, ValueError, TypeError, AttributeError) as e:
        raise InferenceError(str(e)) from None


def find_videos(inputs: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(video, frame_dir) of every video in ``inputs`` (files or folders, recursive); an error when
    there is none or when two would share a frame_dir."""
    from deformact.io import list_videos

    videos = list_videos(list(inputs))
    if not videos:
        raise DataError(f"no video files found in {' '.join(map(str, inputs))}")
    seen: dict[str, Path] = {}
    for video, frame_dir in videos:
        if frame_dir in seen:
            raise DataError(f"{seen[frame_dir]} and {video} would share frame_dir {frame_dir!r}; "
                            "pass their common parent folder instead")
        seen[frame_dir] = video
    return videos


def extract_poses(inputs: Sequence[str | Path], out: str | Path, *, estimator: str = "mediapipe",
                  max_persons: int = 2, max_side: int = 640, min_score: float = 0.3, progress: bool = True,
                  echo: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> list[dict]:
    """Extract every video of ``inputs`` and write the annotations to ``out`` (a pyskl pickle:
    ``{"split": {}, "annotations": [...]}``). A video that cannot be read is reported through
    ``warn("error: ...")`` and skipped; nobody found in a video, through ``warn("warning: ...")``.
    Raises :class:`VideoError` after writing the good ones when any video failed."""
    from deformact.io import save_pyskl
    from deformact.pose.extract import NoPersonWarning, extract_video
    from deformact.tools.outpaths import check_output_file

    if max_persons < 1:
        raise InferenceError("--max-persons must be >= 1")
    videos = find_videos(inputs)
    check_output_file(out, [v for v, _ in videos], "pose file")  # before the extraction, not after
    est = make_estimator(estimator, max_persons, min_score)
    annotations, failed, frames, t0 = [], 0, 0, time.perf_counter()
    with est:
        for video, frame_dir in videos:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NoPersonWarning)
                try:
                    ann = extract_video(video, est, max_persons, max_side, progress=progress, frame_dir=frame_dir)
                except VideoError as e:
                    warn(f"error: {e}")
                    failed += 1
                    continue
            for w in caught:
                if issubclass(w.category, NoPersonWarning):
                    warn(f"warning: {w.message}")
            annotations.append(ann)
            frames += ann["total_frames"]
            present = (ann["keypoint_score"].max(-1) > 0).sum(1).tolist()
            echo(f"{video}: {ann['total_frames']} frames, frames with each person: {present}")
    elapsed = time.perf_counter() - t0
    if annotations:
        try:
            save_pyskl({"split": {}, "annotations": annotations}, out)
        except OSError as e:
            raise InferenceError(f"cannot write pose file {out}: {e.strerror or e}") from None
        echo(f"wrote {len(annotations)} annotation(s) to {out} ({frames} frames, "
             f"{frames / max(elapsed, 1e-9):.1f} frames/s)")
    if failed:
        raise VideoError(f"{failed} of {len(videos)} video(s) failed")
    return annotations


__all__ = ["extract_poses", "find_videos", "make_estimator"]
