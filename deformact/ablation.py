"""Recognition quality (issue 6): the paper's ablation study (Sec. 4.3) on data we control
(``deformact ablate``), and the held-out validation split used to tune the Penn Action recipe.

Every row switches one thing off in the base config (by default ``configs/synthetic.yaml``, the
synthetic cross-modal set of :mod:`deformact.data.synthetic`), then trains and tests it with the
same seeds as the full model. Rows follow the module flags of ARCHITECTURE.md: the single
modalities, 3D token search replaced by a fixed grid or by full attention over all RGB tokens,
strides set to 1, and the cross-modal tokens replaced by one CLS token per stream.

Outputs in ``DIR``: ``runs/<row>/seed<k>/`` (one engine run each, see
:func:`deformact.engine.run`), ``ablation.json`` (every number) and ``ablation.md`` (the table).
Finished runs are reused when their config is unchanged, so an interrupted ablation continues.

:func:`penn_holdout` (``python -m deformact.ablation penn-holdout IN.pkl -o OUT.pkl``) adds a
``val`` split (a deterministic, class-stratified part of ``train``) and ``train_part`` (the rest)
to a pyskl file, so recipes are chosen without looking at ``test``; see docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from deformact.engine.config import ConfigError, apply_overrides, dump_config, validate_config


@dataclass(frozen=True)
class Row:
    """One line of the ablation table: a name, what it changes, and the ``--set`` overrides."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()


ROWS: tuple[Row, ...] = (
    Row("full", "full model (RGB + pose, 3D deformable attention, strided attention, CM tokens)"),
    Row("rgb_only", "RGB only", ("data.modality=rgb",)),
    Row("pose_only", "pose only", ("data.modality=pose",)),
    Row("grid", "rgb_attention=grid (3DTS off: fixed uniform sampling grid)", ("model.rgb_attention=grid",)),
    Row("full_attn", "rgb_attention=full (all RGB tokens as keys)", ("model.rgb_attention=full",)),
    Row("joint_stride_1", "joint_stride=1 (full spatial attention)", ("model.joint_stride=1",)),
    Row("temporal_stride_1", "temporal_stride=1 (full temporal attention)", ("model.temporal_stride=1",)),
    Row("no_cm_tokens", "cross_modal_tokens=False (a CLS token per stream, fused at the head)",
        ("model.cross_modal_tokens=false",)),
)
ROW_NAMES = tuple(r.name for r in ROWS)
METRICS = ("top1", "mean_class_acc", "top5")


def select_rows(names: Sequence[str] | None) -> list[Row]:
    """Rows by name (all when ``names`` is empty or None), in table order."""
    if not names:
        return list(ROWS)
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        raise ConfigError(f"unknown ablation row(s) {unknown}; choose from {', '.join(ROW_NAMES)}")
    return [r for r in ROWS if r.name in names]


def row_config(base: Mapping[str, Any], row: Row, seed: int) -> dict:
    """The validated run config of one row and seed."""
    return validate_config(apply_overrides(base, [*row.overrides, f"seed={int(seed)}"]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _same_config(run_dir: Path, cfg: Mapping[str, Any]) -> bool:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return False
    try:
        return yaml.safe_load(path.read_text()) == yaml.safe_load(dump_config(cfg))
    except yaml.YAMLError:
        return False


def train_row(cfg: Mapping[str, Any], run_dir: Path, echo: Callable[[str], None] = print) -> dict:
    """Train and test one config in ``run_dir``, reusing a finished run with the same config."""
    from deformact.engine import run

    metrics_file = run_dir / "metrics.json"
    same = _same_config(run_dir, cfg)
    if same and metrics_file.is_file():
        echo(f"  reusing {metrics_file}")
        return json.loads(metrics_file.read_text())
    resume = same and (run_dir / "last.pt").is_file()
    tic = time.perf_counter()
    metrics = run(cfg, run_dir, resume=resume, overwrite=not resume, echo=echo)
    metrics = {**metrics, "train_minutes": (time.perf_counter() - tic) / 60}
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def model_cost(cfg: Mapping[str, Any], step_repeats: int = 5) -> dict:
    """Params, forward GFLOPs (batch 1, :func:`deformact.models.flops.model_report`) and the
    train-step time (forward + backward + AdamW step at ``train.batch_size``, best of
    ``step_repeats`` after a warm-up: the best is the least disturbed by other work on the machine)."""
    from torch.utils.data import default_collate

    from deformact.engine.trainer import build_dataset, build_model_for, model_inputs
    from deformact.models.flops import model_report

    torch.manual_seed(0)
    data = build_dataset(cfg["data"], "train", train=True)
    model = build_model_for(cfg["model"], data)
    report = model_report(model)
    bs = int(cfg["train"]["batch_size"])
    batch = default_collate([data[i % len(data)] for i in range(bs)])
    inputs, label = model_inputs(batch, torch.device("cpu")), batch["label"].long()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(2 + step_repeats):
        tic = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(**inputs), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - tic)
    return {"params": int(report["total_params"]), "gflops": report["total_flops"] / 1e9,
            "step_ms": 1e3 * min(times), "step_batch": bs}


def code_version() -> str:
    """``git describe --always --dirty`` of the checkout deformact runs from ("unknown" outside git)."""
    import subprocess

    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_ablation(base: Mapping[str, Any], out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
                 rows: Sequence[str] | None = None, echo: Callable[[str], None] = print) -> dict:
    """Train and test every row with every seed; write ``ablation.json`` and ``ablation.md``."""
    out = Path(out_dir)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("give at least one seed")
    chosen = select_rows(rows)
    base = validate_config(base)
    code = code_version()
    results = []
    for row in chosen:
        per_seed = []
        for seed in seeds:
            cfg = row_config(base, row, seed)
            echo(f"[ablate] {row.name} seed {seed}: {' '.join(row.overrides) or '(base config)'}")
            m = train_row(cfg, out / "runs" / row.name / f"seed{seed}",
                          echo=lambda msg, tag=f"{row.name}/{seed}": echo(f"  [{tag}] {msg}"))
            per_seed.append({"seed": seed, **{k: m[k] for k in (*METRICS, "train_minutes") if k in m}})
        results.append({"name": row.name, "label": row.label, "overrides": list(row.overrides),
                        "seeds": per_seed,
                        **{k: dict(zip(("mean", "std"), mean_std([s[k] for s in per_seed]))) for k in METRICS}})
    # costs last, one row after another, so that every row is timed under similar machine load
    for res, row in zip(results, chosen):
        echo(f"[ablate] cost of {row.name}")
        res.update(model_cost(row_config(base, row, seeds[0])))
    summary = {"base_config": copy.deepcopy(base), "seeds": seeds, "rows": results,
               "torch_threads": torch.get_num_threads(), "code": code}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "ablation.md").write_text(format_table(summary))
    echo(f"[ablate] wrote {out / 'ablation.json'} and {out / 'ablation.md'}")
    return summary


