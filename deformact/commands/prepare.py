"""`deformact prepare`: convert a dataset release to a pyskl pickle.

    deformact prepare penn-action ROOT -o penn_action.pkl   # ROOT holds labels/ (and frames/)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["penn-action"], help="which release ROOT holds")
    parser.add_argument("root", help="dataset root (Penn Action: the folder with labels/ and optionally frames/)")
    parser.add_argument("-o", "--out", required=True, help="output pyskl .pkl")
    parser.add_argument("--workers", type=int, default=1, help="processes reading the files (0 = one per CPU)")


def main(args: argparse.Namespace) -> int:
    from deformact.data import DataError, convert_penn_action

    t0 = time.perf_counter()
    try:
        data = convert_penn_action(args.root, args.out, workers=args.workers)
    except (DataError, OSError) as e:
        print(f"deformact prepare: error: {e}", file=sys.stderr)
        return 2
    counts = " / ".join(f"{len(v):,} {k}" for k, v in data["split"].items())
    print(f"wrote {args.out}: {counts} clips, {len(data['class_names'])} classes "
          f"({time.perf_counter() - t0:.1f} s)")
    frames = Path(args.root) / "frames"
    if frames.is_dir():
        print(f"RGB frames found: use data.video_root={frames}")
    return 0
