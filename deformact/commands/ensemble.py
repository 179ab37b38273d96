"""``deformact ensemble RUN_DIR... [--weights w1,w2,...] --out DIR``: fuse saved test scores."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or scores.npz files) to fuse")
    parser.add_argument("--weights", default=None, metavar="W1,W2,...",
                        help="one weight per run, comma-separated (default: equal weights)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, confusion_matrix.png, per_class.md")
    parser.add_argument("--search-weights", action="store_true",
                        help="first choose the weights on these runs' split (use validation runs, never test): "
                             "each from 0, 0.5, 1, 1.5, 2; best top-1, then mean class accuracy, then closest to equal")


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """``"1,1,0.5"`` -> [1.0, 1.0, 0.5]; a DataError for anything else."""
    from deformact.errors import DataError

    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise DataError(f"--weights must be comma-separated numbers, got {text!r}") from None
    if len(weights) != count:
        raise DataError(f"--weights has {len(weights)} values for {count} runs")
    return weights


def main(args: argparse.Namespace) -> int:
    from deformact.tools.ensemble import check_ensemble_out, ensemble, load_scores, search_weights

    check_ensemble_out(args.runs, args.out)  # before any score is read (docs/FAILURES.md)
    weights = parse_weights(args.weights, len(args.runs))
    if args.search_weights:
        weights, found = search_weights([load_scores(r) for r in args.runs])
        print(f"searched weights on split {load_scores(args.runs[0]).split!r}: {','.join(f'{w:g}' for w in weights)} "
              f"(top-1 {found['top1']:.4f}, mean class acc {found['mean_class_acc']:.4f})")
    m = ensemble(args.runs, args.out, weights)
    for r in m["runs"]:
        print(f"{r['run']}: top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  mean class acc {r['mean_class_acc']:.4f}")
    print(f"ensemble ({len(m['runs'])} runs, weights {m['weights']}): top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  "
          f"mean class acc {m['mean_class_acc']:.4f}  ({m['num_samples']} videos) -> {args.out}")
    return 0
