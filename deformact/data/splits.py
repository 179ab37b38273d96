"""A held-out validation split for pyskl files that only have ``train`` and ``test`` (e.g. Penn
Action from ``deformact prepare penn-action``), so recipes are chosen without looking at ``test``
(docs/RESULTS.md)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from deformact.errors import ConfigError, DataError
from deformact.io.pyskl import check_output_path, load_pyskl, save_pyskl


def add_holdout_split(ann_file: str | os.PathLike, out: str | os.PathLike | None = None, val_fraction: float = 0.15,
                      seed: int = 0, invisible_score: float | None = None) -> dict[str, Any]:
    """A copy of a pyskl dict with two more splits: ``val`` (``val_fraction`` of each class of
    ``train``, drawn with ``seed``, in the order of ``train``) and ``train_part`` (the rest of
    ``train``); ``train`` and ``test`` stay as they are. Written to ``out`` when given.

    ``invisible_score``: Penn Action marks occluded joints with visibility 0 but still annotates
    a guessed position. The converter stores visibility as the score, and the dataset treats
    score 0 as "missing" and zeroes the coordinates; giving occluded joints this score instead
    keeps their positions and still tells the model (through the score channel) that they were
    not visible. None keeps the scores. On the val split this did not beat the converter's
    scores (docs/RESULTS.md), so the recipe keeps them.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if invisible_score is not None and not 0 < invisible_score <= 1:
        raise ConfigError(f"invisible_score must be in (0, 1] or None, got {invisible_score}")
    if out is not None:
        check_output_path(out)  # before the work
    data = load_pyskl(ann_file)
    if not isinstance(data, dict) or "train" not in data.get("split", {}):
        raise DataError(f"{ann_file}: needs a pyskl dict with a 'train' split")
    data = {**data, "split": dict(data["split"]), "annotations": [dict(a) for a in data["annotations"]]}
    label = {a["frame_dir"]: int(a["label"]) for a in data["annotations"]}
    train = list(data["split"]["train"])
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for c in sorted({label[n] for n in train}):
        names = sorted(n for n in train if label[n] == c)
        k = max(1, round(val_fraction * len(names))) if len(names) > 1 else 0
        val.update(names[i] for i in rng.choice(len(names), k, replace=False))
    data["split"]["train_part"] = [n for n in train if n not in val]
    data["split"]["val"] = [n for n in train if n in val]
    if invisible_score is not None:
        for a in data["annotations"]:
            score = np.asarray(a["keypoint_score"], dtype=np.float32)
            a["keypoint_score"] = np.where(score > 0, score, np.float32(invisible_score)).astype(np.float32)
    if out is not None:
        save_pyskl(data, out)
    return data
