"""``deformact test -c CONFIG --ckpt PATH [--clips N] --out DIR``: multi-clip evaluation."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True, help="YAML run config giving the test split")
    parser.add_argument("--ckpt", required=True, help="checkpoint (best.pt / last.pt)")
    parser.add_argument("--clips", type=int, default=None, metavar="N",
                        help="clips per video, averaged (default: data.num_clips of the config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set data.ann_file=ntu60.pkl (repeatable)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and confusion_matrix.png")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import load_config, test, user_errors

    if args.clips is not None and args.clips < 1:
        print("deformact test: error: --clips must be >= 1", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides)
        test(cfg, args.ckpt, args.out, num_clips=args.clips)
    except user_errors() as e:
        print(f"deformact test: error: {e}", file=sys.stderr)
        return 2
    return 0