def _pm(stat: Mapping[str, float]) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def format_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table of :func:`run_ablation`'s summary (accuracies in %, mean ± std over seeds)."""
    rows = summary["rows"]
    ref = next((r for r in rows if r["name"] == "full"), None)
    seeds = summary["seeds"]
    lines = [
        f"Mean ± std over {len(seeds)} seed(s) {seeds}; accuracies in % on the test split. "
        "GFLOPs: forward, one sample. Step: forward + backward + AdamW step of one training batch "
        f"on CPU ({summary.get('torch_threads', '?')} threads), best of 5. Code: {summary.get('code', '?')}.",
        "",
        "| row | change | top-1 | Δ top-1 | mean class acc | params | GFLOPs | step (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = "" if ref is None or r is ref else f"{100 * (r['top1']['mean'] - ref['top1']['mean']):+.1f}"
        cost = (f"{r['params']:,} | {r['gflops']:.3f} | {r['step_ms']:.0f}" if "params" in r
                else " | | ")
        lines.append(f"| {r['name']} | {r['label']} | {_pm(r['top1'])} | {delta} | {_pm(r['mean_class_acc'])} "
                     f"| {cost} |")
    return "\n".join(lines) + "\n"



# --- Penn Action: validation split and the visibility flag --------------------------------------


def penn_holdout(ann_file: str | Path, out: str | Path | None = None, val_fraction: float = 0.15,
                 seed: int = 0, invisible_score: float | None = None) -> dict:
    """A copy of a pyskl dict (e.g. from ``deformact prepare penn-action``) with two more splits:
    ``val`` (``val_fraction`` of each class of ``train``, drawn with ``seed``) and ``train_part``
    (the rest of ``train``); ``train`` and ``test`` stay as they are.

    ``invisible_score``: Penn Action marks occluded joints with visibility 0 but still annotates
    a guessed position (see ../shared/datasets/penn_action/README.md). The converter stores
    visibility as the score, and the dataset treats score 0 as "missing" and zeroes the
    coordinates; giving occluded joints this score instead keeps their positions and still tells
    the model (through the score channel) that they were not visible. None keeps the scores.
    On the val split this did not beat the converter's scores (docs/RESULTS.md), so the recipe
    keeps them. Written to ``out`` when given.
    """
    from deformact.data import DataError, load_pyskl, save_pyskl

    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if invisible_score is not None and not 0 < invisible_score <= 1:
        raise ConfigError(f"invisible_score must be in (0, 1] or None, got {invisible_score}")
    data = load_pyskl(ann_file)
    if not isinstance(data, dict) or "train" not in data.get("split", {}):
        raise DataError(f"{ann_file}: needs a pyskl dict with a 'train' split")
    data = {**data, "split": dict(data["split"]), "annotations": [dict(a) for a in data["annotations"]]}
    label = {a["frame_dir"]: int(a["label"]) for a in data["annotations"]}
    train = list(data["split"]["train"])
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for c in sorted({label[n] for n in train}):
        names = sorted(n for n in train if label[n] == c)
        k = max(1, round(val_fraction * len(names))) if len(names) > 1 else 0
        val.update(names[i] for i in rng.choice(len(names), k, replace=False))
    data["split"]["train_part"] = [n for n in train if n not in val]
    data["split"]["val"] = [n for n in train if n in val]
    if invisible_score is not None:
        for a in data["annotations"]:
            score = np.asarray(a["keypoint_score"], dtype=np.float32)
            a["keypoint_score"] = np.where(score > 0, score, np.float32(invisible_score)).astype(np.float32)
    if out is not None:
        save_pyskl(data, out)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deformact.ablation penn-holdout IN.pkl -o OUT.pkl [--val-fraction F] ...``."""
    parser = argparse.ArgumentParser(prog="python -m deformact.ablation",
                                     description="add the val / train_part splits to a pyskl file")
    parser.add_argument("action", choices=["penn-holdout"])
    parser.add_argument("ann_file", help="pyskl .pkl with a 'train' split (deformact prepare penn-action)")
    parser.add_argument("-o", "--out", required=True, help="output .pkl")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="share of each class held out (0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (0)")
    parser.add_argument("--invisible-score", type=float, default=0.0,
                        help="score for occluded (visibility 0) joints so that their guessed position is "
                             "kept, e.g. 0.5; 0 (default) keeps the converter's scores (occluded = missing)")
    args = parser.parse_args(argv)
    from deformact.data import DataError

    try:
        data = penn_holdout(args.ann_file, args.out, args.val_fraction, args.seed, args.invisible_score or None)
    except (DataError, ConfigError, OSError) as e:
        print(f"python -m deformact.ablation: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + " / ".join(f"{len(v):,} {k}" for k, v in data["split"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
