"""`deformact info`: parameters and FLOPs per module of a preset."""

from __future__ import annotations

import argparse
import json
import sys

from deformact.models import build_model
from deformact.models.flops import format_report, model_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=["paper", "demo"])
    parser.add_argument("--num-classes", type=int, default=60)
    parser.add_argument("--depth", type=int, default=2, help="module levels to break down")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model field, e.g. --set rgb_attention=full (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    import yaml

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"deformact info: error: --set wants FIELD=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    try:
        model = build_model(args.preset, num_classes=args.num_classes, **overrides)
    except ValueError as e:
        print(f"deformact info: error: {e}", file=sys.stderr)
        return 2
    report = model_report(model, depth=args.depth)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
