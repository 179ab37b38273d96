"""Evaluation: multi-clip testing over a dataset, sharded under torchrun, and the test outputs
(``metrics.json``, ``confusion_matrix.png``, ``scores.npz``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from deformact.data.checks import drop_placeholders
from deformact.engine import dist
from deformact.engine.builders import ShardSampler, check_labels, make_loader, model_inputs
from deformact.engine.metrics import Results, merge, summarize
from deformact.engine.outputs import write_text
from deformact.engine.runtime import autocast, show_progress
from deformact.errors import DataError, TrainingError
from deformact.io import jsonout

PUBLIC_METRICS = ("top1", "top5", "mean_class_acc", "loss")


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, ctx: dist.DistContext | None = None, *, batch_size: int = 16,
             num_clips: int = 1, num_workers: int = 0, amp: torch.dtype | None = None,
             average: str = "prob", desc: str = "test") -> dict:
    """Top-1, top-5, mean class accuracy, loss and confusion over ``dataset``.

    With ``num_clips > 1`` each item holds N clips; their softmax (``average="prob"``) or logits
    (``"score"``) are averaged per video. Under torchrun every rank evaluates its shard and the
    per-sample results are gathered, so all ranks return the single-process numbers.

    Besides the metrics, ``scores`` (N x C float32: the clip-averaged probabilities or logits),
    ``labels`` and ``index`` (dataset indices) hold the per-video results in dataset order.
    """
    ctx = ctx or dist.DistContext(device=next(model.parameters()).device)
    sampler = ShardSampler(len(dataset), ctx.rank, ctx.world_size)
    loader = make_loader(dataset, batch_size, sampler, num_workers, ctx.device)
    was_training = model.training
    model.eval()
    num_classes = int(dataset.num_classes)
    # a copy: bad clips that ``skip_bad`` replaced by placeholders are taken out of it
    res, order, pos, skipped = Results(), list(sampler.indices), 0, 0
    # sets that expose their deciding object (deformact.data.synthetic_objects) also score where
    # the 3DTS points of the last block fall: [near the object, all points] (docs/RESULTS.md)
    cfg = getattr(model, "config", None)
    locate = (callable(getattr(dataset, "object_tracks", None)) and cfg is not None and cfg.use_rgb
              and cfg.rgb_attention in ("deformable", "grid"))
    hits = [0, 0, 0.0, 0]  # points near the object, points read, attention on them, samples
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=not (show_progress() and ctx.is_main))
    for batch in bar:
        # off the training split a bad clip is left out and counted, never replaced by another
        batch, dropped = drop_placeholders(batch, order, pos)
        skipped += dropped
        if not batch:
            continue
        label = batch["label"].to(ctx.device).long()
        check_labels(label, num_classes)
        b = label.shape[0]
        with autocast(ctx.device, amp):
            logits = model(**model_inputs(batch, ctx.device, clips=num_clips > 1), return_maps=locate)
        if locate:
            from deformact.data.synthetic_objects import localisation

            logits, maps = logits
            near, read, used = localisation(maps["sampling_locations"][:, -1].cpu(),
                                            maps["sampling_weights"][:, -1].cpu(), batch["object_track"].flatten(0, -3))
            hits = [hits[0] + int(near.sum()), hits[1] + int(read.sum()), hits[2] + float(used.sum()),
                    hits[3] + len(near)]
        logits = logits.float()
        logits = logits.view(b, -1, logits.shape[-1])
        scores = logits.softmax(-1).mean(1) if average == "prob" else logits.mean(1)
        res.add(torch.as_tensor(order[pos:pos + b]), label, scores, average)
        pos += b
    model.train(was_training)
    merged = merge(dist.all_gather_objects(ctx, res.arrays()))
    if not len(merged["label"]):
        raise DataError(f"no {desc} clip could be evaluated: all {len(dataset)} were left out as bad (skip_bad)")
    out = summarize(merged, num_classes)
    out["part_acc"] = part_accuracies(dataset, merged["scores"], merged["label"])
    if locate:
        gathered = dist.all_gather_objects(ctx, hits)
        out["localisation"] = sum(h[0] for h in gathered) / max(sum(h[1] for h in gathered), 1)
        out["attended_localisation"] = sum(h[2] for h in gathered) / max(sum(h[3] for h in gathered), 1)
    out.update(num_clips=num_clips, scores=merged["scores"], labels=merged["label"], index=merged["index"])
    out["skipped_samples"] = (sum(dist.all_gather_objects(ctx, skipped))
                              + int(getattr(dataset, "num_left_out", 0) or 0))
    return out


def part_accuracies(dataset: Dataset, scores: Any, labels: Any) -> dict[str, float]:
    """For sets whose labels combine parts (``dataset.label_parts()``: name -> class-to-part map,
    e.g. the objects set's motion and object): ``<name>_acc``, the share of videos whose predicted
    class has the right part. Empty for other sets."""
    parts = getattr(dataset, "label_parts", None)
    if not callable(parts):
        return {}
    pred, truth = torch.as_tensor(scores).argmax(-1), torch.as_tensor(labels).long()
    return {f"{name}_acc": float((part[pred] == part[truth]).double().mean())
            for name, part in ((n, torch.as_tensor(m)) for n, m in parts().items())}


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (temp file + rename)."""
    write_text(path, jsonout.dumps(obj, what=str(path), indent=2) + "\n")


def write_scores(m: Mapping[str, Any], path: Path, names: Sequence[str], split: str, class_names: Sequence[str],
                 average: str) -> Path:
    """``scores.npz`` of an :func:`evaluate` result (``deformact.io.scores`` format, atomic)."""
    from deformact.io.scores import save_scores

    frame_dir = [str(names[i]) for i in m["index"]]
    return save_scores(path, scores=m["scores"], labels=m["labels"], frame_dir=frame_dir, split=split,
                       class_names=list(class_names), average=average, error=TrainingError)


def write_test_outputs(m: dict, out: Path, class_names: list[str], ctx: dist.DistContext,
                       extra: Mapping[str, Any] | None = None, echo: Callable[[str], None] = print, *,
                       names: Sequence[str] | None = None, split: str = "test", average: str = "prob") -> dict:
    """``metrics.json``, ``confusion_matrix.png`` and, given the videos' ``names`` (dataset order),
    ``scores.npz`` (rank 0); returns the metrics dict."""
    metrics = {**{k: m[k] for k in PUBLIC_METRICS}, "num_samples": m["num_samples"],
               "num_clips": m["num_clips"], "skipped_samples": int(m.get("skipped_samples", 0)),
               **{k: m[k] for k in ("localisation", "attended_localisation") if k in m},
               **m.get("part_acc", {}),
               **(extra or {})}
    if ctx.is_main:
        from deformact.engine.outputs import make_out_dir
        from deformact.engine.plots import plot_confusion

        make_out_dir(out)
        if names is not None and "scores" in m:
            write_scores(m, out / "scores.npz", names, split, class_names, average)
        write_json(out / "metrics.json", metrics)
        plot_confusion(m["confusion"], class_names, out / "confusion_matrix.png",
                       title=f"top-1 {m['top1']:.3f} ({m['num_samples']} videos, {m['num_clips']} clip(s))")
        echo(f"test: top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  mean class acc {m['mean_class_acc']:.4f}  "
             f"loss {m['loss']:.4f}  ({m['num_samples']} videos x {m['num_clips']} clip(s))")
    return metrics
