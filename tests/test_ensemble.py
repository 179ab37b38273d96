"""Pose input features (joint, bone, motions) and score ensembles (docs/RESULTS.md, Penn Action ensemble)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from deformact.cli import main as cli_main
from deformact.data import build_dataset, convert_penn_action, load_pyskl, save_pyskl
from deformact.data.pipeline.feature import BONE_PARENTS, pose_feature
from deformact.data.skeletons import SKELETONS
from deformact.errors import DataError
from deformact.io.scores import load_scores, save_scores
from deformact.tools.ensemble import classification_metrics, ensemble, fuse

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------------------------------ features
@pytest.mark.parametrize("layout", sorted(SKELETONS))
def test_bone_parents_form_one_tree_over_the_layout(layout):
    parents = BONE_PARENTS[layout]
    skel = SKELETONS[layout]
    assert len(parents) == skel.num_joints
    roots = [v for v, p in enumerate(parents) if p == v]
    assert len(roots) == 1
    for v in range(skel.num_joints):  # every joint reaches the root without a cycle
        seen, u = set(), v
        while parents[u] != u:
            assert u not in seen
            seen.add(u)
            u = parents[u]
    # a flip maps bones to bones: the parent of a left joint's mirror is the mirror of its parent
    flip = skel.flip_index
    assert all(flip[parents[v]] == parents[flip[v]] for v in range(skel.num_joints))


def test_features_by_hand():
    g = torch.Generator().manual_seed(0)
    pose = torch.rand(2, 4, 13, 3, generator=g)  # M x T x V x 3, penn13
    pose[0, 1, 3, 2] = 0.0  # a missing joint: its bone, its child's bone and its motions go missing
    par = BONE_PARENTS["penn13"]
    bone = pose_feature(pose, "bone", "penn13")
    v = 5  # left wrist, parent left elbow (3)
    assert par[v] == 3
    torch.testing.assert_close(bone[1, 2, v, :2], pose[1, 2, v, :2] - pose[1, 2, 3, :2], rtol=0, atol=0)
    assert bone[1, 2, v, 2] == torch.minimum(pose[1, 2, v, 2], pose[1, 2, 3, 2])
    assert (bone[0, 1, 3] == 0).all() and (bone[0, 1, 5] == 0).all()  # missing end -> missing bone
    assert (bone[..., 0, :2] == 0).all()  # the root's bone
    motion = pose_feature(pose, "joint_motion", "penn13")
    torch.testing.assert_close(motion[:, :-1, :, :2], (pose[:, 1:, :, :2] - pose[:, :-1, :, :2])
                               * (torch.minimum(pose[:, 1:, :, 2], pose[:, :-1, :, 2]) > 0)[..., None])
    assert (motion[:, -1, :, :2] == 0).all() and torch.equal(motion[:, -1, :, 2], pose[:, -1, :, 2])
    assert (motion[0, 0, 3] == 0).all() and (motion[0, 1, 3] == 0).all()  # both steps touching the gap
    torch.testing.assert_close(pose_feature(pose, "bone_motion", "penn13"),
                               pose_feature(bone, "joint_motion", "penn13"), rtol=0, atol=0)
    assert pose_feature(pose, "joint") is pose
    with pytest.raises(DataError, match="data.feature"):
        pose_feature(pose, "velocity")


def test_motion_stays_within_each_test_clip(tmp_path):
    """With several test clips the frame difference never crosses from one clip into the next."""
    rng = np.random.default_rng(0)
    ann = {"frame_dir": "a", "label": 0, "img_shape": (100, 100), "total_frames": 40,
           "keypoint": rng.uniform(10, 90, (1, 40, 13, 2)).astype(np.float32),
           "keypoint_score": np.ones((1, 40, 13), np.float32)}
    save_pyskl({"split": {"test": ["a"]}, "annotations": [ann]}, tmp_path / "a.pkl")
    kw = dict(type="pyskl", ann_file=tmp_path / "a.pkl", split="test", modality="pose", frames=8,
              num_persons=1, num_clips=3)
    joint = build_dataset(**kw)[0]["pose"]  # 3 x 1 x 8 x 13 x 3
    motion = build_dataset(**kw, feature="joint_motion")[0]["pose"]
    for c in range(3):
        torch.testing.assert_close(motion[c], pose_feature(joint[c], "joint_motion", "penn13"), rtol=0, atol=0)
    assert build_dataset(type="synthetic", split="test", num_test=2, modality="pose",
                         feature="bone")[0]["pose"].shape == (2, 8, 17, 3)


# ------------------------------------------------------------------------------------------ ensemble
def _run(tmp_path: Path, name: str, scores: np.ndarray, labels, names, split="test", classes=("a", "b", "c")) -> Path:
    run = tmp_path / name
    run.mkdir()
    save_scores(run / "scores.npz", scores=scores, labels=labels, frame_dir=names, split=split, class_names=classes)
    return run


def test_fusion_by_hand_and_refusals(tmp_path):
    labels, names = [0, 1, 2, 1], ["v0", "v1", "v2", "v3"]
    s1 = np.array([[.6, .3, .1], [.5, .4, .1], [.1, .2, .7], [.2, .7, .1]])  # 3 of 4
    s2 = np.array([[.4, .5, .1], [.1, .8, .1], [.3, .3, .4], [.5, .4, .1]])  # 2 of 4
    a, b = _run(tmp_path, "a", s1, labels, names), _run(tmp_path, "b", s2, labels, names)
    torch.testing.assert_close(fuse([load_scores(a), load_scores(b)], [1, 2]), s1 + 2 * s2)
    m = ensemble([a, b], tmp_path / "ens")
    assert m["top1"] == 1.0 and [r["top1"] for r in m["runs"]] == [0.75, 0.5]
    assert json.loads((tmp_path / "ens" / "metrics.json").read_text())["top1"] == 1.0
    assert (tmp_path / "ens" / "confusion_matrix.png").stat().st_size > 0
    assert "| b | 2 | 100.0 % |" in (tmp_path / "ens" / "per_class.md").read_text()
    np.testing.assert_allclose(load_scores(tmp_path / "ens").scores, s1 + s2, rtol=1e-6)
    assert classification_metrics(s1, np.array(labels), 3)["mean_class_acc"] == pytest.approx((1 + .5 + 1) / 3)

    bad = {
        "different videos": _run(tmp_path, "c", s1, labels, ["v0", "v1", "v2", "x"]),
        "different order": _run(tmp_path, "d", s1, labels, ["v1", "v0", "v2", "v3"]),
        "different splits": _run(tmp_path, "e", s1, labels, names, split="val"),
        "labels differ": _run(tmp_path, "f", s1, [0, 1, 2, 2], names),
        "different classes": _run(tmp_path, "g", s1, labels, names, classes=("a", "b", "z")),
    }
    for why, run in bad.items():
        with pytest.raises(DataError, match=why):
            ensemble([a, run], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "scores.npz").write_bytes(b"not a zip")
    for runs, why in (([a, tmp_path / "junk"], "not a deformact scores file"), ([a, tmp_path / "nope"], "no saved")):
        with pytest.raises(DataError, match=why):
            ensemble(runs, tmp_path / "never")
    with pytest.raises(DataError, match="1 weights for 2 runs"):
        ensemble([a, b], tmp_path / "never", weights=[1.0])


def test_weight_search_prefers_the_best_then_equal_weights(tmp_path):
    from deformact.tools.ensemble import search_weights

    labels, names = [0, 1, 2, 1], ["v0", "v1", "v2", "v3"]
    good = np.eye(3)[labels] * 0.3 + 0.7 / 3
    bad = np.eye(3)[[1, 0, 0, 0]]  # wrong on every video, and certain: equal weights would follow it
    runs = [load_scores(_run(tmp_path, n, s, labels, names)) for n, s in (("g", good), ("b", bad), ("g2", good))]
    weights, m = search_weights(runs)
    assert m["top1"] == 1.0 and weights[1] < weights[0] == weights[2] == 1.0
    tie, _ = search_weights([runs[0], runs[2]])  # two identical runs: nothing to choose, equal weights
    assert tie == [1.0, 1.0]
    assert cli_main(["ensemble", *(str(tmp_path / n) for n in ("g", "b", "g2")), "--search-weights",
                     "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["top1"] == 1.0


def test_ensemble_cli_one_line_errors(tmp_path, capsys):
    labels, names = [0, 1], ["v0", "v1"]
    a = _run(tmp_path, "a", np.eye(3)[:2], labels, names)
    b = _run(tmp_path, "b", np.eye(3)[:2], labels, ["v0", "v9"])
    assert cli_main(["ensemble", str(a), str(a), "--weights", "1,3", "--out", str(tmp_path / "o")]) == 0
    assert "ensemble (2 runs" in capsys.readouterr().out
    for argv in ([str(a), str(b)], [str(a), str(a), "--weights", "1,x"], [str(a), str(a), "--weights", "1"]):
        assert cli_main(["ensemble", *argv, "--out", str(tmp_path / "o2")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("deformact ensemble: ")


# ------------------------------------------------------------------------------ two real streams
def test_two_tiny_penn_streams_fuse_at_least_as_well_as_the_weaker(shared_dir, tmp_path):
    """Joint and bone streams trained briefly on a Penn Action subset (real annotations): the
    ensemble reads both runs' scores.npz, refuses a run scored on other videos, and is at least
    as good as the weaker stream."""
    from deformact.engine import load_config, run

    convert_penn_action(shared_dir / "datasets" / "penn_action", tmp_path / "penn.pkl")
    data = load_pyskl(tmp_path / "penn.pkl")
    label = {a["frame_dir"]: a["label"] for a in data["annotations"]}

    def first(names: list[str], k: int) -> list[str]:
        seen: Counter = Counter()
        return [n for n in names if seen.update([label[n]]) or seen[label[n]] <= k]

    data["split"] = {"train": first(data["split"]["train"], 12), "test": first(data["split"]["test"], 6),
                     "test_small": first(data["split"]["test"], 5)}
    save_pyskl(data, tmp_path / "subset.pkl")
    runs = {}
    for feature, test_split in (("joint", "test"), ("bone", "test"), ("bone_motion", "test_small")):
        cfg = load_config("penn_action_pose", [
            f"data.ann_file={tmp_path / 'subset.pkl'}", f"data.test_split={test_split}", f"data.feature={feature}",
            "data.num_clips=2", f"epochs={1 if feature == 'bone_motion' else 6}", "train.batch_size=30",
            "train.eval_every=0", "train.warmup_epochs=1",
            "model.dim=32", "model.heads=2", "model.depth=2"])
        runs[feature] = (run(cfg, tmp_path / feature, echo=lambda _m: None), tmp_path / feature)
    (m_joint, joint), (m_bone, bone), (_, other) = runs["joint"], runs["bone"], runs["bone_motion"]
    assert m_joint["num_samples"] == m_bone["num_samples"] == 90
    for m, path in (runs["joint"], runs["bone"]):  # the saved scores reproduce the run's own metrics
        s = load_scores(path)
        assert s.split == "test" and len(s.labels) == 90
        assert float((s.scores.argmax(1) == s.labels).mean()) == pytest.approx(m["top1"])
    assert cli_main(["ensemble", str(joint), str(bone), "--out", str(tmp_path / "ens")]) == 0
    fused = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert fused["num_samples"] == 90 and fused["split"] == "test"
    assert [r["top1"] for r in fused["runs"]] == pytest.approx([m_joint["top1"], m_bone["top1"]])
    assert fused["top1"] >= min(m_joint["top1"], m_bone["top1"])
    assert fused["top1"] > 1 / 15  # above chance after 6 short epochs
    with pytest.raises(DataError, match="different splits"):
        ensemble([joint, other], tmp_path / "never")
