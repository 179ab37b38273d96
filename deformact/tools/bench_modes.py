"""The RGB attention modes side by side (``deformact bench``): 3D deformable attention, the fixed
grid, divided space-time attention and full attention, as whole models and as attention modules,
over T; and the accuracy of short trainings at one T.

Ratios come from interleaved runs: the modes take turns (order reversed every round), and each
ratio is the median over rounds of the per-round ratio, so slow drifts of a shared machine's load
cancel. On the CPU the times are process CPU seconds (``time.process_time``: time the process
ran, so waiting for a busy core does not count); on a GPU, wall seconds after a synchronize.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deformact.models import DeformableAttention3D, build_model
from deformact.models.divided import DividedSpaceTimeAttention
from deformact.models.flops import model_report

MODES = ("deformable", "grid", "divided", "full")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, base: str,
                warmup: int = 1) -> dict[str, dict[str, float]]:
    """Run ``fns`` in turns, ``repeats`` rounds after ``warmup``. Per name: ``wall_s`` and ``cpu_s``
    (best of the rounds; ``cpu_s`` is process time, None on a GPU) and ``ratio`` (median over rounds
    of its time / the time of ``base`` in the same round: CPU time on the CPU, wall on a GPU)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            w0, c0 = time.perf_counter(), time.process_time()
            fns[n]()
            sync(device)
            wall[n].append(time.perf_counter() - w0)
            cpu[n].append(time.process_time() - c0)
    key = cpu if device.type == "cpu" else wall
    return {n: {"wall_s": min(wall[n]), "cpu_s": min(cpu[n]) if device.type == "cpu" else None,
                "ratio": statistics.median(a / b for a, b in zip(key[n], key[base]))} for n in names}


def attention_module(mode: str, dim: int, heads: int) -> nn.Module:
    """The RGB attention of a block in ``mode`` (module call: ``(z, cm, volume) -> (dz, dcm, maps)``)."""
    if mode == "divided":
        return DividedSpaceTimeAttention(dim=dim, heads=heads)
    return DeformableAttention3D(dim, heads, mode)


