"""Speed, memory and FLOP/s measurements behind ``deformact bench``.

Every comparison (deformable vs full vs grid, T, M) is measured in one process, side by side, so
ratios hold on a noisy machine. Times are medians of repeated runs; memory is the peak of torch's
allocations (the CUDA caching allocator's peak, or the CPU profiler's allocation events). The
training figures time the engine's own :func:`deformact.engine.train_step` (forward, backward and
an optimizer step that leaves the weights unchanged), the same step ``deformact train`` runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deformact._native import quiet_native_stderr
from deformact.models import DeformableAttention3D, build_model
from deformact.models.flops import example_inputs, model_report


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mib(fn: Callable[[], Any], device: torch.device) -> float:
    """Peak memory allocated by torch while ``fn`` runs, above what was live before (MiB).

    CUDA: the caching allocator's peak. CPU: the profiler's allocation/free events replayed in
    time order (RSS is useless here: freed blocks are kept and reused by malloc).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def timeit(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> dict:
    """Median seconds of ``fn`` and its peak extra memory (MiB, measured on one extra run)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "peak_mib": peak_memory_mib(fn, device)}


def matmul_rate(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured matmul FLOP/s (the denominator of model FLOP utilization)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device.type == "cpu" else 50
    res = timeit(lambda: [a @ b for _ in range(reps)], device, repeats=3)
    return 2 * n**3 * reps / res["seconds"]


def example_batch(model: torch.nn.Module, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch of the model's shapes: :func:`example_inputs` plus labels (all class 0)."""
    x = example_inputs(model.config, batch, device)
    x["label"] = torch.zeros(batch, dtype=torch.long, device=device)
    return x


def timed_train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                     amp_dtype: torch.dtype | None = None, run: torch.nn.Module | None = None) -> Callable[[], None]:
    """``fn()`` = one :func:`deformact.engine.train_step` of ``run`` (default ``model``, e.g. its
    ``torch.compile`` wrapper) with SGD at learning rate 0 (no state, weights unchanged); the
    gradients are released after each call, as a training loop does before its next step."""
    from deformact.engine.step import train_step

    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)

    def fn() -> None:
        train_step(run if run is not None else model, batch, optimizer, device=device, amp_dtype=amp_dtype)
        model.zero_grad(set_to_none=True)

    return fn


def bench_model(preset: str, device: torch.device, batch: int = 1, repeats: int = 3,
                autocast: torch.dtype | None = None, compile: bool = False, **overrides: Any) -> dict:
    """Forward and training-step time per clip, throughput, peak memory, params, FLOPs."""
    from deformact.engine.runtime import autocast as amp_context

    torch.manual_seed(0)
    model = build_model(preset, **overrides).to(device)
    rep_f = model_report(model, batch=batch, depth=1)
    rep_fb = model_report(model, batch=batch, depth=1, backward=True)
    model.zero_grad(set_to_none=True)
    data = example_batch(model, batch, device)
    x = {k: v for k, v in data.items() if k != "label"}
    run = torch.compile(model) if compile else model

    def fwd() -> None:
        with torch.no_grad(), amp_context(device, autocast):
            run(**x)

    model.eval()
    f = timeit(fwd, device, repeats)
    model.train()
    fb = timeit(timed_train_step(model, data, device, autocast, run), device, repeats)
    return {
        "preset": preset, "overrides": overrides, "batch": batch,
        "params": rep_f["total_params"], "flops_fwd_per_clip": rep_f["total_flops"] / batch,
        "flops_fwd_bwd_per_clip": rep_fb["total_flops"] / batch,
        "fwd_s_per_clip": f["seconds"] / batch, "fwd_bwd_s_per_clip": fb["seconds"] / batch,
        "train_clips_per_s": batch / fb["seconds"], "infer_clips_per_s": batch / f["seconds"],
        "fwd_peak_mib": f["peak_mib"], "fwd_bwd_peak_mib": fb["peak_mib"],
        "achieved_flops_train": rep_fb["total_flops"] / fb["seconds"],
    }


