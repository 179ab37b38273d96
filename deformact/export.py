"""ONNX export of a deformact model and an onnxruntime check against PyTorch.

The graph takes the model's own inputs by name (``rgb``, ``pose``, ``person_mask``, those the
modality uses) with a dynamic batch axis, and returns ``logits``. Needs the ``export`` extra
(onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn


def input_names(model: nn.Module) -> list[str]:
    """Inputs the model reads, in ONNX order: rgb, pose, person_mask (per its modality)."""
    cfg = model.config
    return (["rgb"] if cfg.use_rgb else []) + (["pose", "person_mask"] if cfg.use_pose else [])


def random_inputs(model: nn.Module, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of the model's shapes (normalized RGB, poses in [0, 1], some people absent)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    if cfg.use_rgb:
        out["rgb"] = torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size, generator=g)
    if cfg.use_pose:
        out["pose"] = torch.rand(batch, cfg.num_persons, cfg.frames, cfg.num_joints, cfg.pose_channels, generator=g)
        mask = torch.rand(batch, cfg.num_persons, generator=g) > 0.4
        mask[:, 0] = True  # at least one person per sample
        out["person_mask"] = mask
    return out


@contextlib.contextmanager
def export_friendly() -> Iterator[None]:
    """Quiet the exporter's logging while exporting."""
    log = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..." (we never use it)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, dynamic_batch: bool = True,
                verbose: bool = False) -> Path:
    """Export ``model`` (eval mode) to ``path`` with torch.export (``torch.onnx.export(dynamo=True)``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    names = input_names(model)
    example = random_inputs(model, batch=2)  # batch 2, not 1: torch.export specializes size-1 axes
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)  # one Dim object shared by all inputs
        dynamic = {n: {0: batch} for n in names}
    with export_friendly(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (), kwargs=example, dynamo=True, input_names=names,
                                    output_names=["logits"], dynamic_shapes=dynamic, opset_version=opset,
                                    verbose=verbose, external_data=False)
    program.save(str(path), external_data=False)
    return path


def check_onnx(model: nn.Module, path: str | Path, batch_sizes: Sequence[int] = (1, 3), seed: int = 1) -> float:
    """Max |onnxruntime - PyTorch| of the logits on random inputs of the given batch sizes."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in session.get_inputs()]
    worst = 0.0
    model = model.eval()
    for k, b in enumerate(batch_sizes):
        inputs = random_inputs(model, batch=b, seed=seed + k)
        with torch.no_grad():
            ref = model(**inputs).float().numpy()
        out = session.run(["logits"], {n: inputs[n].numpy() for n in feed_names})[0]
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst
