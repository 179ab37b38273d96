"""Penn Action, pose only, real annotations: the held-out split and a short training run (docs/RESULTS.md)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deformact.cli import main as cli_main
from deformact.data import add_holdout_split, build_dataset, convert_penn_action, load_pyskl, save_pyskl
from deformact.engine import load_config, run

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "penn_action_pose.yaml"  # the repo's configs/ is deformact/configs/


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def penn_pkl(shared_dir, tmp_path_factory) -> Path:
    """The converted release (what ``deformact prepare penn-action`` writes)."""
    out = tmp_path_factory.mktemp("penn") / "penn_action.pkl"
    convert_penn_action(shared_dir / "datasets" / "penn_action", out)
    return out


def test_holdout_is_stratified_deterministic_and_keeps_occluded_joints(penn_pkl, tmp_path):
    out = tmp_path / "holdout.pkl"
    assert cli_main(["prepare", "penn-holdout", str(penn_pkl), "-o", str(out), "--invisible-score", "0.5"]) == 0
    data = load_pyskl(out)
    split = data["split"]
    plain = add_holdout_split(penn_pkl)
    assert split == plain["split"]  # deterministic
    train, val, part = split["train"], split["val"], split["train_part"]
    assert len(train) == 1258 and len(split["test"]) == 1068
    assert not set(val) & set(part) and sorted(val + part) == sorted(train)
    assert val == [n for n in train if n in set(val)]  # official order kept
    label = {a["frame_dir"]: a["label"] for a in data["annotations"]}
    per_class, held = Counter(label[n] for n in train), Counter(label[n] for n in val)
    assert set(held) == set(range(15))
    assert all(abs(held[c] - 0.15 * per_class[c]) <= 0.5 for c in per_class)
    assert add_holdout_split(penn_pkl, seed=1)["split"]["val"] != val  # the seed decides the draw
    # occluded joints: same guessed position, score 0.5 (the release's visibility 0 -> 0.5);
    # by default the converter's scores stay
    orig = {a["frame_dir"]: a for a in load_pyskl(penn_pkl)["annotations"]}
    for a, p in zip(data["annotations"][:50], plain["annotations"][:50]):
        o = orig[a["frame_dir"]]
        np.testing.assert_array_equal(a["keypoint"], o["keypoint"])
        np.testing.assert_array_equal(p["keypoint_score"], o["keypoint_score"])
        expected = np.where(o["keypoint_score"] > 0, o["keypoint_score"], 0.5)
        np.testing.assert_array_equal(a["keypoint_score"], expected)
    # ... and the dataset now feeds their coordinates instead of zeros
    ds = build_dataset(type="pyskl", ann_file=out, split="val", modality="pose", frames=16, num_persons=1,
                       pose_norm="person")
    scores = np.concatenate([ds[i]["pose"][..., 2].numpy().ravel() for i in range(len(ds))])
    assert (scores == 0.5).any() and (scores > 0).all()


def test_short_training_on_penn_action_beats_chance(penn_pkl, tmp_path):
    """The committed recipe, shrunk (tiny model, 30 train clips per class, ~300 steps), learns the
    15 real actions far above chance (1/15) on 10 official test clips per class."""
    data = add_holdout_split(penn_pkl)
    label = {a["frame_dir"]: a["label"] for a in data["annotations"]}

    def first(names: list[str], k: int) -> list[str]:
        seen: Counter = Counter()
        keep = []
        for n in names:
            if seen[label[n]] < k:
                seen[label[n]] += 1
                keep.append(n)
        return keep

    data["split"] = {"train": first(data["split"]["train"], 30), "test": first(data["split"]["test"], 10)}
    save_pyskl(data, tmp_path / "subset.pkl")
    cfg = load_config(RECIPE, [
        f"data.ann_file={tmp_path / 'subset.pkl'}", "data.num_clips=2", "epochs=20", "train.batch_size=32",
        "train.num_workers=0", "train.eval_every=0", "train.warmup_epochs=1", "train.ema=null",
        "model.dim=32", "model.heads=2", "model.depth=2"])
    metrics = run(cfg, tmp_path / "run", echo=lambda _m: None)
    assert metrics["num_samples"] == 150
    assert metrics["top1"] > 0.5 and metrics["mean_class_acc"] > 0.5, metrics  # chance: 0.067
