"""The timeline of ``deformact predict --window ... --timeline PNG``: the top classes' scores over
time, one line per class, plotted at each window's centre, with the windows' spans underneath."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def timeline_classes(windows: Sequence[Mapping[str, Any]], k: int = 5) -> list[str]:
    """The ``k`` classes with the highest score in any window (each window's top-5), best first."""
    best: dict[str, float] = {}
    for w in windows:
        for t in w["top5"]:
            best[t["label"]] = max(best.get(t["label"], 0.0), float(t["score"]))
    return sorted(best, key=lambda name: -best[name])[:k]


def plot_timeline(windows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str = "", k: int = 5) -> Path:
    """Draw the timeline of ``windows`` (the ``windows`` list of ``predict --json``) to ``path``
    (PNG), through a temp file renamed at the end. A class outside a window's top-5 counts 0 there."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deformact.tools.outpaths import atomic_output

    names = timeline_classes(windows, k)
    centres = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True, gridspec_kw={"height_ratios": [5, 1]})
    for name in names:
        ys = [next((t["score"] for t in w["top5"] if t["label"] == name), 0.0) for w in windows]
        ax.plot(centres, ys, marker="o", markersize=3, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title or f"top classes over {len(windows)} windows")
    for i, w in enumerate(windows):
        bx.plot([w["start_s"], w["end_s"]], [i % 3, i % 3], lw=3, color="0.4")
    bx.set_yticks([])
    bx.set_ylabel("windows", fontsize=8)
    bx.set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path, "timeline") as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return path


__all__ = ["plot_timeline", "timeline_classes"]
