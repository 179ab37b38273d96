"""``deformact demo [--out DIR]``: synthetic cross-modal set -> train -> test -> plots (the main job).

Runs the shipped ``synthetic`` config (``deformact/configs/synthetic.yaml``) on CPU in a few
minutes and prints where everything went.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from deformact.engine.config import CONFIG_DIR

CONFIG = CONFIG_DIR / "synthetic.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a demo config key, e.g. --set epochs=4 (repeatable)")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import load_config, resolve_device, run

    tic = time.perf_counter()
    out = Path(args.out)
    cfg = load_config(CONFIG, args.overrides)
    print(f"deformact demo: {CONFIG} -> {out}  (synthetic RGB + pose set, {cfg['epochs']} epochs on "
          f"{resolve_device(cfg['train']['device'])})", flush=True)
    metrics = run(cfg, out, overwrite=True)
    wall = time.perf_counter() - tic
    print(f"\ndemo finished in {wall:.0f} s: test top-1 {metrics['top1']:.3f}, top-5 {metrics['top5']:.3f}, "
          f"mean class acc {metrics['mean_class_acc']:.3f}")
    for name, what in [("metrics.json", "final test metrics"), ("best.pt", "best checkpoint"),
                       ("last.pt", "last checkpoint (resume with deformact train --resume)"),
                       ("confusion_matrix.png", "confusion matrix"), ("curves.png", "training curves"),
                       ("log.jsonl", "one line per epoch"), ("tb", "TensorBoard: tensorboard --logdir " + str(out))]:
        print(f"  {out / name}  {what}")
    return 0
