"""The measuring tools measure: memory peaks of known allocations, FLOP-rate sanity, bench plumbing."""

import json
import time

import torch

from deformact import cli
from deformact.tools.benchmark import bench_attention, bench_model, peak_memory_mib, plot_time_vs_frames

CPU = torch.device("cpu")


def test_peak_memory_sees_a_known_allocation():
    def alloc():
        a = torch.ones(4 * 2**20 // 4)  # 4 MiB
        b = torch.ones(8 * 2**20 // 4)  # 8 MiB, both alive: 12 MiB peak
        del a, b
        torch.ones(2 * 2**20 // 4)

    assert 11.9 < peak_memory_mib(alloc, CPU) < 13


def test_bench_model_and_attention_report_consistent_figures(tmp_path):
    r = bench_model("demo", CPU, repeats=1, num_classes=5)
    assert r["flops_fwd_bwd_per_clip"] > 2 * r["flops_fwd_per_clip"] > 0
    assert r["fwd_bwd_s_per_clip"] > 0 and r["fwd_bwd_peak_mib"] > 0
    d = bench_attention("deformable", 4, CPU, dim=32, heads=4, side=4, repeats=1)
    f = bench_attention("full", 4, CPU, dim=32, heads=4, side=4, repeats=1)
    assert d["tokens"] == f["tokens"] == 64
    rows = [{"frames": t, "deformable_fwd_bwd_s": t * 0.1, "full_fwd_bwd_s": t * 0.2} for t in (8, 16)]
    png = plot_time_vs_frames({"time_vs_frames": rows, "preset": "demo", "device": "cpu"}, tmp_path / "t.png")
    assert png.stat().st_size > 1000


def test_bench_data_only_writes_the_loader_figures(tmp_path, capsys):
    """``deformact bench --data-only`` (what scripts/bench_data.py did): the data-path figures only."""
    out = tmp_path / "data.json"
    assert cli.main(["bench", "--data-only", "--quick", "--workers", "0", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["pose_items_per_s_per_core"] > 0 and figures["rgb_clips_per_s"] > 0
    assert figures["rgb_workers"] == 0 and "models" not in figures
    printed = capsys.readouterr().out
    assert "pose_items_per_s_per_core" in printed and f"wrote {out}" in printed


def test_interleaved_ratio_is_a_median_of_per_round_ratios():
    from deformact.tools.bench_modes import interleaved

    def spin(seconds: float):
        def fn() -> None:
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
        return fn

    res = interleaved({"a": spin(0.004), "b": spin(0.012)}, CPU, repeats=3, base="a")
    assert res["a"]["ratio"] == 1.0 and 2.0 < res["b"]["ratio"] < 4.5
    assert res["b"]["cpu_s"] >= 0.012 and res["b"]["wall_s"] >= res["b"]["cpu_s"] * 0.5


def test_mode_sweep_covers_the_four_modes_whole_model_and_module(tmp_path):
    from deformact.tools.bench_modes import MODES, plot_sweep, sweep

    rows = sweep("demo", CPU, frames=[8], repeats=lambda t: 1, log=lambda _m: None)
    for part in ("model", "module"):
        (row,) = rows[part]
        assert row["frames"] == 8 and set(MODES) <= set(row)
        assert row["deformable"]["fwd_bwd_ratio"] == 1.0
        for mode in MODES:
            r = row[mode]
            assert r["fwd_bwd_s"] > 0 and r["flops_fwd_bwd"] > 0 and r["peak_mib"] > 0
    model = rows["model"][0]
    # the reads are counted: deformable costs more FLOPs than the grid (offset network), full the most
    assert model["grid"]["flops_fwd_bwd"] < model["deformable"]["flops_fwd_bwd"] < model["full"]["flops_fwd_bwd"]
    assert plot_sweep(rows["model"], tmp_path / "sweep.png").stat().st_size > 1000
    flat = [{"frames": t, **{f"{m}_fwd_bwd_s": t * (i + 1) * 0.1 for i, m in enumerate(MODES)}} for t in (8, 16)]
    png = plot_time_vs_frames({"time_vs_frames": flat, "preset": "demo", "device": "cpu"}, tmp_path / "all.png")
    assert png.stat().st_size > 1000


def test_no_frame_is_hidden_from_the_cm_tokens_by_the_temporal_cap():
    """T = 32: T' = 16 token steps, the grid capped at 4 cells; each cell's read averages its steps."""
    from deformact.tools.bench_modes import frames_seen

    assert frames_seen("demo", 32) == 1.0
    assert frames_seen("demo", 32, "grid") == 1.0


def test_compare_models_with_forward_reports_inference_time_and_flops():
    from deformact.tools.bench_modes import compare_models

    res = compare_models("demo", CPU, 8, ("deformable", "full"), repeats=1, forward=True, memory=False)
    for r in res.values():
        assert r["fwd_s"] > 0 and 0 < r["flops_fwd"] < r["flops_fwd_bwd"] and r["peak_mib"] is None
    assert res["deformable"]["fwd_ratio"] == 1.0 and res["full"]["frames"] == 8
