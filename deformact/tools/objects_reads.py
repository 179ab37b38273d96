"""How close do a model's 3DTS reads come to the deciding object? (docs/RESULTS.md, "objects set").

``localisation`` counts points within 1.5 object radii, which a wrist anchor beside the held
object already satisfies; this measures the distance itself: per test clip, the last block's point
nearest to the object's centre (in object radii, in the frame its time falls in), and the mean
distance of the reads weighted by the CM tokens' attention to their keys. It also says how far the
reference-grid points have moved from the grid (:func:`grid_displacement`): offsets that learn too
slowly leave a deformable model reading where the grid model reads.

    python -m deformact.tools.objects_reads runs/ablation_objects/runs/full/seed0/last.pt
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch.utils.data import DataLoader

from deformact.io import jsonout


def read_distances(points: torch.Tensor, weights: torch.Tensor, track: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``points`` B x G x P x 3 ((t, y, x) clip fractions, one block's ``sampling_locations``),
    ``weights`` B x P (its ``sampling_weights``), ``track`` B x T x 3 -> (the nearest point's
    distance to the object centre in object radii, the attention-weighted mean distance), each B.
    Masked anchors (NaN points) are left out."""
    from deformact.data.synthetic_objects import object_distances

    b, g = points.shape[:2]
    dist = object_distances(points, track).flatten(1)  # B x (G P), NaN where an anchor is masked
    seen = dist.isfinite()
    nearest = dist.masked_fill(~seen, float("inf")).min(1).values
    w = (weights.float()[:, None, :] / g).expand(b, g, -1).reshape(b, -1) * seen
    weighted = (dist.nan_to_num(0.0) * w).sum(1) / w.sum(1).clamp_min(1e-12)
    return nearest, weighted


def grid_displacement(model: torch.nn.Module, locations: torch.Tensor) -> torch.Tensor:
    """How far each block's reference-grid points lie from their reference, in grid cells:
    ``locations`` B x L x G x P x 3 (``sampling_locations``; the grid's points come first) -> B x L x
    G x P_grid, the largest of the three axes' displacements (0 for the grid model)."""
    from deformact.models.deformable import cached_grid, to_clip_fraction

    search = model.blocks[0].rgb.attn.search
    size, values = search.grid_size(model.volume), search.value_volume(model.volume)
    ref = to_clip_fraction(cached_grid(size, values, locations.device, locations.dtype)[0], values)  # P_grid x 3
    cell = 1.0 / locations.new_tensor(size)  # one cell as a fraction of the clip's extent
    return ((locations[..., : ref.shape[0], :] - ref) / cell).abs().amax(-1)


@torch.no_grad()
def measure(model: torch.nn.Module, dataset: Any, batch_size: int = 16) -> dict[str, float]:
    """:func:`read_distances` of the last block over ``dataset`` (an objects test split), summarised."""
    from deformact.engine.builders import model_inputs

    model.eval()
    nearest, weighted, moved = [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size):
        _, maps = model(**model_inputs(batch, torch.device("cpu")), return_maps=True)
        moved.append(grid_displacement(model, maps["sampling_locations"]))
        n, w = read_distances(maps["sampling_locations"][:, -1], maps["sampling_weights"][:, -1],
                              batch["object_track"])
        nearest.append(n)
        weighted.append(w)
    n, w, d = torch.cat(nearest), torch.cat(weighted), torch.cat(moved)
    per_block = {f"grid_moved_cells_block{i + 1}": float(d[:, i].mean()) for i in range(d.shape[1])}
    far = {f"grid_moved_over_half_cell_block{i + 1}": float((d[:, i] > 0.5).float().mean()) for i in range(d.shape[1])}
    return {**per_block, **far, "clips": len(n), "nearest_median_r": float(n.median()),
            "clips_with_a_read_within_half_r": float((n <= 0.5).float().mean()),
            "clips_with_a_read_within_1_r": float((n <= 1.0).float().mean()),
            "attention_weighted_mean_r": float(w.mean())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    from deformact.engine.builders import build_dataset
    from deformact.engine.checkpoint import load_checkpoint, read_checkpoint

    parser = argparse.ArgumentParser(prog="python -m deformact.tools.objects_reads")
    parser.add_argument("ckpt", help="a checkpoint trained on the objects set (3DTS or grid)")
    args = parser.parse_args(argv)
    cfg = read_checkpoint(args.ckpt)["config"]
    out = measure(load_checkpoint(args.ckpt), build_dataset(cfg["data"], "test", train=False))
    print(jsonout.dumps({k: round(v, 4) for k, v in out.items()}))
    return out


if __name__ == "__main__":
    main()