def _flops(fn: Callable[[], Any]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def compare_models(preset: str, device: torch.device, frames: int | None = None, modes: Sequence[str] = MODES,
                   repeats: int = 3, forward: bool = False, memory: bool = True, **overrides: Any) -> dict:
    """Whole models, one per mode, batch 1: the engine's training step (forward, backward, SGD at lr 0)
    interleaved; FLOPs of forward+backward (trilinear reads counted); peak memory; with
    ``forward`` also inference time and FLOPs. Ratios are over ``modes[0]``."""
    from deformact.tools.benchmark import example_batch, peak_memory_mib, timed_train_step

    extra = dict(overrides, **({"frames": frames} if frames else {}))
    models, steps, fwds, out = {}, {}, {}, {}
    for mode in modes:
        torch.manual_seed(0)
        models[mode] = model = build_model(preset, num_classes=60, rgb_attention=mode, **extra).to(device)
        report = model_report(model, backward=True, depth=1)
        model.zero_grad(set_to_none=True)
        batch = example_batch(model, 1, device)
        inputs = {k: v for k, v in batch.items() if k != "label"}
        steps[mode] = timed_train_step(model, batch, device)
        fwds[mode] = (lambda m=model, x=inputs: m(**x))
        out[mode] = {"flops_fwd_bwd": report["total_flops"], "params": report["total_params"],
                     "frames": model.config.frames}
    for m in models.values():
        m.train()
    for mode, r in interleaved(steps, device, repeats, modes[0]).items():
        out[mode].update(fwd_bwd_s=r["wall_s"], fwd_bwd_cpu_s=r["cpu_s"], fwd_bwd_ratio=r["ratio"])
        out[mode]["peak_mib"] = peak_memory_mib(steps[mode], device) if memory else None
    if forward:
        for mode, m in models.items():
            out[mode]["flops_fwd"] = model_report(m, depth=1)["total_flops"]  # not under no_grad (FLOP tracker)
            m.eval()
        with torch.no_grad():
            for mode, r in interleaved(fwds, device, repeats, modes[0]).items():
                out[mode].update(fwd_s=r["wall_s"], fwd_cpu_s=r["cpu_s"], fwd_ratio=r["ratio"])
    return out


def compare_attention(token_frames: int, device: torch.device, modes: Sequence[str] = MODES, dim: int = 256,
                      heads: int = 8, side: int = 14, repeats: int = 5, memory: bool = True) -> dict:
    """The RGB attention module alone, forward+backward over T' x side x side tokens and 2 CM tokens."""
    from deformact.tools.benchmark import peak_memory_mib

    volume = (token_frames, side, side)
    z = torch.randn(1, token_frames * side * side, dim, device=device, requires_grad=True)
    cm = torch.randn(1, 2, dim, device=device, requires_grad=True)
    fns, out = {}, {}
    for mode in modes:
        torch.manual_seed(0)
        attn = attention_module(mode, dim, heads).to(device)

        def fwd_bwd(attn: nn.Module = attn) -> None:
            dz, dcm, _ = attn(z, cm, volume)
            (dz.sum() + dcm.sum()).backward()

        fns[mode] = fwd_bwd
        out[mode] = {"flops_fwd_bwd": _flops(fwd_bwd)}
    for mode, r in interleaved(fns, device, repeats, modes[0]).items():
        out[mode].update(fwd_bwd_s=r["wall_s"], fwd_bwd_cpu_s=r["cpu_s"], fwd_bwd_ratio=r["ratio"])
        out[mode]["peak_mib"] = peak_memory_mib(fns[mode], device) if memory else None
    return out


def sweep(preset: str, device: torch.device, frames: Sequence[int] = (8, 16, 32, 64), modes: Sequence[str] = MODES,
          repeats: Callable[[int], int] = lambda t: 3 if t <= 16 else 2, log: Callable[[str], None] = print,
          side: int | None = None, dim: int | None = None, heads: int | None = None) -> dict[str, list[dict]]:
    """Whole model and attention module, every mode, at each T: rows of {frames, mode: figures}."""
    cfg = build_model(preset, num_classes=2).config
    side, dim, heads = side or cfg.token_size, dim or cfg.dim, heads or cfg.heads
    rows: dict[str, list[dict]] = {"model": [], "module": []}
    for t in frames:
        mod = compare_attention(t // cfg.temporal_patch, device, modes, dim, heads, side, repeats=2 * repeats(t))
        rows["module"].append({"frames": t, **mod})
        log(f"module T={t:3d}: " + _line(mod))
        whole = compare_models(preset, device, t, modes, repeats=repeats(t))
        rows["model"].append({"frames": t, **whole})
        log(f"model  T={t:3d}: " + _line(whole))
    return rows


def _line(res: dict) -> str:
    return "  ".join(f"{m} {r['fwd_bwd_s'] * 1e3:.0f} ms ({r['fwd_bwd_ratio']:.2f}x)" for m, r in res.items())


def frames_seen(preset: str, frames: int, mode: str = "deformable") -> float:
    """Fraction of the T input frames the logits depend on (a nonzero gradient) in a new model: 1.0
    when the temporal cap of the reference grid (``ref_max_frames``) hides no frame from the CM
    tokens, which see the RGB stream only through the sampled keys."""
    torch.manual_seed(0)
    model = build_model(preset, num_classes=4, modality="rgb", rgb_attention=mode, frames=frames)
    cfg = model.config
    rgb = torch.randn(1, 3, cfg.frames, cfg.image_size, cfg.image_size, requires_grad=True)
    model.eval()
    model(rgb=rgb).sum().backward()
    return float((rgb.grad.abs().sum((0, 1, 3, 4)) > 0).float().mean())


def accuracy_at_frames(out_dir: str | Path, frames: int = 32, modes: Sequence[str] = ("deformable", "grid"),
                       epochs: int = 8, config: str = "synthetic", log: Callable[[str], None] = print) -> dict:
    """Top-1 of a short training per mode on the synthetic demo set at ``frames`` frames (the
    engine's own ``run``, same seed and recipe; a finished run with the same config is reused)."""
    from deformact.engine.config import apply_overrides, load_config, validate_config
    from deformact.tools.ablation import train_row

    base = load_config(config)
    out: dict[str, Any] = {"frames": frames, "epochs": epochs, "config": config}
    for mode in modes:
        cfg = validate_config(apply_overrides(base, [f"data.frames={frames}", f"epochs={epochs}",
                                                     f"model.rgb_attention={mode}"]))
        m = train_row(cfg, Path(out_dir) / f"{mode}_T{frames}", echo=lambda msg, tag=mode: log(f"  [{tag}] {msg}"))
        out[mode] = {k: m[k] for k in ("top1", "mean_class_acc", "train_minutes") if k in m}
        out[mode]["frames_seen"] = frames_seen(base["model"].get("preset", "demo"), frames, mode)
        log(f"accuracy T={frames} {mode}: top-1 {m.get('top1', float('nan')):.3f}")
    return out


def time_plot(t: Sequence[int], lines: Sequence[tuple[str, Sequence[float], str]], path: str | Path, *,
              title: str = "", ylabel: str = "s per clip (fwd+bwd)", size: tuple[float, float] = (5.5, 3.8)) -> Path:
    """Seconds per clip vs the frame count T, log-log, one (label, values, style) line each; a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, values, style in lines:
        ax.plot(t, values, style, label=label)
    ax.set(xlabel="frames T", ylabel=ylabel, title=title, xscale="log", yscale="log")
    ax.set_xticks(t, [str(v) for v in t])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


STYLES = dict(zip(MODES, ("o-", "v:", "^-.", "s--")))


def plot_sweep(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Seconds per training clip (fwd+bwd; CPU seconds where measured) vs T, one line per mode; log-log."""
    lines = [(mode, [r[mode]["fwd_bwd_cpu_s"] or r[mode]["fwd_bwd_s"] for r in rows], STYLES[mode])
             for mode in MODES if all(mode in r for r in rows)]
    return time_plot([r["frames"] for r in rows], lines, path, title=title,
                     ylabel="s per clip (fwd+bwd; CPU s on the CPU)")


__all__ = ["MODES", "accuracy_at_frames", "attention_module", "compare_attention", "compare_models", "frames_seen",
           "interleaved", "plot_sweep", "sweep", "sync", "time_plot"]
