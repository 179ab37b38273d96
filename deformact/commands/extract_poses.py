"""``deformact extract-poses VIDEO_OR_DIR ... -o poses.pkl``: 2D poses into a pyskl pickle.

One annotation per video (frame_dir = the file stem, or the path below a folder given; label -1;
keypoints in the video's pixels; COCO-17 joints). Read the result back with
``deformact.data.load_pyskl`` or train on it with ``data.type: pyskl``.
"""

from __future__ import annotations

import argparse
import sys

PROG = "deformact extract-poses"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deformact.pose import available_estimators

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


def main(args: argparse.Namespace) -> int:
    from deformact.tools.poses import extract_poses

    extract_poses(args.inputs, args.out, estimator=args.estimator, max_persons=args.max_persons,
                  max_side=args.max_side, min_score=args.min_score, progress=not args.no_progress,
                  warn=lambda msg: print(f"{PROG}: {msg}", file=sys.stderr))
    return 0
