"""Score ensembles: fuse the per-video class scores that several runs saved for the same test split.

The standard multi-stream recipe of skeleton recognition (joint, bone, joint motion, bone motion;
docs/RESULTS.md) trains one model per input feature and adds their class scores per video, read
from each run's ``scores.npz`` (:mod:`deformact.io.scores`).

Runs are fused only when they scored the same videos of the same split with the same labels and
classes; anything else is a :class:`~deformact.errors.DataError` naming the first mismatch. The
output folder is checked before any score is read: never an input run's folder, and it replaces
only files an earlier ensemble wrote there (docs/FAILURES.md, "Which files an output may replace").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deformact.errors import DataError
from deformact.io import jsonout
from deformact.io.atomic import check_outputs, record_outputs, write_text
from deformact.io.scores import SCORES_FILE, RunScores, load_scores, save_scores

ENSEMBLE_OUTPUTS = ("metrics.json", "confusion_matrix.png", "per_class.md", SCORES_FILE)


def check_ensemble_out(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as the ensemble's folder, checked before any work and never created here: no
    input run's folder (nor an input file), and no file there that an earlier ensemble did not write."""
    from deformact.engine.outputs import check_out_dir

    out = check_out_dir(out_dir)
    runs = [Path(r) for r in run_dirs]
    runs += [r.parent for r in runs if r.is_file()]  # a scores.npz given as a file: its run folder too
    check_outputs(out, ENSEMBLE_OUTPUTS, [("one of the runs to fuse", r) for r in runs], kind="ensemble",
                  error=DataError)
    return out


def check_compatible(runs: Sequence[RunScores]) -> None:
    """Same split, classes, score kind, videos (in order) and labels, or a DataError naming the first
    difference against the first run."""
    if not runs:
        raise DataError("no runs to fuse")
    ref = runs[0]
    for r in runs[1:]:
        where = f"{r.path} vs {ref.path}"
        if r.split != ref.split:
            raise DataError(f"{where}: scored different splits ({r.split!r} vs {ref.split!r})")
        if r.class_names != ref.class_names:
            raise DataError(f"{where}: different classes ({len(r.class_names)} vs {len(ref.class_names)})")
        if r.average != ref.average:
            raise DataError(f"{where}: one saved probabilities, the other logits (test.average)")
        if len(r.frame_dir) != len(ref.frame_dir) or (r.frame_dir != ref.frame_dir).any():
            theirs, ours = set(r.frame_dir.tolist()), set(ref.frame_dir.tolist())
            if theirs != ours:
                extra = sorted(theirs ^ ours)[:3]
                raise DataError(f"{where}: scored different videos ({len(r.frame_dir)} vs {len(ref.frame_dir)}; "
                                f"e.g. {extra})")
            raise DataError(f"{where}: scored the same videos in a different order")
        if (r.labels != ref.labels).any():
            i = int(np.flatnonzero(r.labels != ref.labels)[0])
            raise DataError(f"{where}: labels differ, first at {ref.frame_dir[i]!r}")


def fuse(runs: Sequence[RunScores], weights: Sequence[float] | None = None) -> np.ndarray:
    """The weighted sum of the runs' scores (N x C); weights default to 1 each."""
    check_compatible(runs)
    weights = [1.0] * len(runs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(runs):
        raise DataError(f"{len(weights)} weights for {len(runs)} runs")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"weights must be >= 0 with a positive sum, got {weights}")
    return sum(w * r.scores for w, r in zip(weights, runs))


