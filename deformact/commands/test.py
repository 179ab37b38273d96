"""``deformact test -c CONFIG --ckpt PATH [--clips N] --out DIR``: multi-clip evaluation."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", required=True,
                        help="run config giving the test split: a YAML file or a shipped config's name")
    parser.add_argument("--ckpt", required=True, help="checkpoint (best.pt / last.pt)")
    parser.add_argument("--clips", type=int, default=None, metavar="N",
                        help="clips per video, averaged (default: data.num_clips of the config)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config key, e.g. --set data.ann_file=ntu60.pkl (repeatable)")
    parser.add_argument("--out", required=True, help="folder for metrics.json and confusion_matrix.png")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import load_config, test
    from deformact.engine.config import config_path
    from deformact.errors import ConfigError

    if args.clips is not None and args.clips < 1:
        raise ConfigError("--clips must be >= 1")
    cfg = load_config(args.config, args.overrides)
    test(cfg, args.ckpt, args.out, num_clips=args.clips, inputs=[("-c", config_path(args.config))])
    return 0
