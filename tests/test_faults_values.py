"""Annotation values that used to train "successfully" on garbage (docs/FAILURES.md, "Data"):
non-integer labels, shared names, train/test overlap, one class, frame counts that contradict
``total_frames``, joints far off the frame; and the people count of poses with NaN in them."""

import subprocess
import sys

import numpy as np
import pytest

import deformact.data as dd
from deformact.data.checks import as_label, far_off_joints
from deformact.data.transforms import crop_pose
from deformact.tools.data_bench import random_annotations
from deformact.tools.windows import persons_found


def _data(n=6, classes=3):
    anns = random_annotations(n, 10, num_classes=classes)
    names = [a["frame_dir"] for a in anns]
    return {"split": {"train": names[:4], "test": names[4:]}, "annotations": anns}


def _build(tmp_path, data, **kw):
    path = tmp_path / "ann.pkl"
    dd.save_pyskl(data, path)
    return dd.build_dataset(**{"type": "pyskl", "ann_file": str(path), "modality": "pose", "split": "train", **kw})


def test_as_label_takes_only_whole_numbers():
    assert [as_label(x) for x in (2, np.int16(2), 2.0, np.float32(3))] == [2, 2, 2, 3]
    for bad in (1.7, "2", True, None, float("nan"), np.float64("inf"), [1]):
        with pytest.raises(ValueError, match="integer 'label'"):
            as_label(bad)


@pytest.mark.parametrize("label", [1.7, "2"])
def test_non_integer_label_is_an_error_naming_the_clip(tmp_path, label):
    data = _data()
    data["annotations"][3]["label"] = label
    name = data["annotations"][3]["frame_dir"]
    with pytest.raises(dd.DataError, match=rf"annotation 3 \({name}\): needs an integer 'label', got .*{label}"):
        _build(tmp_path, data)  # no classes declared: the contiguity check meets it first
    with pytest.raises(dd.DataError, match=rf"\({name}\): needs an integer 'label'"):
        _build(tmp_path, data, num_classes=3)  # declared: the per-annotation check


def test_integral_float_label_is_that_class(tmp_path):
    data = _data()
    data["annotations"][1]["label"] = float(data["annotations"][1]["label"])
    ds = _build(tmp_path, data, num_classes=3)
    assert int(ds[1]["label"]) == int(data["annotations"][1]["label"])


def test_shared_frame_dir_and_repeated_split_entries(tmp_path):
    data = _data()
    data["annotations"][5]["frame_dir"] = data["annotations"][2]["frame_dir"]
    with pytest.raises(dd.DataError, match=r"annotations 2 and 5 share frame_dir 'clip00002'"):
        _build(tmp_path, data)
    with pytest.raises(dd.DataError, match="share frame_dir"):
        _build(tmp_path, data, split=None)  # checked without a split too
    data = _data()
    data["split"]["train"].append(data["split"]["train"][0])
    with pytest.raises(dd.DataError, match=r"split 'train' lists 1 clip\(s\) more than once, e.g. \['clip00000'\]"):
        _build(tmp_path, data)


def test_total_frames_must_match_the_keypoints(tmp_path):
    data = _data()
    data["annotations"][2]["total_frames"] = 5000
    with pytest.raises(dd.DataError, match=r"clip00002.*keypoint has 10 frames but total_frames says 5000"):
        _build(tmp_path, data)
    data["annotations"][2]["total_frames"] = 11  # within the video tolerance: accepted
    assert len(_build(tmp_path, data)) == 4


def test_far_off_joints_counted_exactly():
    kp = np.full((1, 2, 3, 2), 32.0, np.float32)
    score = np.ones((1, 2, 3), np.float32)
    assert far_off_joints(kp, score, (64, 64)) == 0
    kp[0, 0, 0] = (64 + 64 + 1, 10)  # just past one frame size beyond the right edge
    kp[0, 1, 1] = (10, -65)  # above the top
    kp[0, 1, 2] = (1e30, 1e30)
    assert far_off_joints(kp, score, (64, 64)) == 3
    score[0, 1, 2] = 0  # unscored joints do not count, nor do NaN ones
    kp[0, 0, 1] = np.nan
    assert far_off_joints(kp, score, (64, 64)) == 2
    kp[0, 0, 0] = (64 + 63, 10)  # within a frame size: an estimate off the edge, kept
    assert far_off_joints(kp, score, (64, 64)) == 1


