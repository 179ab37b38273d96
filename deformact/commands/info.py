"""``deformact info``: parameters and FLOPs per module of a preset."""

from __future__ import annotations

import argparse

from deformact.io import jsonout
from deformact.models import list_presets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper", choices=list_presets())
    parser.add_argument("--num-classes", type=int, default=60)
    parser.add_argument("--depth", type=int, default=2, help="module levels to break down")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a model field, e.g. --set rgb_attention=full or --set model.depth=2 "
                             "(repeatable; the grammar of train --set, bare names meaning model.*)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--backbones", action="store_true",
                        help="also compare the RGB backbone family at these shapes: params, GFLOPs per clip and "
                             "the forward + backward time of a batch of 8 on this CPU")


def main(args: argparse.Namespace) -> int:
    from deformact.engine.config import apply_model_overrides
    from deformact.models import build_model
    from deformact.models.flops import format_report, model_report

    config = apply_model_overrides(args.preset, args.set, bare=True, num_classes=args.num_classes)
    model = build_model(config=config)
    report = model_report(model, depth=args.depth)
    if args.backbones:
        report["backbones"] = backbone_table(config)
    print(jsonout.dumps(report, indent=1) if args.json else format_report(report))
    if args.backbones and not args.json:
        print(f"\n{'backbone':10s} {'params':>10s} {'GFLOPs':>8s} {'fwd+bwd ms (8 clips)':>22s}")
        for row in report["backbones"]:
            print(f"{row['backbone']:10s} {row['params']:10,d} {row['gflops']:8.3f} {row['step_ms']:22.0f}")
    return 0


def backbone_table(config, batch: int = 8) -> list[dict]:
    """:func:`deformact.models.backbones.backbone_figures` of every backbone at ``config``'s shapes."""
    import dataclasses

    from deformact.models.backbones import backbone_figures
    from deformact.models.config import BACKBONES

    return [backbone_figures(dataclasses.replace(config, backbone=name, backbone_weights=None), batch=batch)
            for name in BACKBONES]
