"""Can the RGB stem see the held object when it is read in the right place? (docs/RESULTS.md,
"objects set").

Trains the model's RGB stem (:class:`deformact.models.backbone.RGBBackbone`) with a linear head
to name the deciding object's kind (3 classes) of the synthetic objects set, reading the feature
volume either *at the object* (``--read object``: the trilinear read of each token frame at the
object's centre, the oracle a perfect 3DTS would give) or everywhere (``--read pool``: the global
average, what a read that ignores location gets; every kind appears once in every clip, so it
should stay near chance, 1/3).

    python -m deformact.tools.objects_probe --read object --epochs 2
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from deformact.io import jsonout
from deformact.models.anchors import from_clip_fraction
from deformact.models.backbone import RGBBackbone
from deformact.models.deformable import trilinear_sample


def read_at_object(volume: Tensor, track: Tensor) -> Tensor:
    """volume B x C x T' x H' x W', track B x T x 3 ((x, y, r) frame fractions) -> B x C: the mean
    over token frames of the read at the object's centre (its mean position over the frames of
    each token frame)."""
    b, c, tp = volume.shape[:3]
    xy = track[..., :2].reshape(b, tp, -1, 2).mean(2)  # B x T' x 2
    when = ((torch.arange(tp, dtype=xy.dtype) + 0.5) / tp)[None, :, None].expand(b, tp, 1)
    points = from_clip_fraction(torch.cat([when, xy.flip(-1)], -1), tuple(volume.shape[2:]))
    return trilinear_sample(volume, points).mean(-1)


def run_probe(*, read: str = "object", epochs: int = 2, num_train: int = 1000, num_test: int = 400,
              frames: int = 16, image_size: int = 112, dim: int = 64, lr: float = 2e-3, batch_size: int = 16,
              seed: int = 0) -> dict[str, Any]:
    """Train and test the probe; returns the per-epoch test accuracy of the object kind."""
    from deformact.data import build_dataset

    torch.manual_seed(seed)
    kw = dict(type="synthetic", variant="objects", modality="rgb", frames=frames, image_size=image_size, seed=seed)
    train = build_dataset(split="train", num_train=num_train, **kw)
    test = build_dataset(split="test", num_test=num_test, **kw)
    stem, head = RGBBackbone(dim), torch.nn.Linear(dim, 3)
    params = list(stem.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr, weight_decay=0.05)

    def logits(batch: dict[str, Tensor]) -> Tensor:
        volume = stem(batch["rgb"])
        feat = read_at_object(volume, batch["object_track"]) if read == "object" else volume.mean((2, 3, 4))
        return head(feat)

    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        stem.train()
        for batch in torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True):
            loss = F.cross_entropy(logits(batch), batch["label"] % 3)
            opt.zero_grad()
            loss.backward()
            opt.step()
        stem.eval()
        right = 0
        with torch.no_grad():
            for batch in torch.utils.data.DataLoader(test, batch_size=50):
                right += int((logits(batch).argmax(-1) == batch["label"] % 3).sum())
        history.append({"epoch": epoch + 1, "object_top1": right / len(test),
                        "seconds": round(time.perf_counter() - start, 1)})
        print(jsonout.dumps(history[-1]), flush=True)
    return {"read": read, "epochs": history}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read", choices=("object", "pool"), default="object")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run_probe(read=args.read, epochs=args.epochs, num_train=args.num_train, num_test=args.num_test, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
