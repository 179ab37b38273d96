"""Where 3D token search looks on the synthetic objects set (docs/RESULTS.md, "objects set").

``deformact explain`` works on videos; the synthetic items are arrays, so this draws one test item
with :func:`deformact.viz.explain.plot_sampling_points` (the 3DTS points of every block and offset
group on the frames the model saw) and marks the deciding object with a white ring of 1.5 object
radii, the radius within which :func:`deformact.data.synthetic_objects.localisation_hits` counts
a point as on the object.

    python -m deformact.tools.explain_objects runs/ablation_objects/runs/full/seed0/best.pt docs/objects_3dts.png
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch


def ring(frames: np.ndarray, track: np.ndarray, radii: float = 1.5) -> np.ndarray:
    """``frames`` (T x H x W x 3, uint8 or floats in [0, 1]) with a white ring of ``radii`` object radii
    around the object of ``track`` (T x 3: x, y, radius as fractions of the frame side)."""
    t, h, w = frames.shape[:3]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    out = frames.copy()
    for i in range(t):
        x, y, r = track[i, 0] * w, track[i, 1] * h, radii * track[i, 2] * w
        d = np.hypot(xx - x, yy - y)
        out[i][np.abs(d - r) < 0.6] = 255 if out.dtype == np.uint8 else 1.0
    return out


def explain_item(model: torch.nn.Module, dataset: Any, index: int, path: str | Path) -> dict[str, Any]:
    """Draw item ``index`` of a synthetic objects ``dataset`` with ``model``'s 3DTS points into
    ``path``; returns the prediction, the label and the last block's localisation (plain and attended) of this item."""
    from deformact.data.synthetic_objects import localisation
    from deformact.viz.explain import denormalize, plot_sampling_points

    item = dataset[index]
    inputs = {k: item[k][None] for k in ("rgb", "pose", "person_mask") if k in item}
    model.eval()
    with torch.no_grad():
        logits, maps = model(**inputs, return_maps=True)
    locations = maps["sampling_locations"][0]  # L x G x P x 3
    frames = denormalize(item["rgb"])  # T x H x W x 3
    track = item["object_track"].numpy()
    plot_sampling_points(ring(frames, track), locations.numpy(), list(range(frames.shape[0])), path)
    near, read, used = localisation(locations[-1][None], maps["sampling_weights"][:, -1], item["object_track"][None])
    names = dataset.class_names
    return {"path": str(path), "label": names[item["label"]], "predicted": names[int(logits.argmax())],
            "localisation": float(near[0] / read[0].clamp(min=1)), "attended_localisation": float(used[0])}


def main(argv: list[str] | None = None) -> int:
    from deformact.data import build_dataset
    from deformact.engine.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_checkpoint(args.ckpt)
    data = {k: v for k, v in model.run_config["data"].items() if k not in ("num_clips",)}
    dataset = build_dataset(**{**data, "split": None, "train": False})
    print(explain_item(model, dataset, args.index, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
