"""The paper's explainability pictures (Sec. 4, "visualization") as PNG, plus their numbers.

* ``joint_importance.png``: attention from the cross-modal tokens to each joint (local joint
  stride attention, as a lift over uniform attention so a group's size biases nothing), drawn on
  the skeleton over a video frame, and as bars per joint;
* ``temporal_attention.png``: the T' x T' temporal stride attention map; pairs of steps that never
  share a group are hatched grey, apart from "no attention";
* ``sampling_points.png``: where 3D token search (3DTS) read the RGB feature volume, drawn on the
  frames the model saw (one colour per block, one marker per offset group);
* ``top5.png``: the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deformact.data import RGB_MEAN, RGB_STD
from deformact.io import jsonout

from .draw import PERSON_COLORS, draw_skeleton

BLOCK_COLORS = ("#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000")
GROUP_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# explain.json sections where NaN means "undefined" and is written null: the points of masked joint
# anchors (docs/DESIGN.md, "joint anchors"); a NaN anywhere else is an error (docs/FAILURES.md)
NAN_MEANS_UNDEFINED = ("sampling_locations",)


def _figure(width: float, height: float):
    # Figure + Agg canvas: no pyplot global state, headless
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def denormalize(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """Model input 3 x T x H x W (normalized) -> T x H x W x 3 uint8 RGB."""
    x = torch.as_tensor(rgb).float()
    mean = torch.tensor(RGB_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(RGB_STD).view(3, 1, 1, 1)
    x = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).numpy()


def crop_to_people(frame: np.ndarray, persons: np.ndarray, present: np.ndarray, pad: float = 0.25,
                   min_frac: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``frame`` to the present people (padded, at least ``min_frac`` of each side) and shift
    their joints (M x V x 3 pixels) into the crop."""
    vis = (persons[..., 2] > 0.05) & present[:, None]
    if not vis.any():
        return frame, persons
    h, w = frame.shape[:2]
    pts = persons[..., :2][vis]
    lo, hi = pts.min(0), pts.max(0)
    size = np.maximum((hi - lo) * (1 + 2 * pad), [min_frac * w, min_frac * h])
    start = np.clip((lo + hi) / 2 - size / 2, 0, np.maximum([w, h] - size, 0)).astype(int)
    end = np.minimum(start + size.astype(int), [w, h])
    out = persons.copy()
    out[..., :2] -= start
    return frame[start[1]:end[1], start[0]:end[0]], out


