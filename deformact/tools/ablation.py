"""The paper's ablation study (Sec. 4.3) on data we control (``deformact ablate``).

Every row switches one thing off in the base config (by default ``configs/synthetic.yaml``, the
synthetic cross-modal set of :mod:`deformact.data.synthetic`), then trains and tests it with the
same seeds as the full model. Rows are the ablation switches of docs/DESIGN.md: the single
modalities, 3D token search replaced by a fixed grid or by full attention over all RGB tokens,
strides set to 1, and the cross-modal tokens replaced by one CLS token per stream.

Outputs in ``DIR``: ``runs/<row>/seed<k>/`` (one engine run each, see
:func:`deformact.engine.run`), ``ablation.json`` (every number) and ``ablation.md`` (the table).
Finished runs are reused when their config is unchanged, so an interrupted ablation continues.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from deformact.engine.config import apply_overrides, dump_config, validate_config
from deformact.errors import ConfigError, DeformactError
from deformact.io import jsonout


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
    # the RGB stream alone learns several times slower than the fused model (docs/RESULTS.md, "objects
    # set"): its ceiling is measured at 40 epochs, with the 3DTS and with the fixed grid
    Row("rgb_only_40ep", "RGB only, 40 epochs", ("data.modality=rgb", "epochs=40")),
    Row("rgb_only_grid_40ep", "RGB only, rgb_attention=grid, 40 epochs",
        ("data.modality=rgb", "model.rgb_attention=grid", "epochs=40")),
    # the RGB backbone downsampled one factor of 2 at a time (docs/DESIGN.md, "RGB backbone")
    Row("r2plus1d", "backbone=r2plus1d (stride-2 steps instead of the stem's stride-4 conv)",
        ("model.backbone=r2plus1d",)),
    Row("rgb_only_r2plus1d", "RGB only, backbone=r2plus1d", ("data.modality=rgb", "model.backbone=r2plus1d")),
    Row("rgb_only_r2plus1d_40ep", "RGB only, backbone=r2plus1d, 40 epochs",
        ("data.modality=rgb", "model.backbone=r2plus1d", "epochs=40")),
    Row("rgb_only_r2plus1d_full_40ep", "RGB only, backbone=r2plus1d, rgb_attention=full, 40 epochs",
        ("data.modality=rgb", "model.backbone=r2plus1d", "model.rgb_attention=full", "epochs=40")),
    Row("rgb_only_r2plus1d_60ep", "RGB only, backbone=r2plus1d, 60 epochs",
        ("data.modality=rgb", "model.backbone=r2plus1d", "epochs=60")),
    # the same with the offsets at the full learning rate: can a search that moves find the still hand?
    Row("rgb_only_r2plus1d_60ep_offset_lr_1", "RGB only, backbone=r2plus1d, 60 epochs, offsets at the full lr",
        ("data.modality=rgb", "model.backbone=r2plus1d", "epochs=60", "train.offset_lr_mult=1.0")),
    # and 90 epochs: does the seed still climbing at 60 (train top-1 0.33 -> 0.42) reach the still hand?
    Row("rgb_only_r2plus1d_90ep_offset_lr_1", "RGB only, backbone=r2plus1d, 90 epochs, offsets at the full lr",
        ("data.modality=rgb", "model.backbone=r2plus1d", "epochs=90", "train.offset_lr_mult=1.0")),
    # the backbone that keeps the most resolution (docs/DESIGN.md, "RGB backbone family"), 30 and 40 epochs
    Row("rgb_only_x3d_tiny_30ep", "RGB only, backbone=x3d_tiny, 30 epochs, offsets at the full lr",
        ("data.modality=rgb", "model.backbone=x3d_tiny", "epochs=30", "train.offset_lr_mult=1.0")),
    Row("rgb_only_x3d_tiny_40ep", "RGB only, backbone=x3d_tiny, 40 epochs, offsets at the full lr",
        ("data.modality=rgb", "model.backbone=x3d_tiny", "epochs=40", "train.offset_lr_mult=1.0")),
    # half the learning rate: the runs that stall are set on their plateau in the first epochs, near the peak lr
    Row("rgb_only_r2plus1d_60ep_lr_1e-3", "RGB only, backbone=r2plus1d, 60 epochs, offsets at the full lr, lr 1e-3",
        ("data.modality=rgb", "model.backbone=r2plus1d", "epochs=60", "train.offset_lr_mult=1.0",
         "train.lr=0.001")),
    Row("grid_r2plus1d", "rgb_attention=grid, backbone=r2plus1d",
        ("model.rgb_attention=grid", "model.backbone=r2plus1d")),
    Row("grid", "rgb_attention=grid (3DTS off: fixed uniform sampling grid)", ("model.rgb_attention=grid",)),
    Row("full_attn", "rgb_attention=full (all RGB tokens as keys)", ("model.rgb_attention=full",)),
    Row("divided", "rgb_attention=divided (TimeSformer: time, then space)", ("model.rgb_attention=divided",)),
    Row("joint_stride_1", "joint_stride=1 (full spatial attention)", ("model.joint_stride=1",)),
    Row("temporal_stride_1", "temporal_stride=1 (full temporal attention)", ("model.temporal_stride=1",)),
    Row("no_cm_tokens", "cross_modal_tokens=False (a CLS token per stream, fused at the head)",
        ("model.cross_modal_tokens=false",)),
    # the 3DTS offsets conditioned on the CM tokens (docs/DESIGN.md, "offset conditioning")
    Row("offset_cm", "offset_condition=cm (3DTS offsets see the CM tokens and the cell positions)",
        ("model.offset_condition=cm",)),
    # 3DTS with or without reference points at the joints (docs/DESIGN.md, "joint anchors")
    Row("anchors", "search_anchors=joints (3DTS also starts at every seen joint)", ("model.search_anchors=joints",)),
    Row("no_anchors", "search_anchors=none (the paper's 3DTS: the reference grid only)",
        ("model.search_anchors=none",)),
    # the paper's grid ablation against the paper's 3DTS: both without joint anchors
    Row("grid_no_anchors", "rgb_attention=grid, search_anchors=none (the fixed reference grid only)",
        ("model.rgb_attention=grid", "model.search_anchors=none")),
    # the offset networks at a tenth of the learning rate (Deformable DETR's recipe) or at the full rate
    Row("offset_lr_01", "train.offset_lr_mult=0.1 (3DTS offsets learn at 0.1x the lr)", ("train.offset_lr_mult=0.1",)),
    Row("offset_lr_1", "train.offset_lr_mult=1 (3DTS offsets learn at the full lr)", ("train.offset_lr_mult=1.0",)),
    # a generated set drawn once instead of afresh every epoch (synthetic data only)
    Row("fixed_set", "data.regenerate_every=0 (one fixed generated training set)", ("data.regenerate_every=0",)),
    # linear layers at timm's std 0.02 instead of Glorot's scale (docs/DESIGN.md, "initialization")
    Row("trunc_normal_init", "weight_init=trunc_normal (linear layers at std 0.02, the earlier default)",
        ("model.weight_init=trunc_normal",)),
)
ROW_NAMES = tuple(r.name for r in ROWS)
METRICS = ("top1", "mean_class_acc", "top5")
# sets with a deciding object: the share of 3DTS points on it, and of the CM attention on them;
# then the halves of its labels scored apart (videos with the right motion / the right object)
LOCALISATION = ("localisation", "attended_localisation", "motion_acc", "object_acc")


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
    """Whether ``run_dir`` holds a run of ``cfg``. Both sides are compared with defaults filled in,
    so a run made before an option existed (it ran with the default) is the same run; the model
    defaults it ran with come from its checkpoint (:func:`_same_model`)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return False
    try:
        stored = yaml.safe_load(path.read_text())
        same = isinstance(stored, dict) and (yaml.safe_load(dump_config(validate_config(stored)))
                                             == yaml.safe_load(dump_config(cfg)))
    except (yaml.YAMLError, DeformactError):
        return False
    return same and _same_model(run_dir, cfg)


