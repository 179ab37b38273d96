"""``deformact info``: parameters and FLOPs per module of a preset."""

from __future__ import annotations

import argparse
import json

from deformact.models import list_presets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=list_presets())
    parser.add_argument("--num-classes", type=int, default=60)
    parser.add_argument("--depth", type=int, default=2, help="module levels to break down")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model field, e.g. --set rgb_attention=full or --set model.depth=2 "
                             "(repeatable; the grammar of train --set, bare names meaning model.*)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    from deformact.engine.config import apply_model_overrides
    from deformact.models import build_model
    from deformact.models.flops import format_report, model_report

    config = apply_model_overrides(args.preset, args.set, bare=True, num_classes=args.num_classes)
    model = build_model(config=config)
    report = model_report(model, depth=args.depth)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