def search_weights(runs: Sequence[RunScores], grid: Sequence[float] = (0.0, 0.5, 1.0, 1.5, 2.0)
                   ) -> tuple[list[float], dict]:
    """The fusion weights (one per run, each from ``grid``) with the best top-1 on the runs' split,
    ties broken by mean class accuracy, then by the fewest runs left out, then by the weights
    closest to equal (so a split too small to tell them apart keeps the plain sum). Meant for a
    validation split: choosing weights on the test split would report a flattered number."""
    import itertools

    check_compatible(runs)
    ref = runs[0]
    best_key, best = None, ([1.0] * len(runs), {})
    for weights in itertools.product(grid, repeat=len(runs)):
        if sum(weights) <= 0:
            continue
        scale = max(weights)
        m = classification_metrics(sum(w * r.scores for w, r in zip(weights, runs)), ref.labels,
                                   len(ref.class_names))
        spread = sum(abs(w / scale - 1.0) for w in weights)
        key = (m["top1"], m["mean_class_acc"], -sum(w == 0 for w in weights), -spread)
        if best_key is None or key > best_key:
            best_key, best = key, ([w / scale for w in weights], m)
    return best


def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top1, top5, mean_class_acc, num_samples and the confusion matrix (true x predicted counts)."""
    from deformact.engine.metrics import summarize

    k = min(5, scores.shape[1])
    # stable ordering: ties go to the lower class index, as torch.topk does on CPU for equal values
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    res = {"label": labels, "topk": topk, "loss": np.zeros(len(labels))}
    out = summarize(res, num_classes)
    out.pop("loss")
    return out


def per_class_table(confusion: np.ndarray, class_names: Sequence[str]) -> str:
    """A Markdown table: support and accuracy per class, and each class's most frequent confusion."""
    confusion = np.asarray(confusion)
    lines = ["| class | videos | accuracy | most often read as |", "|---|---|---|---|"]
    for i, name in enumerate(class_names):
        row = confusion[i]
        n = int(row.sum())
        acc = f"{100 * row[i] / n:.1f} %" if n else "—"
        wrong = row.copy()
        wrong[i] = 0
        worst = f"{class_names[int(wrong.argmax())]} ({int(wrong.max())})" if wrong.max() > 0 else "—"
        lines.append(f"| {name} | {n} | {acc} | {worst} |")
    return "\n".join(lines) + "\n"


def ensemble(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
             weights: Sequence[float] | None = None) -> dict:
    """Fuse the runs' saved scores; write ``metrics.json``, ``confusion_matrix.png``,
    ``per_class.md`` and the fused ``scores.npz`` (so ensembles can be fused again) to ``out_dir``."""
    out = check_ensemble_out(run_dirs, out_dir)
    runs = [load_scores(r) for r in run_dirs]
    fused = fuse(runs, weights)
    ref = runs[0]
    m = classification_metrics(fused, ref.labels, len(ref.class_names))
    streams = [{"run": str(r.path.parent), **{k: v for k, v in classification_metrics(
        r.scores, r.labels, len(r.class_names)).items() if k != "confusion"}} for r in runs]
    metrics = {"top1": m["top1"], "top5": m["top5"], "mean_class_acc": m["mean_class_acc"],
               "num_samples": m["num_samples"], "split": ref.split,
               "weights": [1.0] * len(runs) if weights is None else [float(w) for w in weights],
               "runs": streams}
    out.mkdir(parents=True, exist_ok=True)
    record_outputs(out, ENSEMBLE_OUTPUTS, "ensemble", error=DataError)
    from deformact.engine.plots import plot_confusion

    write_text(out / "metrics.json", jsonout.dumps(metrics, what=str(out / "metrics.json"), indent=2) + "\n")
    plot_confusion(m["confusion"], list(ref.class_names), out / "confusion_matrix.png",
                   title=f"ensemble of {len(runs)}: top-1 {m['top1']:.3f} ({m['num_samples']} videos)")
    write_text(out / "per_class.md", per_class_table(np.asarray(m["confusion"]), ref.class_names))
    save_scores(out / SCORES_FILE, scores=fused, labels=ref.labels, frame_dir=ref.frame_dir.tolist(),
                split=ref.split, class_names=ref.class_names, average=ref.average)
    return metrics
