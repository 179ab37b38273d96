"""Checkpoints: atomic writes, safe loads, RNG state capture.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading one never runs code from the file:
``{"format", "version", "model", "config", "class_names", "epoch", "step", "optimizer",
"scheduler", "scaler", "ema", "rng", "history", "best", ...}``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMAT = "deformact-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, foreign or does not fit the model."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A kill at any moment leaves either the previous file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable (best effort; not every filesystem allows it)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temp files left by a save that was killed before its rename."""
    for tmp in Path(folder).glob(".*.pt.tmp*"):
        tmp.unlink(missing_ok=True)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a deformact checkpoint dict safely; clear :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / foreign / unsafe files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt, truncated or not a torch file): {reason[:200]}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deformact checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this deformact")
    for key in ("model", "config", "class_names"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: deformact checkpoint without {key!r}")
    return ckpt


def load_state(module: nn.Module, state: Mapping[str, Any], path: str | Path, what: str = "model") -> None:
    """``module.load_state_dict(state)`` with a clear error when the shapes or names differ."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckpointError(f"{path}: {what} weights do not fit this model config: {detail[:300]}") from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """Model from a checkpoint, in eval mode, with ``class_names`` and ``run_config`` attributes.

    Uses the EMA weights when the checkpoint has them.
    """
    from deformact.models import ModelConfig, build_model

    ckpt = read_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    try:
        model = build_model(config=ModelConfig(**config["model"]))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: model config cannot be rebuilt: {e}") from None
    load_state(model, ckpt["ema"] if ckpt.get("ema") else ckpt["model"], path)
    model.class_names = list(ckpt["class_names"])
    model.run_config = config
    return model.to(map_location).eval()


# --- RNG states: every generator that decides what a resumed run will compute next ---------------


def get_rng_state(loader_generator: torch.Generator | None = None) -> dict:
    """Python, NumPy, torch (CPU + CUDA) and DataLoader-sampler states as checkpoint-safe data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`get_rng_state`."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"].cpu())