def plot_joint_importance(frame: np.ndarray, persons: np.ndarray, importance: np.ndarray,
                          present: np.ndarray, edges: Sequence[tuple[int, int]], joint_names: Sequence[str],
                          path: str | Path, title: str = "") -> Path:
    """Skeletons over ``frame`` with each joint coloured and sized by its importance, and bars.

    persons: M x V x 3 (x, y in ``frame`` pixels, score); importance: M x V; present: M bool.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    cmap = colormaps["coolwarm"]
    img = frame.copy()
    imp = np.where(present[:, None], importance, 0.0)
    vals = imp[present] if present.any() else imp
    lo, hi = float(vals.min()), float(vals.max())
    span = hi - lo if hi > lo else 1.0  # colours and sizes span the range actually present
    r = max(2, round(min(img.shape[:2]) / 110))
    for m in np.flatnonzero(present):
        rel = np.clip((imp[m] - lo) / span, 0, 1)
        colors = (np.asarray([cmap(v)[:3] for v in rel]) * 255).astype(np.uint8)
        radii = (r * (0.7 + 1.3 * rel)).round()
        draw_skeleton(img, persons[m], edges, (235, 235, 235), min_score=0.05, joint_colors=colors,
                      joint_radii=radii)
    fig = _figure(12, 5)
    ax_img, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
    ax_img.imshow(img)
    ax_img.set_axis_off()
    ax_img.set_title(title or "joint importance (cross-modal tokens -> joints)")
    sm = ScalarMappable(cmap=cmap)
    sm.set_clim(lo, hi if hi > lo else lo + 1e-6)
    fig.colorbar(sm, ax=ax_img, fraction=0.03, pad=0.01, label="attention")
    y = np.arange(len(joint_names))
    h = 0.8 / max(int(present.sum()), 1)
    for k, m in enumerate(np.flatnonzero(present)):
        ax_bar.barh(y + k * h - 0.4 + h / 2, imp[m], height=h, label=f"person {m}",
                    color=np.asarray(PERSON_COLORS[m % len(PERSON_COLORS)]) / 255)
    ax_bar.set_yticks(y, joint_names, fontsize=8)
    ax_bar.invert_yaxis()
    ax_bar.set_xlabel("attention (mean over heads, groups, time, blocks)")
    if present.sum() > 1:
        ax_bar.set_xlim(0, max(hi, 1e-6) * 1.3)  # room for the legend right of the bars
        ax_bar.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_temporal_attention(att: np.ndarray, step_frames: Sequence[Sequence[int]], path: str | Path,
                            reachable: np.ndarray | None = None) -> Path:
    """Heatmap of the T' x T' temporal stride attention (rows attend to columns). Pairs that cannot
    attend to each other in any block (``reachable`` False: the grouping, or missing people, keep
    them apart) are drawn grey and hatched, not as "no attention"."""
    from matplotlib import colormaps
    from matplotlib.patches import Patch, Rectangle

    fig = _figure(6, 5)
    ax = fig.subplots()
    att = np.asarray(att, dtype=float)
    apart = np.zeros(att.shape, bool) if reachable is None else ~np.asarray(reachable, bool)
    cmap = colormaps["viridis"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_array(att, apart), cmap=cmap, vmin=0)
    for i, j in zip(*np.nonzero(apart)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="#808080", lw=0))
    labels = [f"{f[0]}-{f[-1]}" if len(f) > 1 else str(f[0]) for f in step_frames]
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("key time step (video frames)")
    ax.set_ylabel("query time step (video frames)")
    ax.set_title("temporal stride attention (mean over joints, heads, blocks)")
    if apart.any():
        ax.legend(handles=[Patch(facecolor="#d0d0d0", hatch="///", edgecolor="#808080",
                                 label="never in one group")], loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  fontsize=7, frameon=False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def points_to_pixels(locations: np.ndarray, t_len: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3DTS points (... x 3, (t, y, x) as fractions of the clip's extent, the model's
    ``sampling_locations``) -> (frame index, x, y) in pixels of ``t_len`` frames of h x w, pixel
    edges at integers (a point at fraction f of the width is at f * w; the frame is the one whose
    time span holds t, clipped to the clip)."""
    loc = np.asarray(locations, dtype=float)
    frame = np.clip(np.floor(loc[..., 0] * t_len), 0, t_len - 1).astype(int)
    return frame, loc[..., 2] * w, loc[..., 1] * h


