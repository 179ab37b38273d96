"""``deformact export --ckpt PATH --onnx model.onnx``: ONNX export, checked in onnxruntime.

Inputs are named as the model has them (``rgb``, ``pose``, ``person_mask``; those its modality
uses) with a dynamic batch axis; the output is ``logits``. The command runs the file in
onnxruntime on example inputs and prints the max difference to PyTorch (must be <= --atol).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt)")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |onnxruntime - torch| allowed (1e-4)")
    parser.add_argument("--static-batch", action="store_true", help="fix the batch axis at 2 instead of dynamic")


def main(args: argparse.Namespace) -> int:
    from deformact.engine.checkpoint import load_checkpoint
    from deformact.tools.export import ExportError, check_onnx, export_onnx, input_names

    model = load_checkpoint(args.ckpt, map_location="cpu")
    t0 = time.perf_counter()
    export_onnx(model, args.onnx, opset=args.opset, dynamic_batch=not args.static_batch)
    took = time.perf_counter() - t0
    diff = check_onnx(model, args.onnx, batch_sizes=(2,) if args.static_batch else (1, 3))
    print(f"wrote {args.onnx} (inputs: {', '.join(input_names(model))}; output: logits; opset {args.opset}; "
          f"{took:.1f} s)")
    print(f"onnxruntime vs PyTorch on example inputs: max abs difference {diff:.3e} (tolerance {args.atol:g})")
    if not diff <= args.atol:
        raise ExportError(f"max difference {diff:.3e} exceeds {args.atol:g}")  # exit status 1
    return 0
