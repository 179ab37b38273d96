"""``deformact extract-poses VIDEO_OR_DIR ... -o poses.pkl``: 2D poses into a pyskl pickle.

One annotation per video (frame_dir = the file stem, or the path below a folder given; label -1;
keypoints in the video's pixels; COCO-17 joints). Read the result back with
``deformact.data.load_pyskl`` or train on it with ``data.type: pyskl``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from deformact.pose import VideoError, available_estimators, build_estimator, list_videos
from deformact.pose.extract import NoPersonWarning, extract_video

PROG = "deformact extract-poses"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files or folders (recursive)")
    parser.add_argument("-o", "--out", required=True, help="output pyskl pickle (e.g. poses.pkl)")
    parser.add_argument("--max-persons", type=int, default=2, help="people per frame, M (default 2)")
    parser.add_argument("--estimator", default="mediapipe",
                        help=f"pose estimator: {', '.join(available_estimators())} or package.module:Class")
    parser.add_argument("--max-side", type=int, default=640,
                        help="decode frames at most this many pixels long (default 640)")
    parser.add_argument("--min-score", type=float, default=0.3,
                        help="drop people whose mean joint score is lower (default 0.3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def save_annotations(path: str | Path, annotations: list[dict]) -> None:
    """Write annotations as a pyskl pickle ({"split": {}, "annotations": [...]})."""
    from deformact.data import save_pyskl

    save_pyskl({"split": {}, "annotations": annotations}, path)


def make_estimator(name: str, max_persons: int, min_score: float):
    """Build the named estimator; mediapipe gets its cascade size and score threshold."""
    if name == "mediapipe":
        return build_estimator(name, max_persons=max_persons, min_score=min_score)
    return build_estimator(name)


def main(args: argparse.Namespace) -> int:
    if args.max_persons < 1:
        print(f"{PROG}: error: --max-persons must be >= 1", file=sys.stderr)
        return 2
    videos = list_videos(args.inputs)
    if not videos:
        print(f"{PROG}: error: no video files found in {' '.join(args.inputs)}", file=sys.stderr)
        return 2
    seen: dict[str, Path] = {}
    for video, frame_dir in videos:
        if frame_dir in seen:
            print(f"{PROG}: error: {seen[frame_dir]} and {video} would share frame_dir {frame_dir!r}; "
                  "pass their common parent folder instead", file=sys.stderr)
            return 2
        seen[frame_dir] = video
    try:
        estimator = make_estimator(args.estimator, args.max_persons, args.min_score)
    except (ImportError, ValueError, TypeError, AttributeError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    annotations, failed, frames, t0 = [], 0, 0, time.perf_counter()
    with estimator:
        for video, frame_dir in videos:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", NoPersonWarning)
                try:
                    ann = extract_video(video, estimator, args.max_persons, args.max_side,
                                        progress=not args.no_progress, frame_dir=frame_dir)
                except VideoError as e:
                    print(f"{PROG}: error: {e}", file=sys.stderr)
                    failed += 1
                    continue
            for w in caught:
                if issubclass(w.category, NoPersonWarning):
                    print(f"{PROG}: warning: {w.message}", file=sys.stderr)
            annotations.append(ann)
            frames += ann["total_frames"]
            present = (ann["keypoint_score"].max(-1) > 0).sum(1).tolist()
            print(f"{video}: {ann['total_frames']} frames, frames with each person: {present}")
    elapsed = time.perf_counter() - t0
    if annotations:
        save_annotations(args.out, annotations)
        print(f"wrote {len(annotations)} annotation(s) to {args.out} "
              f"({frames} frames, {frames / max(elapsed, 1e-9):.1f} frames/s)")
    if failed:
        print(f"{PROG}: error: {failed} of {len(videos)} video(s) failed", file=sys.stderr)
        return 2
    return 0
