"""Data-path benchmark: pose-only items/s per core and 16-frame 224^2 RGB+pose clips/s on 2 cores.

    .venv/bin/python scripts/bench_data.py [--quick] [--workers 2] [--real-video PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys

from deformact.data.benchmark import loader_throughput, real_video_throughput


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the RGB figure (= cores)")
    p.add_argument("--real-video", help="also time 16-frame clips from this video file (e.g. a 1080p NTU clip)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    out = loader_throughput(quick=args.quick, workers=args.workers)
    if args.real_video:
        out["real_video"] = args.real_video
        secs = 3.0 if args.quick else 8.0
        out["real_video_clips_per_s_1core"] = round(real_video_throughput(args.real_video, secs), 2)
    for k, v in out.items():
        print(f"{k:36s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