# model fields the data decides (deformact.engine.builders.infer_shapes), taken from the checkpoint
_DATA_FIELDS = ("num_classes", "modality", "frames", "image_size", "num_persons", "num_joints", "pose_channels")


def _same_model(run_dir: Path, cfg: Mapping[str, Any]) -> bool:
    """Whether the checkpoint in ``run_dir`` was trained with the model ``cfg`` resolves to today.
    ``config.yaml`` holds only the model fields the user set; the checkpoint holds every field as
    resolved then, so a default changed since (the weight init, say) makes it another run. A field
    added since is absent there and counts as its default. No checkpoint: config.yaml decides."""
    from deformact.engine.checkpoint import safe_torch_load
    from deformact.models.config import DEFAULT_PRESET, make_config

    path = run_dir / "last.pt"
    if not path.is_file():
        return True
    try:
        stored = safe_torch_load(path)["config"]["model"]
        user = dict(cfg["model"])
        preset = user.pop("preset", DEFAULT_PRESET)
        now = make_config(preset, **{**{k: stored[k] for k in _DATA_FIELDS if k in stored}, **user}).to_dict()
    except Exception:  # unreadable, or not a deformact checkpoint: not a run to reuse
        return False
    return all(stored.get(k, v) == v for k, v in now.items())


