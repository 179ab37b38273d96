"""Speed, memory and FLOP/s measurements behind ``deformact bench``.

Every comparison (the four RGB attention modes, T, M) is measured in one process, side by side, so
ratios hold on a noisy machine: the modes run interleaved and each ratio is a median of per-round
ratios of process CPU time (:mod:`deformact.tools.bench_modes`). Memory is the peak of torch's
allocations (the CUDA caching allocator's peak, or the CPU profiler's allocation events). The
training figures time the engine's own :func:`deformact.engine.train_step` (forward, backward and
an optimizer step that leaves the weights unchanged), the same step ``deformact train`` runs.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from deformact._native import quiet_native_stderr
from deformact.models import build_model
from deformact.models.flops import example_inputs, model_report
from deformact.tools.bench_modes import (
    MODES,
    STYLES,
    accuracy_at_frames,
    attention_module,
    compare_models,
    sweep,
    sync,
    time_plot,
)


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
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "peak_mib": peak_memory_mib(fn, device)}


def matmul_rate(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured matmul FLOP/s (the denominator of model FLOP utilization)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device.type == "cpu" else 50
    res = timeit(lambda: [a @ b for _ in range(reps)], device, repeats=3)
    return 2 * n**3 * reps / res["seconds"]


def matmul_rate_cpu(n: int = 2048, reps: int = 5, rounds: int = 3) -> float:
    """fp32 matmul FLOPs per second of process CPU time (best of ``rounds``): per core when
    the threads are busy, and unchanged by other work on a shared machine (waiting is not counted)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(reps):
            a @ b
        best = min(best, time.process_time() - c0)
    return 2 * n**3 * reps / best


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
    """One RGB attention module alone (forward+backward) over T' x side x side tokens."""
    torch.manual_seed(0)
    attn = attention_module(mode, dim, heads).to(device)
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
            real_video: str | Path | None = None, frames: Sequence[int] | None = None,
            accuracy_dir: str | Path | None = None, accuracy_epochs: int = 6) -> dict:
    """Everything ``deformact bench`` reports, as one JSON-able dict (``device`` None = "auto").
    ``accuracy_dir``: also train the deformable and grid models briefly at T = 32 (there)."""
    from deformact.engine.runtime import resolve_device

    dev = resolve_device(device or "auto")
    reps = 2 if quick else 3
    out: dict[str, Any] = {"device": str(dev), "threads": torch.get_num_threads(), "preset": preset,
                           "torch": torch.__version__, "load_avg": _load_avg()}
    out["matmul_flops"] = matmul_rate(dev)
    out["matmul_flops_per_cpu_s"] = matmul_rate_cpu() if dev.type == "cpu" else None
    log(f"fp32 matmul: {out['matmul_flops'] / 1e9:.1f} GFLOP/s")

    rows = compare_models(preset, dev, None, MODES, repeats=2 * reps, forward=True)
    out["models"] = {m: _preset_row(r, out["matmul_flops"], out["matmul_flops_per_cpu_s"]) for m, r in rows.items()}
    for mode, r in out["models"].items():
        log(f"{mode:10s} fwd {r['fwd_s_per_clip'] * 1e3:8.1f} ms  fwd+bwd {r['fwd_bwd_s_per_clip'] * 1e3:8.1f} ms"
            f"  ({r['fwd_bwd_ratio']:.3f}x deformable)  peak {r['fwd_bwd_peak_mib'] or 0:.0f} MiB  MFU {r['mfu']:.1%}"
            f" (per CPU second {r['mfu_cpu_time'] or 0:.1%})")
    d, f = out["models"]["deformable"], out["models"]["full"]
    out["ratios_full_over_deformable"] = {
        "fwd": f["fwd_ratio"], "fwd_bwd": f["fwd_bwd_ratio"],
        "flops": f["flops_fwd_bwd_per_clip"] / d["flops_fwd_bwd_per_clip"],
        "peak_mib": (f["fwd_bwd_peak_mib"] or 0) / max(d["fwd_bwd_peak_mib"] or 1, 1),
    }
    out["ratios_over_deformable"] = {m: r["fwd_bwd_ratio"] for m, r in out["models"].items()}
    out["mfu_train"] = d["mfu"]
    out["mfu_train_cpu_time"] = d["mfu_cpu_time"]  # per core, robust to other work on the machine

    frames = list(frames or ([8, 16, 32] if quick else [8, 16, 32, 64]))
    out["sweep"] = sweep(preset, dev, frames, MODES, repeats=lambda t: (2 if t <= 16 else 1) * reps - (t >= 64),
                         log=log)
    out["attention_only"] = [_flat(r) for r in out["sweep"]["module"]]
    out["time_vs_frames"] = [_flat(r) for r in out["sweep"]["model"]]

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
    if accuracy_dir:
        out["accuracy"] = accuracy_at_frames(accuracy_dir, 32, ("deformable", "grid"), accuracy_epochs, log=log)

    out["data"] = run_data(quick, workers, real_video)
    log(f"data: {out['data']}")
    out["load_avg_end"] = _load_avg()
    return out


