"""Training curves and confusion matrix as PNG (matplotlib's Agg canvas, no display needed), written
atomically (temp file + rename)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deformact.engine.outputs import atomic_write


def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot global state, works headless and in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(history: Sequence[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train and test) from the ``log.jsonl`` records."""
    path = Path(path)
    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    evald = [h for h in history if "test_loss" in h]
    if evald:
        ax_loss.plot([h["epoch"] for h in evald], [h["test_loss"] for h in evald], "s-", label="test")
        ax_acc.plot([h["epoch"] for h in evald], [h["test_top1"] for h in evald], "s-", label="test top-1")
        ax_acc.plot([h["epoch"] for h in evald], [h["test_top5"] for h in evald], "^--", label="test top-5")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], "o-", label="train top-1")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), "plot")


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Row-normalized confusion matrix (true class down, predicted across)."""
    path = Path(path)
    cm = np.asarray(confusion, dtype=np.float64)
    n = len(cm)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(24.0, max(5.0, 0.35 * n + 2.5))
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 60:
        names = [str(c)[:28] for c in class_names] if len(class_names) == n else [str(i) for i in range(n)]
        ticks = np.arange(n)
        fs = 8 if n <= 20 else 5
        ax.set_xticks(ticks, names, rotation=90, fontsize=fs)
        ax.set_yticks(ticks, names, fontsize=fs)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), "plot")