def finished_metrics(cfg: Mapping[str, Any], run_dir: Path) -> dict | None:
    """The metrics of a finished run of exactly ``cfg`` in ``run_dir``, else None."""
    metrics_file = run_dir / "metrics.json"
    if not (metrics_file.is_file() and _same_config(run_dir, cfg)):
        return None
    try:
        return jsonout.loads(metrics_file.read_text())
    except (OSError, ValueError):
        return None


def train_row(cfg: Mapping[str, Any], run_dir: Path, echo: Callable[[str], None] = print) -> dict:
    """Train and test one config in ``run_dir``, reusing a finished run with the same config."""
    from deformact.engine import run

    metrics_file = run_dir / "metrics.json"
    done = finished_metrics(cfg, run_dir)
    if done is not None:
        echo(f"  reusing {metrics_file}")
        return done
    resume = _same_config(run_dir, cfg) and (run_dir / "last.pt").is_file()
    tic = time.perf_counter()
    metrics = run(cfg, run_dir, resume=resume, overwrite=not resume, echo=echo)
    metrics = {**metrics, "train_minutes": (time.perf_counter() - tic) / 60}
    metrics_file.write_text(jsonout.dumps(metrics, what=str(metrics_file), indent=2) + "\n")
    return metrics


def model_cost(cfg: Mapping[str, Any], step_repeats: int = 5) -> dict:
    """Params, forward GFLOPs (batch 1, :func:`deformact.models.flops.model_report`) and the
    train-step time (:func:`deformact.engine.train_step`: forward + backward + AdamW step at
    ``train.batch_size`` on the CPU, best of ``step_repeats`` after a warm-up: the best is the least
    disturbed by other work on the machine)."""
    from torch.utils.data import default_collate

    from deformact.engine.builders import build_dataset, build_model_for
    from deformact.engine.step import train_step
    from deformact.models.flops import model_report

    torch.manual_seed(0)
    data = build_dataset(cfg["data"], "train", train=True)
    model = build_model_for(cfg["model"], data)
    report = model_report(model)
    bs = int(cfg["train"]["batch_size"])
    batch = default_collate([data[i % len(data)] for i in range(bs)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(2 + step_repeats):
        tic = time.perf_counter()
        train_step(model, batch, opt, device=torch.device("cpu"))
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
                 rows: Sequence[str] | None = None, echo: Callable[[str], None] = print,
                 train: bool = True) -> dict:
    """Train and test every row with every seed; write ``ablation.json`` and ``ablation.md``.
    With ``train=False`` nothing is trained: the table holds the runs already finished (a long
    ablation spread over several sessions), and a row without any is left out."""
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
            run_dir = out / "runs" / row.name / f"seed{seed}"
            if not train:
                m = finished_metrics(cfg, run_dir)
                if m is None:
                    echo(f"[ablate] {row.name} seed {seed}: not finished, left out")
                    continue
            else:
                echo(f"[ablate] {row.name} seed {seed}: {' '.join(row.overrides) or '(base config)'}")
                m = train_row(cfg, run_dir, echo=lambda msg, tag=f"{row.name}/{seed}": echo(f"  [{tag}] {msg}"))
            per_seed.append({"seed": seed, **{k: m[k] for k in (*METRICS, "train_minutes", *LOCALISATION)
                                              if m.get(k) is not None}})
        if not per_seed:
            continue
        results.append({"name": row.name, "label": row.label, "overrides": list(row.overrides),
                        "seeds": per_seed,
                        **{k: dict(zip(("mean", "std"), mean_std([s[k] for s in per_seed]))) for k in METRICS}})
        for key in LOCALISATION:  # sets with a deciding object (synthetic objects)
            if all(key in s for s in per_seed):
                results[-1][key] = dict(zip(("mean", "std"), mean_std([s[key] for s in per_seed])))
    # costs last, one row after another, so that every row is timed under similar machine load
    by_name = {row.name: row for row in chosen}
    for res in results:
        echo(f"[ablate] cost of {res['name']}")
        res.update(model_cost(row_config(base, by_name[res["name"]], res["seeds"][0]["seed"])))
    summary = {"base_config": copy.deepcopy(base), "seeds": seeds, "rows": results,
               "torch_threads": torch.get_num_threads(), "code": code}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(jsonout.dumps(summary, what=str(out / "ablation.json"), indent=2) + "\n")
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
    loc = any("localisation" in r for r in rows)  # a column only for sets with a deciding object
    lines = [
        f"Mean ± std over the seeds {seeds} (those finished, per row below); accuracies in % on the test split. "
        "GFLOPs: forward, one sample. Step: forward + backward + AdamW step of one training batch "
        f"on CPU ({summary.get('torch_threads', '?')} threads), best of 5. Code: {summary.get('code', '?')}."
        + (" Localisation: % of the last block's 3DTS points within 1.5 radii of the deciding object;"
           " attended: % of the CM tokens' attention to the sampled keys that goes to those points;"
           " motion / object: % of the videos whose predicted class has the right motion / object."
           if loc else ""),
        "",
        "| row | change | top-1 | Δ top-1 | mean class acc | params | GFLOPs | step (ms) |"
        + (" localisation | attended | motion | object |" if loc else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if loc else ""),
    ]
    for r in rows:
        delta = "" if ref is None or r is ref else f"{100 * (r['top1']['mean'] - ref['top1']['mean']):+.1f}"
        cost = (f"{r['params']:,} | {r['gflops']:.3f} | {r['step_ms']:.0f}" if "params" in r
                else " | | ")
        lines.append(f"| {r['name']} | {r['label']} | {_pm(r['top1'])} | {delta} | {_pm(r['mean_class_acc'])} "
                     f"| {cost} |" + ("".join(f" {_pm(r[k])} |" if k in r else " |" for k in LOCALISATION)
                                      if loc else ""))
    lines += ["", "Per seed, top-1 % (minutes to train and test):"]
    for r in rows:
        per = ", ".join(f"seed {s['seed']}: {100 * s['top1']:.1f}"
                        + (f" ({s['train_minutes']:.1f})" if "train_minutes" in s else "") for s in r["seeds"])
        lines.append(f"- {r['name']}: {per}")
    return "\n".join(lines) + "\n"


__all__ = ["METRICS", "ROWS", "ROW_NAMES", "Row", "format_table", "mean_std", "model_cost", "row_config",
           "run_ablation", "select_rows", "train_row"]
