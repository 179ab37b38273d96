"""``deformact ablate -c CONFIG --out DIR [--seeds 0 1 2] [--rows ...] [--set key=value]...``.

Trains and tests the full model and each ablation row of :mod:`deformact.tools.ablation` with the
same seeds; writes ``DIR/ablation.json`` and ``DIR/ablation.md``. Finished runs are reused;
``--report`` trains nothing and tabulates the runs finished so far.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from deformact.tools.ablation import ROW_NAMES

    parser.add_argument("-c", "--config", required=True,
                        help="base run config: a YAML file or a shipped config's name (e.g. synthetic)")
    parser.add_argument("--out", required=True, help="output folder: runs/, ablation.json, ablation.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                        help="training seeds, the same for every row (default: 0 1 2)")
    parser.add_argument("--rows", nargs="+", default=None, choices=ROW_NAMES, metavar="ROW",
                        help=f"only these rows (default: all): {', '.join(ROW_NAMES)}")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: tabulate the runs already finished in --out (rows and seeds "
                             "not finished are left out)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a base config key for every row, e.g. --set epochs=4 (repeatable)")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import load_config
    from deformact.tools.ablation import format_table, run_ablation

    summary = run_ablation(load_config(args.config, args.overrides), args.out, seeds=args.seeds, rows=args.rows,
                           train=not args.report)
    print(format_table(summary))
    return 0