def _load_avg() -> list[float] | None:
    """The machine's 1/5/15-minute load averages (None where the OS has none): context for the times."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _preset_row(r: dict, matmul: float, matmul_cpu: float | None) -> dict:
    """A :func:`compare_models` entry in the preset table's terms (per clip, batch 1). ``mfu``: the
    step's FLOP/s over the matmul's, both in wall time; ``mfu_cpu_time``: both per CPU second."""
    return {"params": r["params"], "flops_fwd_per_clip": r["flops_fwd"], "flops_fwd_bwd_per_clip": r["flops_fwd_bwd"],
            "fwd_s_per_clip": r["fwd_s"], "fwd_bwd_s_per_clip": r["fwd_bwd_s"], "fwd_cpu_s": r["fwd_cpu_s"],
            "fwd_bwd_cpu_s": r["fwd_bwd_cpu_s"], "fwd_ratio": r["fwd_ratio"], "fwd_bwd_ratio": r["fwd_bwd_ratio"],
            "train_clips_per_s": 1 / r["fwd_bwd_s"], "infer_clips_per_s": 1 / r["fwd_s"],
            "fwd_bwd_peak_mib": r["peak_mib"], "achieved_flops_train": r["flops_fwd_bwd"] / r["fwd_bwd_s"],
            "mfu": r["flops_fwd_bwd"] / r["fwd_bwd_s"] / matmul,
            "mfu_cpu_time": r["flops_fwd_bwd"] / r["fwd_bwd_cpu_s"] / matmul_cpu if matmul_cpu else None}


def _flat(row: dict) -> dict:
    """One sweep row as flat keys: ``{mode}_fwd_bwd_s``, ``{mode}_ratio`` (over deformable), ..."""
    flat: dict[str, Any] = {"frames": row["frames"]}
    for mode in MODES:
        r = row[mode]
        flat.update({f"{mode}_fwd_bwd_s": r["fwd_bwd_s"], f"{mode}_fwd_bwd_cpu_s": r["fwd_bwd_cpu_s"],
                     f"{mode}_ratio": r["fwd_bwd_ratio"],
                     f"{mode}_gflops": r["flops_fwd_bwd"] / 1e9, f"{mode}_peak_mib": r["peak_mib"]})
    flat["ratio"] = flat["full_ratio"]  # full / deformable, as before
    return flat


def plot_time_vs_frames(result: dict, path: str | Path) -> Path:
    """Time per training clip vs T, one line per RGB attention mode in the rows (CPU seconds where
    the rows have them: robust to other work on the machine; else wall seconds)."""
    rows = result["time_vs_frames"]
    labels = {"deformable": "3D deformable attention", "grid": "fixed grid (no offsets)",
              "divided": "divided space-time (all RGB tokens)", "full": "full attention (all RGB tokens)"}
    cpu = all(r.get(f"{m}_fwd_bwd_cpu_s") for r in rows for m in MODES if f"{m}_fwd_bwd_s" in r)
    key = "_fwd_bwd_cpu_s" if cpu else "_fwd_bwd_s"
    lines = [(labels[mode], [r[f"{mode}{key}"] for r in rows], STYLES[mode])
             for mode in MODES if all(f"{mode}{key}" in r for r in rows)]
    return time_plot([r["frames"] for r in rows], lines, path, size=(5, 3.5),
                     title=f"{result['preset']} preset, {result['device']}",
                     ylabel=f"{'CPU ' if cpu else ''}s per clip (fwd+bwd)")


__all__ = ["bench_attention", "bench_bf16_inference", "bench_compile", "bench_model", "example_batch", "matmul_rate",
           "matmul_rate_cpu",
           "peak_memory_mib", "plot_time_vs_frames", "run_all", "run_data", "timed_train_step", "timeit"]
