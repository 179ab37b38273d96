"""Classification metrics: top-1, top-5, mean class accuracy (FineGYM's metric), loss, confusion.

Per-sample results are collected with their dataset index and summarized in index order, so a
sharded evaluation over several processes gives bit-identical numbers to a single process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Results:
    """Per-sample outcomes of an evaluation (any order; :func:`summarize` sorts by index)."""

    index: list[np.ndarray] = field(default_factory=list)
    label: list[np.ndarray] = field(default_factory=list)
    topk: list[np.ndarray] = field(default_factory=list)  # N x k predicted classes, best first
    loss: list[np.ndarray] = field(default_factory=list)  # N per-sample cross-entropy (float64)
    scores: list[np.ndarray] = field(default_factory=list)  # N x C clip-averaged scores (float32)

    def add(self, index: torch.Tensor, label: torch.Tensor, scores: torch.Tensor, average: str) -> None:
        """Record one batch. ``scores``: B x C clip-averaged probabilities or logits."""
        scores = scores.float()
        if average == "prob":
            logp = scores.clamp_min(1e-12).log()
        else:
            logp = torch.log_softmax(scores, dim=-1)
        nll = -logp.gather(1, label.view(-1, 1)).squeeze(1)
        k = min(5, scores.shape[1])
        kept = scores.detach().cpu().numpy().astype(np.float32)
        self.index.append(index.cpu().numpy().astype(np.int64))
        self.label.append(label.cpu().numpy().astype(np.int64))
        # stable order: ties go to the lower class index, so the saved scores' argmax is the top-1
        self.topk.append(np.argsort(-kept, axis=1, kind="stable")[:, :k].astype(np.int64))
        self.loss.append(nll.double().cpu().numpy())
        self.scores.append(kept)

    def arrays(self) -> dict[str, np.ndarray]:
        if not self.index:
            return {"index": np.zeros(0, np.int64), "label": np.zeros(0, np.int64),
                    "topk": np.zeros((0, 1), np.int64), "loss": np.zeros(0, np.float64),
                    "scores": np.zeros((0, 0), np.float32)}
        return {"index": np.concatenate(self.index), "label": np.concatenate(self.label),
                "topk": np.concatenate(self.topk), "loss": np.concatenate(self.loss),
                "scores": np.concatenate(self.scores)}


def merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-process results and sort them by dataset index."""
    parts = [p for p in parts if len(p["index"])]
    if not parts:
        return Results().arrays()
    k = min(p["topk"].shape[1] for p in parts)
    keys = [key for key in ("index", "label", "topk", "loss", "scores") if all(key in p for p in parts)]
    out = {key: np.concatenate([p[key] for p in parts]) if key != "topk"
           else np.concatenate([p["topk"][:, :k] for p in parts]) for key in keys}
    order = np.argsort(out["index"], kind="stable")
    return {key: value[order] for key, value in out.items()}


def summarize(res: dict[str, np.ndarray], num_classes: int) -> dict:
    """Metrics dict (floats) plus the ``confusion`` matrix (true x predicted counts, as lists)."""
    n = len(res["label"])
    if n == 0:
        raise ValueError("no samples were evaluated")
    label, pred = res["label"], res["topk"][:, 0]
    correct = pred == label
    in_top5 = (res["topk"][:, :5] == label[:, None]).any(axis=1)
    support = np.bincount(label, minlength=num_classes)
    hits = np.bincount(label[correct], minlength=num_classes)
    present = support > 0
    confusion = np.bincount(label * num_classes + pred, minlength=num_classes**2).reshape(num_classes, -1)
    return {
        "top1": float(correct.sum() / n),
        "top5": float(in_top5.sum() / n),
        "mean_class_acc": float(np.mean(hits[present] / support[present])),
        "loss": math.fsum(res["loss"].tolist()) / n,
        "num_samples": int(n),
        "confusion": confusion.tolist(),
    }