@pytest.mark.parametrize("value", [1e9, 1e30])
def test_joints_far_off_the_frame_are_a_bad_clip(tmp_path, value):
    data = _data()
    data["annotations"][1]["keypoint"][:] = value
    with pytest.raises(dd.DataError, match=r"clip00001\): \d+ joint\(s\) lie more than a frame size outside"):
        _build(tmp_path, data)
    with pytest.warns(UserWarning, match="left out 1 clip.*far off the frame"):
        ds = _build(tmp_path, data, skip_bad=True)
    assert ds.left_out == ["clip00001"] and ds.num_left_out == 1 and len(ds) == 3
    assert all(np.isfinite(ds[i]["pose"].numpy()).all() for i in range(len(ds)))
    for a in data["annotations"]:
        a["keypoint"][:] = value
    with pytest.raises(dd.DataError, match="every clip of the split is bad"):
        _build(tmp_path, data, skip_bad=True)


def test_crop_of_a_collapsed_box_is_finite():
    kp = np.full((1, 2, 3, 2), 0.5, np.float32)
    out = crop_pose(kp, (0.5, 0.5, 0.5, 0.5))
    assert np.isfinite(out).all() and (out == 0).all()


def test_persons_found_needs_a_finite_scored_joint():
    kp = np.zeros((3, 4, 17, 2), np.float32)
    score = np.ones((3, 4, 17), np.float32)
    kp[1] = np.nan  # person 1: all positions NaN, scores 1
    score[2] = np.nan  # person 2: all scores NaN
    assert persons_found({"keypoint": kp, "keypoint_score": score}) == 1
    kp[1, 2, 5] = 0.3  # one finite joint in one frame makes person 1 seen
    assert persons_found({"keypoint": kp, "keypoint_score": score}) == 2
    assert persons_found({"keypoint_score": np.zeros((0, 4, 17))}) == 0


def _train(tmp_path, data, *sets):
    ann = tmp_path / "ann.pkl"
    dd.save_pyskl(data, ann)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {{preset: demo, modality: pose, dim: 16, depth: 1, heads: 2}}\n"
                   f"data: {{type: pyskl, ann_file: {ann}, modality: pose, frames: 8, num_persons: 1}}\n"
                   "train: {batch_size: 4, num_workers: 0}\nepochs: 1\n")
    argv = [sys.executable, "-m", "deformact.cli", "train", "-c", str(cfg), "--out", str(tmp_path / "run")]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_train_refuses_overlapping_splits_and_one_class(tmp_path):
    data = _data()
    data["split"]["test"] = data["split"]["train"][:2]
    r = _train(tmp_path, data)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "2 clip(s) are in both the training split 'train' and the test split 'test'" in r.stderr
    assert not (tmp_path / "run" / "last.pt").exists()
    data = _data()
    for a in data["annotations"]:
        a["label"] = 0
    r = _train(tmp_path, data)
    assert r.returncode == 2 and r.stderr.strip().endswith("(declare them with data.num_classes or "
                                                           "data.label_map if the file holds only some)"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_skip_warning_is_one_line(tmp_path):
    data = _data()
    data["annotations"][0]["keypoint"][:] = 1e9
    r = _train(tmp_path, data, "data.skip_bad=true")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "far off" in x]
    assert len(lines) == 1 and lines[0].startswith("deformact train: warning: left out 1 clip(s)"), r.stderr
    assert "UserWarning" not in r.stderr and "warnings.warn" not in r.stderr


def test_a_checkpoint_given_as_annotations_is_named_as_such(tmp_path):
    import torch

    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "best.pt")
    with pytest.raises(dd.DataError, match=r"best\.pt: a zip archive \(a torch checkpoint\?\), not a pyskl pickle"):
        dd.load_pyskl(tmp_path / "best.pt")