def plot_sampling_points(frames: np.ndarray, locations: np.ndarray, frame_ids: Sequence[int],
                         path: str | Path) -> Path:
    """3DTS points (L x G x P x 3, (t, y, x) as clip fractions) on the T model-input frames.

    A point is drawn on the frame whose time span holds its t (:func:`points_to_pixels`); points
    outside the clip's extent are hollow; NaN points (masked joint anchors) are not drawn.
    """
    t_len, h, w = frames.shape[:3]
    cols = min(t_len, 8)
    rows = -(-t_len // cols)
    fig = _figure(2.1 * cols, 2.3 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < t_len:
            ax.imshow(frames[i], extent=(0, w, h, 0))
            ax.set_title(f"frame {frame_ids[i]}", fontsize=8)
            ax.set_xlim(-0.05 * w, 1.05 * w)
            ax.set_ylim(1.05 * h, -0.05 * h)
    n_blocks, n_groups = locations.shape[:2]
    for b in range(n_blocks):
        for g in range(n_groups):
            pts = locations[b, g]
            pts = pts[np.isfinite(pts).all(-1)]
            t_idx, px, py = points_to_pixels(pts, t_len, h, w)
            inside = ((pts >= 0) & (pts <= 1)).all(-1)
            for i in np.unique(t_idx):
                sel = t_idx == i
                for filled in (True, False):
                    s = sel & (inside == filled)
                    if s.any():
                        axes[i].scatter(px[s], py[s], s=22, marker=GROUP_MARKERS[g % 8],
                                        facecolors=BLOCK_COLORS[b % 8] if filled else "none",
                                        edgecolors="black" if filled else BLOCK_COLORS[b % 8], linewidths=0.7)
    handles = [axes[0].scatter([], [], marker=GROUP_MARKERS[g % 8], c=BLOCK_COLORS[b % 8], edgecolors="black",
                               label=f"block {b + 1}, group {g + 1}")
               for b in range(n_blocks) for g in range(n_groups)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False)
    fig.suptitle("3D token search: sampled points (t, y, x) per block and offset group", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path)
    return Path(path)


def plot_top5(top5: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Horizontal bars of the top-5 classes."""
    fig = _figure(6, 2.8)
    ax = fig.subplots()
    labels = [t["label"] for t in top5][::-1]
    scores = [t["score"] for t in top5][::-1]
    ax.barh(range(len(labels)), scores, color="#0072b2")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    for i, s in enumerate(scores):
        ax.text(min(s + 0.01, 0.9), i, f"{s:.3f}", va="center", fontsize=8)
    ax.set_title(title or "top-5", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def explain(prediction, out_dir: str | Path, checkpoint: str | None = None, max_side: int = 640) -> dict[str, Any]:
    """Write the pictures and ``explain.json`` for clip 0 of a prediction made with ``return_maps``."""
    from deformact.data import get_skeleton
    from deformact.pose import iter_frames

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = prediction
    maps, inputs = p.maps, p.inputs
    idx = np.asarray(p.frame_indices).reshape(-1, p.frame_indices.shape[-1])[0]
    t_len = len(idx)
    pictures: list[str] = []
    info: dict[str, Any] = {
        "video": str(p.video), "checkpoint": checkpoint, "top5": p.top(5),
        "frame_indices": idx.tolist(), "pictures": pictures,
    }
    plot_top5(p.top(5), out / "top5.png", title=p.video.name)
    pictures.append("top5.png")

    if "joint_importance" in maps:
        imp = maps["joint_importance"][0]  # M x V
        present = np.asarray(inputs["person_mask"][0]).astype(bool)
        if present.ndim == 2:  # M x T frame mask: present if seen in any frame
            present = present.any(-1)
        v = imp.shape[-1]
        skel = get_skeleton(None, v)
        mid = int(idx[t_len // 2])
        frame = next(f for i, f in enumerate(iter_frames(p.video, 2 * max_side)) if i == mid)
        kp = np.asarray(p.annotation["keypoint"], np.float32)
        sc = np.asarray(p.annotation["keypoint_score"], np.float32)
        h0, w0 = (int(s) for s in p.annotation["img_shape"][:2])
        scale = np.array([frame.shape[1] / w0, frame.shape[0] / h0], np.float32)
        persons = np.zeros((imp.shape[0], v, 3), np.float32)
        for m, src in enumerate(p.person_order[: imp.shape[0]]):
            persons[m, :, :2] = kp[src, min(mid, kp.shape[1] - 1)] * scale
            persons[m, :, 2] = sc[src, min(mid, sc.shape[1] - 1)]
        frame, persons = crop_to_people(frame, persons, present)
        plot_joint_importance(frame, persons, imp, present, skel.edges, skel.joints, out / "joint_importance.png",
                              title=f"joint importance, frame {mid}")
        pictures.append("joint_importance.png")
        info["joint_importance"] = {
            "joints": list(skel.joints), "frame": mid,
            "persons": [{"slot": m, "present": bool(present[m]), "values": imp[m].round(6).tolist()}
                        for m in range(imp.shape[0])],
        }
    if "temporal_attention" in maps:
        att = maps["temporal_attention"][0]
        tp = max(t_len // att.shape[0], 1)
        steps = [idx[k * tp:(k + 1) * tp].tolist() for k in range(att.shape[0])]
        reach = maps["temporal_reachable"][0] if "temporal_reachable" in maps else np.ones(att.shape, bool)
        plot_temporal_attention(att, steps, out / "temporal_attention.png", reach)
        pictures.append("temporal_attention.png")
        info["temporal_attention"] = {"step_frames": steps, "matrix": att.round(6).tolist(),
                                      "reachable": np.asarray(reach, bool).tolist()}
    if "sampling_locations" in maps and "rgb" in inputs:
        loc = maps["sampling_locations"][0]  # L x G x P x 3
        frames = denormalize(inputs["rgb"][0])
        plot_sampling_points(frames, loc, idx.tolist(), out / "sampling_points.png")
        pictures.append("sampling_points.png")
        info["sampling_locations"] = {"axes": "block x group x point x (t, y, x), fractions of the clip's "
                                              "extent (0 = first frame's start / top / left edge, 1 = end); null: "
                                              "a masked joint anchor",
                                      "values": loc.round(5).tolist()}
    (out / "explain.json").write_text(jsonout.dumps(info, what=str(out / "explain.json"), indent=1,
                                                 null_under=NAN_MEANS_UNDEFINED) + "\n")
    return info
