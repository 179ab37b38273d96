"""``deformact train -c CONFIG [--set key=value]... --out DIR [--resume]`` (DDP under torchrun)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help="run config: a YAML file or a shipped config's name (deformact/configs/, e.g. synthetic)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set train.lr=1e-3 (repeatable; YAML values)")
    parser.add_argument("--out", required=True, help="output folder: checkpoints, logs, metrics, plots")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (exactly)")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import load_config, run
    from deformact.engine.api import RUN_OUTPUTS
    from deformact.engine.config import config_path

    cfg = load_config(args.config, args.overrides)
    run(cfg, args.out, resume=args.resume, inputs=[("-c", config_path(args.config))])
    if os.environ.get("RANK", "0") == "0":
        print(f"outputs in {args.out}: {', '.join(RUN_OUTPUTS)}")
    return 0
