"""Checkpoints: atomic writes, safe loads, RNG state capture.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading one never runs code from the file:
``{"format", "version", "model", "config", "class_names", "epoch", "step", "optimizer",
"scheduler", "scaler", "ema", "rng", "history", "best", ...}``.
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deformact.engine import outputs
from deformact.errors import CheckpointError
from deformact.io.atomic import atomic_path

FORMAT = "deformact-checkpoint"
VERSION = 1


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A kill at any moment leaves either the previous file or the new one, never a torn one; so
    does a full disk, which becomes one :class:`CheckpointError` naming the file and the OS error.
    """
    with atomic_path(path, what="checkpoint", error=CheckpointError, fsync=True,
                     note="; the previous file there (if any) is unchanged") as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)
    return Path(path)


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temp files left by a save that was killed before its rename."""
    outputs.remove_stale_temps(folder)


_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|$)", re.S)


def load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words.

    torch's own message advises loading with ``weights_only=False``, which would run code from the
    file; that advice is never passed on: only the unpickler's reason, or the kind of failure, is.
    """
    text = str(e).strip()
    found = _UNPICKLER.search(text)
    if found:
        reason = "it holds objects a safe load refuses (" + found.group(1).splitlines()[0].strip() + ")"
    elif isinstance(e, EOFError) or not text:
        reason = f"the file is empty or ends too early ({type(e).__name__})"
    else:
        reason = text.splitlines()[0]
    if "weights_only" in reason or "weights only" in reason.lower():
        reason = type(e).__name__
    return reason[:200]


def safe_torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` (never runs code from the file) without torch's warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items())


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a deformact checkpoint dict safely; clear :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = safe_torch_load(path, map_location)
    except Exception as e:  # torch raises several types for truncated / foreign / unsafe files
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupt, truncated or not a torch file): {load_failure(e)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deformact checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt['version']} is newer than this deformact")
    for key in ("model", "config", "class_names"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: deformact checkpoint without {key!r}")
    for key in ("model", "ema"):
        if (key == "model" or ckpt.get(key) is not None) and not _is_state_dict(ckpt[key]):
            raise CheckpointError(f"{path}: its {key!r} entry is not a state dict (names -> tensors) but "
                                  f"{type(ckpt[key]).__name__}")
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
        fields = {k: v for k, v in config["model"].items() if k != "preset"}  # all fields: the preset adds nothing
        model = build_model(config=ModelConfig(**fields))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
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


# --- does a checkpoint fit the data it is tested on? -----------------------------------------------

# the run-config setting each data-given model field comes from (docs/TRAINING.md, "Keys")
FIELD_SOURCE = {"num_classes": "data.num_classes or the label map", "modality": "data.modality",
                "frames": "data.frames", "image_size": "data.image_size", "num_persons": "data.num_persons",
                "num_joints": "the data's skeleton layout", "pose_channels": "the data's keypoint channels"}


def _same(key: str, a: Any, b: Any) -> bool:
    if key == "modality" and isinstance(a, str) and isinstance(b, str):
        return set(a.split("+")) == set(b.split("+"))
    return a == b


def check_fits(path: str | Path, model_config: Mapping[str, Any], shapes: Mapping[str, Any]) -> None:
    """CheckpointError naming every field where the checkpoint's model and the test data disagree.

    ``shapes``: what the data gives (:func:`deformact.engine.builders.infer_shapes`).
    """
    diffs = []
    for key, value in shapes.items():
        if key not in model_config or _same(key, model_config[key], value):
            continue
        if key == "num_classes":
            diffs.append(f"it predicts {model_config[key]} classes but the test split has {value}")
        else:
            diffs.append(f"{key}: checkpoint {model_config[key]!r}, test data {value!r} "
                         f"({FIELD_SOURCE.get(key, 'data')})")
    if diffs:
        raise CheckpointError(f"{path} does not fit the test data: {'; '.join(diffs)}")