def bench_attention(mode: str, token_frames: int, device: torch.device, dim: int = 256, heads: int = 8,
                    side: int = 14, batch: int = 1, repeats: int = 3) -> dict:
    """The 3D deformable attention module alone (forward+backward) over T' x side x side tokens."""
    torch.manual_seed(0)
    attn = DeformableAttention3D(dim, heads, mode).to(device)
    volume = (token_frames, side, side)
    z = torch.randn(batch, token_frames * side * side, dim, device=device, requires_grad=True)
    cm = torch.randn(batch, 2, dim, device=device, requires_grad=True)

    def fwd_bwd() -> None:
        dz, dcm, _ = attn(z, cm, volume)
        (dz.sum() + dcm.sum()).backward()

    r = timeit(fwd_bwd, device, repeats)
    return {"mode": mode, "token_frames": token_frames, "tokens": z.shape[1], **r}


def bench_bf16_inference(preset: str, device: torch.device, batch: int = 2, repeats: int = 3) -> dict:
    """bf16 autocast inference vs fp32: speed-up and the largest change of a class probability."""
    torch.manual_seed(0)
    model = build_model(preset, num_classes=60).to(device).eval()
    x = example_inputs(model.config, batch, device)

    def fwd(dtype: torch.dtype | None) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(**x).float()

    diff = (fwd(None).softmax(-1) - fwd(torch.bfloat16).softmax(-1)).abs().max().item()
    fp32 = timeit(lambda: fwd(None), device, repeats)["seconds"] / batch
    bf16 = timeit(lambda: fwd(torch.bfloat16), device, repeats)["seconds"] / batch
    return {"fp32_s_per_clip": fp32, "bf16_s_per_clip": bf16, "speedup": fp32 / bf16, "max_prob_diff": diff}


def bench_compile(preset: str, device: torch.device, batch: int = 2, repeats: int = 3) -> dict:
    """torch.compile vs eager for a training step (compile time reported separately)."""
    torch.manual_seed(0)
    model = build_model(preset, num_classes=60).to(device).train()
    data = example_batch(model, batch, device)
    eager_step = timed_train_step(model, data, device)
    compiled_step = timed_train_step(model, data, device, run=torch.compile(model))
    t0 = time.perf_counter()
    compiled_step()
    compile_s = time.perf_counter() - t0
    eager = timeit(eager_step, device, repeats)["seconds"]
    comp = timeit(compiled_step, device, repeats)["seconds"]
    return {"eager_step_s": eager, "compiled_step_s": comp, "speedup": eager / comp, "compile_s": compile_s}


def run_data(quick: bool = False, workers: int = 2, real_video: str | Path | None = None) -> dict[str, Any]:
    """The data-path figures (:func:`deformact.tools.data_bench.loader_throughput`), plus 16-frame
    clips/s decoded from ``real_video`` on one core when given (e.g. a 1080p NTU clip)."""
    from deformact.tools.data_bench import loader_throughput, real_video_throughput

    out = loader_throughput(quick=quick, workers=workers)
    if real_video:
        out["real_video"] = str(real_video)
        out["real_video_clips_per_s_1core"] = round(real_video_throughput(real_video, 3.0 if quick else 8.0), 2)
    return out


