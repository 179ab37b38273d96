"""``deformact prepare``: convert a dataset release to a pyskl pickle, or add a validation split.

    deformact prepare penn-action ROOT -o penn_action.pkl      # ROOT holds labels/ (and frames/)
    deformact prepare penn-holdout penn_action.pkl -o penn_holdout.pkl [--val-fraction 0.15]

``penn-holdout`` adds ``val`` (a deterministic, class-stratified part of ``train``) and
``train_part`` (the rest) to a pyskl file, so recipes are chosen without looking at ``test``
(docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["penn-action", "penn-holdout"],
                        help="penn-action: convert the release in ROOT; penn-holdout: add val/train_part to "
                             "the pyskl file ROOT")
    parser.add_argument("root", help="penn-action: the folder with labels/ (and optionally frames/); "
                                     "penn-holdout: a pyskl .pkl with a 'train' split")
    parser.add_argument("-o", "--out", required=True, help="output pyskl .pkl")
    parser.add_argument("--workers", type=int, default=1, help="penn-action: processes reading the files "
                                                               "(0 = one per CPU)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="penn-action: leave out label files that cannot be read (named and counted) "
                             "instead of stopping")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="penn-holdout: share of each class held out (0.15)")
    parser.add_argument("--seed", type=int, default=0, help="penn-holdout: seed of the draw (0)")
    parser.add_argument("--invisible-score", type=float, default=0.0,
                        help="penn-holdout: score for occluded (visibility 0) joints so that their guessed "
                             "position is kept, e.g. 0.5; 0 (default) keeps the converter's scores")


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if args.dataset == "penn-holdout":
        from deformact.data import add_holdout_split

        data = add_holdout_split(args.root, args.out, val_fraction=args.val_fraction, seed=args.seed,
                                 invisible_score=args.invisible_score or None)
        print(f"wrote {args.out}: " + " / ".join(f"{len(v):,} {k}" for k, v in data["split"].items()))
        return 0

    from deformact.data import convert_penn_action

    data = convert_penn_action(args.root, args.out, workers=args.workers, skip_bad=args.skip_bad)
    counts = " / ".join(f"{len(v):,} {k}" for k, v in data["split"].items())
    print(f"wrote {args.out}: {counts} clips, {len(data['class_names'])} classes "
          f"({time.perf_counter() - t0:.1f} s)")
    if data.get("skipped_files"):
        print(f"skipped {len(data['skipped_files'])} unreadable label file(s): " + ", ".join(data["skipped_files"]))
    frames = Path(args.root) / "frames"
    if frames.is_dir():
        print(f"RGB frames found: use data.video_root={frames}")
    return 0
