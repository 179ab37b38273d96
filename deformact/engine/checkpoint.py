"""Checkpoints: atomic writes, safe loads, RNG state capture.

A checkpoint is a plain dict saved with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so loading one never runs code from the file:
``{"format", "version", "model", "config", "class_names", "epoch", "step", "optimizer",
"scheduler", "scaler", "ema", "rng", "history", "best", ...}``.

Before a file is unpickled its zip members' CRC-32s are checked (torch itself does not check
them, so a flipped bit inside tensor data would load), and after it every floating tensor of its
weights and optimizer state must be finite (docs/FAILURES.md, "Checkpoints and weights").
"""

from __future__ import annotations

import random
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deformact.engine import outputs
from deformact.errors import CheckpointError, ConfigError
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


class CorruptArchive(Exception):
    """A torch zip file whose member does not match its recorded CRC-32 (or header); the message
    reads ``corrupt (CRC mismatch in member 'archive/data/3')``."""

    def __init__(self, member: str, why: str = "CRC mismatch") -> None:
        super().__init__(f"corrupt ({why} in member {member!r})")
        self.member = member


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def verify_archive(path: Path) -> None:
    """:class:`CorruptArchive` unless every member of the torch zip file at ``path`` matches the
    CRC-32 its central directory records. Reads the file once, in chunks (a few ms for a demo checkpoint).

    Files that are not zip archives (legacy torch files, garbage, truncated ones) and archives
    written with torch's CRCs switched off (every CRC 0) are left to ``torch.load`` to judge."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # a directory zipfile cannot read: torch.load reports the file as unreadable
    if not any(i.CRC for i in infos if i.file_size):
        return
    with open(path, "rb") as f:
        for info in infos:
            f.seek(info.header_offset)
            head = f.read(_LOCAL_HEADER.size)
            if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
                raise CorruptArchive(info.filename, "a damaged header")
            name_len, extra_len = _LOCAL_HEADER.unpack(head)[1:]
            f.seek(name_len + extra_len, 1)
            if info.compress_type == zipfile.ZIP_STORED:  # what torch writes
                crc, size, left = 0, 0, info.compress_size
                while left > 0:
                    chunk = f.read(min(left, 1 << 23))
                    if not chunk:
                        break
                    crc, size, left = zlib.crc32(chunk, crc), size + len(chunk), left - len(chunk)
            else:  # a compressed member (not torch's): inflate it
                try:
                    body = zlib.decompress(f.read(info.compress_size), -15)
                except zlib.error:
                    raise CorruptArchive(info.filename, "damaged compressed data") from None
                crc, size = zlib.crc32(body), len(body)
            if size != info.file_size or crc != info.CRC:
                raise CorruptArchive(info.filename)


def safe_torch_load(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` (never runs code from the file) without torch's warnings,
    after :func:`verify_archive` (:class:`CorruptArchive` when a member's CRC-32 is wrong)."""
    verify_archive(Path(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items())


def _float_tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every floating tensor in nested dicts and lists (an optimizer state is)."""
    items = tree.items() if isinstance(tree, Mapping) else enumerate(tree)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                yield name, value
        elif isinstance(value, Mapping | list | tuple):
            yield from _float_tensors(value, f"{name}.")


def _non_finite(tree: Any) -> tuple[str, int] | None:
    """(name, count) of the first floating tensor in ``tree`` that holds NaN or inf, else ``None``.

    A tensor's sum is finite only if all its values are (NaN and inf propagate), and summing is far
    cheaper than ``isfinite``; only when a sum is not finite (a damaged tensor, or an overflow) are
    the values counted one by one."""
    tensors = list(_float_tensors(tree))
    sums: dict[tuple, list[torch.Tensor]] = {}
    for _, t in tensors:
        sums.setdefault((t.dtype, t.device), []).append(t.sum())
    if all(bool(torch.isfinite(torch.stack(group)).all()) for group in sums.values()):
        return None
    for name, t in tensors:
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            return name, bad
    return None


def check_finite(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """CheckpointError naming the first weight (model, EMA) or optimizer state tensor of ``ckpt``
    that holds NaN or inf: such a file loads, but predicts NaN (docs/FAILURES.md)."""
    for key, what in (("model", "weight"), ("ema", "EMA weight"), ("optimizer", "optimizer state")):
        if isinstance(ckpt.get(key), Mapping):
            found = _non_finite(ckpt[key])
            if found:
                raise CheckpointError(f"{path}: {what} {found[0]!r} holds {found[1]} non-finite values (nan/inf); "
                                      "the checkpoint is damaged")


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a deformact checkpoint dict safely; clear :class:`CheckpointError` otherwise (also for
    a member whose CRC-32 is wrong and for weights that are not finite)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = safe_torch_load(path, map_location)
    except CorruptArchive as e:
        raise CheckpointError(f"{path}: checkpoint is {e}") from None
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
    check_finite(ckpt, path)
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


# --- resuming with a config that differs from the checkpoint's run ---------------------------------

# settings last.pt fixes: the optimizer state holds the learning rates, weight decay and momenta,
# and the random streams continue from the saved ones, so a resumed run cannot change them
# (docs/TRAINING.md, "Resume")
FIXED_ON_RESUME = ("train.optimizer", "train.lr", "train.weight_decay", "train.offset_lr_mult", "train.betas",
                   "train.momentum", "train.nesterov", "seed")
# settings a resumed run takes from the new config, changing what it computes (every model.* too)
APPLIED_ON_RESUME = ("train.batch_size", "train.warmup_epochs", "train.min_lr", "train.label_smoothing",
                     "train.clip_grad", "train.ema")
_MISSING = object()


def _setting(config: Mapping[str, Any], key: str) -> Any:
    section, _, name = key.rpartition(".")
    holder = config.get(section) if section else config
    return holder.get(name, _MISSING) if isinstance(holder, Mapping) else _MISSING


def _changed(saved: Mapping[str, Any], now: Mapping[str, Any], keys: Any) -> list[str]:
    out = []
    for key in keys:
        old, new = _setting(saved, key), _setting(now, key)
        if old is not _MISSING and new is not _MISSING and old != new:
            out.append(f"{key} {new} (the checkpoint's run had {old})")
    return out


def resume_changes(path: str | Path, saved: Any, now: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """How the run config ``now`` differs from ``saved``, the one stored in the checkpoint at ``path``.

    Returns the epochs change (``"epochs 20 (the checkpoint's run had 10)"`` or ``None``: extending a
    run is legitimate) and the other settings the resumed run applies (:data:`APPLIED_ON_RESUME`,
    any model field). A change to a setting the checkpoint fixes (:data:`FIXED_ON_RESUME`) would be
    ignored, so it is a :class:`ConfigError` naming every one."""
    if not isinstance(saved, Mapping):
        return None, []
    fixed = _changed(saved, now, FIXED_ON_RESUME)
    if fixed:
        raise ConfigError(f"{path} cannot be resumed with this config: {'; '.join(fixed)}; the optimizer state "
                          "and random streams saved in it fix these, so set them back or start a new run in "
                          "another --out")
    models = [saved.get("model"), now.get("model")]
    model_keys = sorted(set(models[0]) | set(models[1])) if all(isinstance(m, Mapping) for m in models) else []
    applied = _changed(saved, now, [*APPLIED_ON_RESUME, *(f"model.{k}" for k in model_keys
                                                          if k != "backbone_weights")])
    epochs = _changed(saved, now, ["epochs"])
    return (epochs[0] if epochs else None), applied