def run_all(preset: str = "paper", device: str | None = None, quick: bool = False,
            log: Callable[[str], None] = print, compile: bool = False, workers: int = 2,
            real_video: str | Path | None = None) -> dict:
    """Everything ``deformact bench`` reports, as one JSON-able dict (``device`` None = "auto")."""
    from deformact.engine.runtime import resolve_device

    dev = resolve_device(device or "auto")
    reps = 2 if quick else 3
    out: dict[str, Any] = {"device": str(dev), "threads": torch.get_num_threads(), "preset": preset,
                           "torch": torch.__version__}
    out["matmul_flops"] = matmul_rate(dev)
    log(f"fp32 matmul: {out['matmul_flops'] / 1e9:.1f} GFLOP/s")

    rows = {}
    for mode in ("deformable", "grid", "full"):
        rows[mode] = bench_model(preset, dev, repeats=reps, num_classes=60, rgb_attention=mode)
        r = rows[mode]
        log(f"{mode:10s} fwd {r['fwd_s_per_clip'] * 1e3:8.1f} ms  fwd+bwd {r['fwd_bwd_s_per_clip'] * 1e3:8.1f} ms"
            f"  {r['train_clips_per_s']:.2f} clips/s  peak {r['fwd_bwd_peak_mib'] or 0:.0f} MiB"
            f"  MFU {r['achieved_flops_train'] / out['matmul_flops']:.1%}")
    out["models"] = rows
    d, f = rows["deformable"], rows["full"]
    out["ratios_full_over_deformable"] = {
        "fwd": f["fwd_s_per_clip"] / d["fwd_s_per_clip"],
        "fwd_bwd": f["fwd_bwd_s_per_clip"] / d["fwd_bwd_s_per_clip"],
        "flops": f["flops_fwd_bwd_per_clip"] / d["flops_fwd_bwd_per_clip"],
        "peak_mib": (f["fwd_bwd_peak_mib"] or 0) / max(d["fwd_bwd_peak_mib"] or 1, 1),
    }
    out["mfu_train"] = d["achieved_flops_train"] / out["matmul_flops"]

    side = build_model(preset, num_classes=2).config.token_size
    frames = [8, 16, 32] if quick else [8, 16, 32, 64]
    out["attention_only"] = []
    for t in frames:
        pair = {m: bench_attention(m, t // 2, dev, side=side, repeats=reps) for m in ("deformable", "full")}
        ratio = pair["full"]["seconds"] / pair["deformable"]["seconds"]
        out["attention_only"].append({"frames": t, **{f"{m}_s": pair[m]["seconds"] for m in pair},
                                      **{f"{m}_peak_mib": pair[m]["peak_mib"] for m in pair}, "ratio": ratio})
        log(f"attention only T={t:3d}: deformable {pair['deformable']['seconds'] * 1e3:8.1f} ms"
            f"  full {pair['full']['seconds'] * 1e3:8.1f} ms  ratio {ratio:.2f}")

    out["time_vs_frames"] = []
    for t in frames:
        row = {"frames": t}
        for mode in ("deformable", "full"):
            r = bench_model(preset, dev, repeats=1 if t >= 32 else reps, num_classes=60, rgb_attention=mode,
                            frames=t)
            row[f"{mode}_fwd_bwd_s"] = r["fwd_bwd_s_per_clip"]
            row[f"{mode}_peak_mib"] = r["fwd_bwd_peak_mib"]
        row["ratio"] = row["full_fwd_bwd_s"] / row["deformable_fwd_bwd_s"]
        out["time_vs_frames"].append(row)
        log(f"model T={t:3d}: deformable {row['deformable_fwd_bwd_s']:.3f} s  full {row['full_fwd_bwd_s']:.3f} s"
            f"  ratio {row['ratio']:.2f}")

    out["time_vs_persons"] = []
    for m in (1, 2, 4):
        r = bench_model(preset, dev, repeats=reps, num_classes=60, num_persons=m, modality="pose")
        out["time_vs_persons"].append({"persons": m, "pose_fwd_bwd_s": r["fwd_bwd_s_per_clip"],
                                       "flops": r["flops_fwd_bwd_per_clip"]})
        log(f"pose stream M={m}: fwd+bwd {r['fwd_bwd_s_per_clip'] * 1e3:.1f} ms")

    out["bf16_inference"] = bench_bf16_inference(preset, dev, repeats=reps)
    log(f"bf16 inference: {out['bf16_inference']}")
    if compile:
        out["compile"] = bench_compile(preset, dev, repeats=reps)
        log(f"torch.compile: {out['compile']}")

    out["data"] = run_data(quick, workers, real_video)
    log(f"data: {out['data']}")
    return out


def plot_time_vs_frames(result: dict, path: str | Path) -> Path:
    """Time per training clip vs T, deformable vs full attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["time_vs_frames"]
    t = [r["frames"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(t, [r["deformable_fwd_bwd_s"] for r in rows], "o-", label="3D deformable attention")
    ax.plot(t, [r["full_fwd_bwd_s"] for r in rows], "s--", label="full attention (all RGB tokens)")
    ax.set(xlabel="frames T", ylabel="s per clip (fwd+bwd)", title=f"{result['preset']} preset, {result['device']}")
    ax.set_xticks(t)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["bench_attention", "bench_bf16_inference", "bench_compile", "bench_model", "example_batch", "matmul_rate",
           "peak_memory_mib", "plot_time_vs_frames", "run_all", "run_data", "timed_train_step", "timeit"]
