"""From a run config to objects: datasets, the model (with the shapes the data dictates), loaders
and the model's keyword arguments for a batch."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from deformact.engine.schema import DataSection, ModelSection
from deformact.errors import CheckpointError, ConfigError, TrainingError
from deformact.models.config import DEFAULT_PRESET

INPUT_KEYS = ("rgb", "pose", "person_mask")


def build_dataset(data_cfg: Mapping[str, Any] | DataSection, split: str, train: bool, num_clips: int = 1
                  ) -> Dataset:
    """``deformact.data.build_dataset`` for the ``"train"`` or ``"test"`` split of a config's ``data``
    section (``data.train_split`` / ``data.test_split`` name the splits in the annotation file)."""
    import deformact.data as dd

    kwargs = data_cfg.to_dict() if isinstance(data_cfg, DataSection) else dict(data_cfg)
    names = {"train": kwargs.pop("train_split", "train"), "test": kwargs.pop("test_split", "test")}
    kwargs["split"] = names[split]
    kwargs.update(train=train, num_clips=num_clips)
    try:
        return dd.build_dataset(**kwargs)
    except TypeError as e:  # unknown keyword in the data section
        raise ConfigError(f"data: {e}") from None


def infer_shapes(dataset: Dataset) -> dict[str, Any]:
    """ModelConfig fields the data decides: classes, modality, frames, size, persons, joints."""
    item = dataset[0]
    shapes: dict[str, Any] = {"num_classes": int(dataset.num_classes)}
    if "pose" in item:
        m, t, v, c = item["pose"].shape[-4:]
        shapes.update(num_persons=int(m), frames=int(t), num_joints=int(v), pose_channels=int(c))
    if "rgb" in item:
        _, t, h, _ = item["rgb"].shape[-4:]
        shapes.update(frames=int(t), image_size=int(h))
    shapes["modality"] = "+".join(k for k in ("rgb", "pose") if k in item)
    return shapes


def build_model_for(model_cfg: Mapping[str, Any] | ModelSection, dataset: Dataset) -> nn.Module:
    """The model of a config's ``model`` section, with the shapes the data dictates filled in."""
    from deformact.models import build_model

    user = model_cfg.to_dict() if isinstance(model_cfg, ModelSection) else dict(model_cfg)
    preset = user.pop("preset", DEFAULT_PRESET)
    if user.get("backbone_weights"):
        check_backbone_weights(user["backbone_weights"])
    inferred = infer_shapes(dataset)
    for key, value in inferred.items():
        if key in user and user[key] != value:
            raise ConfigError(f"model.{key}={user[key]!r} does not match the data ({value!r}); "
                              f"leave model.{key} out to take it from the data")
    try:
        return build_model(preset=preset, **{**inferred, **user})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None


def check_backbone_weights(path: str | Path) -> None:
    """CheckpointError unless ``model.backbone_weights`` is a readable file of named tensors (read
    with ``weights_only=True``: it never runs code)."""
    from deformact.engine.checkpoint import load_failure, safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model.backbone_weights: file not found: {path}")
    try:
        state = safe_torch_load(path)
    except Exception as e:  # torch raises several types for truncated / foreign / unsafe files
        raise CheckpointError(f"model.backbone_weights: {path} is not a readable weights file: "
                              f"{load_failure(e)}") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"model.backbone_weights: {path} is not a state dict (names -> tensors)")


def check_splits(train_set: Dataset, eval_set: Dataset) -> None:
    """Splits a run can learn from and be judged on (docs/FAILURES.md, "Data"): at least two
    classes, and no clip in both the training and the test split (a test on training clips
    measures memory, not recognition)."""
    k = int(getattr(train_set, "num_classes", 2))
    if k < 2:
        raise ConfigError(f"the data has {k} class(es); a classifier needs at least 2 (declare them with "
                          "data.num_classes or data.label_map if the file holds only some)")
    if not callable(getattr(train_set, "video_names", None)) or not callable(getattr(eval_set, "video_names", None)):
        return
    both = sorted(set(video_names(train_set, "train")) & set(video_names(eval_set, "test")))
    if both:
        names = (getattr(train_set, "split", "train"), getattr(eval_set, "split", "test"))
        raise ConfigError(f"{len(both)} clip(s) are in both the training split {names[0]!r} and the test split "
                          f"{names[1]!r}, e.g. {both[:3]}; a test on training clips measures nothing")


def video_names(dataset: Dataset, split: str = "test") -> list[str]:
    """One name per item, in dataset order: the annotations' ``frame_dir`` (pyskl), a dataset's own
    ``video_names()``, else ``<kind>_<split>_<index>`` (e.g. ``synthetic_test_00007``)."""
    own = getattr(dataset, "video_names", None)
    if callable(own):
        return [str(n) for n in own()]
    anns = getattr(dataset, "anns", None)
    if isinstance(anns, list) and len(anns) == len(dataset):
        return [str(a["frame_dir"]) for a in anns]
    kind = type(dataset).__name__.removesuffix("Dataset").lower() or "video"
    split = str(getattr(dataset, "split", split))
    return [f"{kind}_{split}_{i:05d}" for i in range(len(dataset))]


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: each evaluation sample is seen exactly once overall."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_worker(worker_id: int) -> None:
    # torch seeds python/torch/numpy per worker from the loader generator; make numpy's explicit too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, sampler: Sampler, num_workers: int, device: torch.device,
                drop_last: bool = False, generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader with seeded workers and pinned memory on GPU."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, generator=generator,
                      worker_init_fn=_seed_worker if num_workers else None)


def model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device, clips: bool = False) -> dict:
    """Model keyword arguments from a batch; multi-clip batches (B x N x ...) become (B*N) x ..."""
    out = {}
    for key in INPUT_KEYS:
        if key in batch:
            x = batch[key].to(device, non_blocking=True)
            out[key] = x.flatten(0, 1) if clips else x
    return out


def check_labels(label: torch.Tensor, num_classes: int) -> None:
    """TrainingError naming the first label outside ``[0, num_classes)``."""
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        bad = label[(label < 0) | (label >= num_classes)][0].item()
        raise TrainingError(f"label {bad} is out of range for {num_classes} classes (check data.label_map)")
