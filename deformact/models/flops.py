"""Parameters and FLOPs per module (torch.utils.flop_counter)."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor, nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from deformact.models.config import ModelConfig


def _register_cpu_attention_flops() -> None:
    """torch's counter knows the CUDA attention kernels only; count the CPU flash kernel the same way."""
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_counter.flop_registry and fwd.default not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(fwd)(
            lambda q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v))
    if bwd is not None and bwd not in flop_counter.flop_registry and bwd.default not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(bwd)(
            lambda g, q, k, v, *args, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(g, q, k, v))


_register_cpu_attention_flops()

# A trilinear read interpolates 8 corners: 8 multiply-adds per channel and point (16 FLOPs); the
# corner weights, shared by all channels, are not counted (as no element-wise op is). Backward:
# the same 16 for the volume's gradient, and 8 corners x 3 axes multiply-adds (48) for the
# coordinates' gradient.
READ_FLOPS = 16
READ_GRID_GRAD_FLOPS = 48


def trilinear_read_flops(channels: int, points: int) -> int:
    """FLOPs of reading ``points`` locations of a ``channels``-channel volume (one sequence)."""
    return READ_FLOPS * channels * points


def _register_grid_sample_flops() -> None:
    aten = torch.ops.aten
    if aten.grid_sampler_3d in flop_counter.flop_registry or aten.grid_sampler_3d.default in flop_counter.flop_registry:
        return

    def forward(volume, grid, *args, out_shape=None, **kw) -> int:  # shapes; out: S x C x P x 1 x 1
        return READ_FLOPS * volume[0] * volume[1] * math.prod(grid[1:-1])

    def backward(grad, volume, grid, *args, out_shape=None, **kw) -> int:
        need_volume, need_grid = args[-1] if args and isinstance(args[-1], (list, tuple)) else (True, True)
        per = (READ_FLOPS if need_volume else 0) + (READ_GRID_GRAD_FLOPS if need_grid else 0)
        return per * volume[0] * volume[1] * math.prod(grid[1:-1])

    flop_counter.register_flop_formula(aten.grid_sampler_3d)(forward)
    flop_counter.register_flop_formula(aten.grid_sampler_3d_backward)(backward)


_register_grid_sample_flops()


def example_inputs(cfg: ModelConfig, batch: int = 1, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Random inputs of the right shapes for a config (the same dict the model takes as kwargs)."""
    g = torch.Generator().manual_seed(0)
    out: dict[str, Tensor] = {}
    if cfg.use_rgb:
        out["rgb"] = torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size, generator=g)
    if cfg.use_pose:
        out["pose"] = torch.rand(batch, cfg.num_persons, cfg.frames, cfg.num_joints, cfg.pose_channels, generator=g)
        out["person_mask"] = torch.ones(batch, cfg.num_persons, cfg.frames, dtype=torch.bool)  # per frame
    return {k: v.to(device) for k, v in out.items()}


def model_report(model: nn.Module, batch: int = 1, depth: int = 2, backward: bool = False) -> dict:
    """Parameter counts and forward (or forward+backward) FLOPs per module, ``depth`` levels deep.

    FLOPs count matmuls, convolutions, attention and the 3DTS trilinear reads (2 per multiply-add,
    :func:`trilinear_read_flops`); element-wise ops and normalizations are not counted. The reads
    are counted on the ``grid_sample`` path (the gather path runs only while exporting to ONNX).
    """
    params: dict[str, int] = defaultdict(int)
    for name, p in model.named_parameters():
        path = name.rsplit(".", 1)[0].split(".")  # the owning module's path
        for level in range(1, min(depth, len(path)) + 1):
            params[".".join(path[:level])] += p.numel()
    inputs = example_inputs(model.config, batch, next(model.parameters()).device)
    was_training = model.training
    model.train(backward)
    counter = FlopCounterMode(display=False, depth=16)
    with counter:
        out = model(**inputs)
        if backward:
            out.sum().backward()
    model.train(was_training)
    counts = {k: int(sum(v.values())) for k, v in counter.get_flop_counts().items()}
    root = type(model).__name__ + "."
    paths = {k.removeprefix(root) for k in counts if k.startswith(root)}
    prefixes = {".".join(p.split(".")[:i]) for p in paths for i in range(1, p.count(".") + 2)}

    def inclusive(path: str) -> int:  # containers never called (ModuleList) sum their children
        if root + path in counts:
            return counts[root + path]
        kids = [q for q in prefixes if q.startswith(path + ".") and q.count(".") == path.count(".") + 1]
        return sum(inclusive(q) for q in kids)

    flops = {p: inclusive(p) for p in prefixes if p.count(".") < depth}
    return {
        "params": dict(params),
        "flops": flops,
        "total_params": sum(p.numel() for p in model.parameters()),
        "total_flops": int(counter.get_total_flops()),
        "batch": batch,
        "backward": backward,
    }


def format_report(report: dict) -> str:
    """A small text table of a :func:`model_report`."""
    names = sorted(set(report["params"]) | set(report["flops"]))
    lines = [f"{'module':40s} {'params':>12s} {'GFLOPs':>10s}"]
    for n in names:
        lines.append(f"{n:40s} {report['params'].get(n, 0):12,d} {report['flops'].get(n, 0) / 1e9:10.3f}")
    lines.append(f"{'total':40s} {report['total_params']:12,d} {report['total_flops'] / 1e9:10.3f}")
    return "\n".join(lines)
