"""``deformact bench``: time, memory and FLOP/s of the model and the data path on this machine.

``--data-only`` measures just the data loader (pose items/s per core, 16-frame 224² RGB+pose
clips/s through ``--workers`` processes, optionally a real video with ``--real-video``);
``--data-only --ntu-scale`` instead times an NTU-60-sized pose file (build time, clips/s through
``--workers`` processes, memory as PSS; :mod:`deformact.tools.data_scale`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deformact.io import jsonout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deformact.models import list_presets

    parser.add_argument("--preset", default="paper", choices=list_presets())
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    parser.add_argument("--json", type=Path, default=None, help="write all figures to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of time vs T, the four RGB attention modes")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no T=64")
    parser.add_argument("--frames", type=lambda v: [int(t) for t in v.split(",")], default=None,
                        help="frames T of the mode sweep, comma-separated (default 8,16,32,64)")
    parser.add_argument("--accuracy", type=Path, default=None, metavar="DIR",
                        help="also train the deformable and grid models briefly at T=32 on the synthetic set, in DIR")
    parser.add_argument("--accuracy-epochs", type=int, default=6, help="epochs of each --accuracy training (6)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    parser.add_argument("--data-only", action="store_true", help="only the data-loader figures")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the RGB figure (default 2)")
    parser.add_argument("--real-video", type=Path, default=None,
                        help="also time 16-frame clips decoded from this video (e.g. a 1080p NTU clip)")
    parser.add_argument("--ntu-scale", action="store_true",
                        help="with --data-only: an NTU-60-sized pose file (56,880 clips): build time, clips/s, PSS")
    parser.add_argument("--ntu-clips", type=int, default=56_880, help="clips in the --ntu-scale file (56,880)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="--ntu-scale: folder for the generated file (kept for the next run; default $TMPDIR)")


def main(args: argparse.Namespace) -> int:
    from deformact.errors import ConfigError
    from deformact.tools.benchmark import plot_time_vs_frames, run_all, run_data

    if args.ntu_scale and not args.data_only:
        raise ConfigError("--ntu-scale goes with --data-only")
    if args.data_only:
        if args.plot:
            raise ConfigError("--plot needs the model figures (drop --data-only)")
        if args.ntu_scale:
            from deformact.tools.data_scale import ntu_scale_bench

            result = ntu_scale_bench(args.workdir, args.ntu_clips, args.workers, 0.5 if args.quick else 1.0)
        else:
            result = run_data(args.quick, args.workers, args.real_video)
        for key, value in result.items():
            print(f"{key:36s} {value}")
    else:
        result = run_all(args.preset, args.device, args.quick, compile=args.compile, workers=args.workers,
                         real_video=args.real_video, frames=args.frames, accuracy_dir=args.accuracy,
                         accuracy_epochs=args.accuracy_epochs)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(jsonout.dumps(result, what=str(args.json), indent=1))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot_time_vs_frames(result, args.plot)}")
    return 0
