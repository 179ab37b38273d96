"""``deformact demo [--out DIR]``: synthetic cross-modal set -> train -> test -> plots (the main job).

Runs ``configs/synthetic.yaml`` (the built-in copy in :data:`DEMO_CONFIG` when deformact is
installed without its configs folder) on CPU in a few minutes and prints where everything went.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic.yaml"

# Keep identical to configs/synthetic.yaml (tests/test_engine_cli.py checks it).
DEMO_CONFIG = {
    "model": {"preset": "demo"},
    "data": {"type": "synthetic", "train_split": "train", "test_split": "test", "frames": 8, "image_size": 64,
             "num_clips": 1},
    "train": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "batch_size": 16, "warmup_epochs": 1,
              "label_smoothing": 0.1, "clip_grad": 1.0, "num_workers": 0},
    "epochs": 14,
    "seed": 0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a demo config key, e.g. --set epochs=4 (repeatable)")


def main(args: argparse.Namespace) -> int:
    from deformact.engine import apply_overrides, load_config, run, user_errors, validate_config

    tic = time.perf_counter()
    out = Path(args.out)
    try:
        if CONFIG.is_file():
            cfg, source = load_config(CONFIG, args.overrides), str(CONFIG)
        else:
            cfg, source = validate_config(apply_overrides(DEMO_CONFIG, args.overrides)), "built-in demo config"
        device = cfg["train"]["device"]
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"deformact demo: {source} -> {out}  (synthetic RGB + pose set, {cfg['epochs']} epochs on "
              f"{device})", flush=True)
        metrics = run(cfg, out, overwrite=True)
    except user_errors() as e:
        print(f"deformact demo: error: {e}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - tic
    print(f"\ndemo finished in {wall:.0f} s: test top-1 {metrics['top1']:.3f}, top-5 {metrics['top5']:.3f}, "
          f"mean class acc {metrics['mean_class_acc']:.3f}")
    for name, what in [("metrics.json", "final test metrics"), ("best.pt", "best checkpoint"),
                       ("last.pt", "last checkpoint (resume with deformact train --resume)"),
                       ("confusion_matrix.png", "confusion matrix"), ("curves.png", "training curves"),
                       ("log.jsonl", "one line per epoch"), ("tb", "TensorBoard: tensorboard --logdir " + str(out))]:
        print(f"  {out / name}  {what}")
    return 0
