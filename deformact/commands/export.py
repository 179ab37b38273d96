"""``deformact export --ckpt PATH --onnx model.onnx``: ONNX export, checked in onnxruntime.

Inputs are named as the model has them (``rgb``, ``pose``, ``person_mask``; those its modality
uses) with a dynamic batch axis; the output is ``logits``. The command runs the file in
onnxruntime on random inputs and prints the max difference to PyTorch (must be <= --atol).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

PROG = "deformact export"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt)")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |onnxruntime - torch| allowed (1e-4)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch axis at 2 instead of dynamic")


def main(args: argparse.Namespace) -> int:
    from deformact.engine.checkpoint import CheckpointError, load_checkpoint

    try:
        from deformact.export import check_onnx, export_onnx, input_names
    except ImportError as e:
        print(f"{PROG}: error: {e.name or e} is missing; install the export extra: "
              ".venv/bin/pip install -e '.[export]'", file=sys.stderr)
        return 2
    try:
        model = load_checkpoint(args.ckpt, map_location="cpu")
    except CheckpointError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):  # the exporter narrates every step
            export_onnx(model, args.onnx, opset=args.opset, dynamic_batch=not args.static_batch)
    except ImportError as e:
        print(f"{PROG}: error: {e.name or e} is missing; install the export extra: "
              ".venv/bin/pip install -e '.[export]'", file=sys.stderr)
        return 2
    except Exception as e:  # an op the exporter cannot translate: one line, the log for details
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: export failed: {first[:300]}", file=sys.stderr)
        return 1
    took = time.perf_counter() - t0
    diff = check_onnx(model, args.onnx, batch_sizes=(2,) if args.static_batch else (1, 3))
    names = ", ".join(input_names(model))
    print(f"wrote {args.onnx} (inputs: {names}; output: logits; opset {args.opset}; {took:.1f} s)")
    print(f"onnxruntime vs PyTorch on random inputs: max abs difference {diff:.3e} (tolerance {args.atol:g})")
    if not diff <= args.atol:
        print(f"{PROG}: error: max difference {diff:.3e} exceeds {args.atol:g}", file=sys.stderr)
        return 1
    return 0
