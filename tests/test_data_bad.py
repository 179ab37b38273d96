"""Bad annotation files and options fail at build time with a clear DataError, not mid-epoch."""

import numpy as np
import pytest

import deformact.data as dd
from deformact.tools.data_bench import random_annotations


def _build(tmp_path, data, **kw):
    path = tmp_path / "ann.pkl"
    dd.save_pyskl(data, path)
    kw = {"type": "pyskl", "ann_file": str(path), "modality": "pose", **kw}
    return dd.build_dataset(**kw)


def _data(n=4, **kw):
    anns = random_annotations(n, 10, num_classes=3, **kw)
    return {"split": {"train": [a["frame_dir"] for a in anns[:3]], "val": [anns[3]["frame_dir"]]},
            "annotations": anns}


def test_valid_file_builds(tmp_path):
    ds = _build(tmp_path, _data(), split="train", label_map=["a", "b", "c"])
    assert len(ds) == 3 and ds.class_names == ["a", "b", "c"] and ds.layout == "coco17"
    assert ds[0]["pose"].shape == (2, 16, 17, 3)


def test_wrong_joint_count_for_layout(tmp_path):
    with pytest.raises(dd.DataError, match=r"ann\.pkl.*clip00000.*ntu25 has 25 joints, data has 17"):
        _build(tmp_path, _data(), split="train", layout="ntu25")
    data = _data()
    data["annotations"][2]["keypoint"] = data["annotations"][2]["keypoint"][:, :, :13]
    data["annotations"][2]["keypoint_score"] = data["annotations"][2]["keypoint_score"][:, :, :13]
    with pytest.raises(dd.DataError, match="clip00002.*coco17 has 17 joints, data has 13"):
        _build(tmp_path, data, split="train")  # layout inferred from the first clip
    with pytest.raises(dd.DataError, match="cannot infer a skeleton layout from 18 joints"):
        _build(tmp_path, _data(num_joints=18), split="train")


def test_label_out_of_range(tmp_path):
    with pytest.raises(dd.DataError, match=r"clip00002.*label 2 out of range \[0, 2\)"):
        _build(tmp_path, _data(), split="train", label_map=["a", "b"])
    with pytest.raises(dd.DataError, match=r"label 2 out of range \[0, 2\)"):
        _build(tmp_path, _data(), split="train", num_classes=2)
    data = _data()
    data["annotations"][0]["label"] = -1
    with pytest.raises(dd.DataError, match="clip00000.*label -1 out of range"):
        _build(tmp_path, data, split="train")
    data["annotations"][0]["label"] = "x"
    with pytest.raises(dd.DataError, match="integer 'label'"):
        _build(tmp_path, data, split="train")


def test_split_absent(tmp_path):
    with pytest.raises(dd.DataError, match=r"split 'xsub_val' not found; available: 'train', 'val'"):
        _build(tmp_path, _data(), split="xsub_val")
    data = _data()
    del data["split"]
    with pytest.raises(dd.DataError, match="no 'split'"):
        _build(tmp_path, data, split="train")
    data = _data()
    data["split"]["val"].append("ghost")
    with pytest.raises(dd.DataError, match="split 'val' lists 1 clip.*ghost"):
        _build(tmp_path, data, split="val")
    data["split"]["val"] = []
    with pytest.raises(dd.DataError, match="split 'val' is empty"):
        _build(tmp_path, data, split="val")


def test_empty_annotation_list(tmp_path):
    with pytest.raises(dd.DataError, match="ann.pkl: the annotation list is empty"):
        _build(tmp_path, {"split": {"train": []}, "annotations": []}, split="train")
    with pytest.raises(dd.DataError, match="not a pyskl file"):
        _build(tmp_path, [1, 2, 3])


def test_malformed_annotations(tmp_path):
    data = _data()
    data["annotations"][1]["keypoint_score"] = np.ones((2, 9, 17), np.float32)
    with pytest.raises(dd.DataError, match="clip00001.*keypoint_score shape"):
        _build(tmp_path, data, split="train")
    data = _data()
    data["annotations"][1]["keypoint"] = data["annotations"][1]["keypoint"][0]
    with pytest.raises(dd.DataError, match="clip00001.*M x T x V x 2"):
        _build(tmp_path, data, split="train")
    data = _data()
    del data["annotations"][0]["img_shape"], data["annotations"][0]["original_shape"]
    with pytest.raises(dd.DataError, match="clip00000.*img_shape"):
        _build(tmp_path, data, split="train")
    data = _data()
    del data["annotations"][0]["keypoint"]
    with pytest.raises(dd.DataError, match="clip00000.*no 'keypoint'"):
        _build(tmp_path, data, split="train")


def test_bad_options(tmp_path):
    data = _data()
    with pytest.raises(dd.DataError, match="unknown data key.*batch_sise"):
        _build(tmp_path, data, split="train", batch_sise=3)
    with pytest.raises(dd.DataError, match="needs video_root"):
        _build(tmp_path, data, split="train", modality="rgb+pose")
    with pytest.raises(dd.DataError, match="video_root is not a folder"):
        _build(tmp_path, data, split="train", modality="rgb+pose", video_root=str(tmp_path / "nope"))
    with pytest.raises(dd.DataError, match="pose-only options"):
        _build(tmp_path, data, split="train", modality="rgb+pose", video_root=str(tmp_path), pose_norm="person")
    with pytest.raises(dd.DataError, match="modality"):
        _build(tmp_path, data, split="train", modality="depth")
    with pytest.raises(dd.DataError, match="unknown data type"):
        dd.build_dataset(type="kinetics")
    with pytest.raises(dd.DataError, match="ann_file is required"):
        dd.build_dataset(type="pyskl")
    with pytest.raises(dd.DataError, match="chiral"):
        dd.build_dataset(type="synthetic", flip=0.5)
    with pytest.raises(dd.DataError, match="unknown data key.*ann_file"):
        dd.build_dataset(type="synthetic", ann_file="x.pkl")
    with pytest.raises(dd.DataError, match="4 x"):
        dd.build_dataset(type="synthetic", num_classes=10)
