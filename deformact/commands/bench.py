"""`deformact bench`: time, memory and FLOP/s of the model and the data path on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=["paper", "demo"])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of time vs T, deformable vs full")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no T=64")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")


def main(args: argparse.Namespace) -> int:
    from deformact.benchmark import plot_time_vs_frames, run_all

    result = run_all(args.preset, args.device, args.quick, compile=args.compile)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_time_vs_frames(result, args.plot)}")
    return 0
