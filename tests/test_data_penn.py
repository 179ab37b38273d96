"""Penn Action: the real labels (``shared_dir``, conftest.py) convert to pyskl (1,258 / 1,068) and load for training."""


import numpy as np
import pytest
import scipy.io
import torch

import deformact.data as dd
from deformact.cli import main as cli_main


@pytest.fixture(scope="module")
def penn_pkl(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("penn") / "penn_action.pkl"
    assert cli_main(["prepare", "penn-action", str(shared_dir / "datasets" / "penn_action"), "-o", str(out)]) == 0
    return out


def test_conversion_counts_and_labels(penn_pkl, shared_dir):
    data = dd.load_pyskl(penn_pkl)
    assert len(data["split"]["train"]) == 1258 and len(data["split"]["test"]) == 1068
    assert not set(data["split"]["train"]) & set(data["split"]["test"])
    assert data["class_names"] == sorted(data["class_names"]) and len(data["class_names"]) == 15
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    assert len(anns) == 2326
    assert sorted({a["label"] for a in anns.values()}) == list(range(15))
    # spot-check clips against the .mat files
    for clip in ("0001", "1000", "2326"):
        m = scipy.io.loadmat(shared_dir / "datasets" / "penn_action" / "labels" / f"{clip}.mat")
        a = anns[clip]
        assert data["class_names"][a["label"]] == str(m["action"][0])
        assert (clip in data["split"]["train"]) == (int(m["train"][0, 0]) == 1)
        assert a["keypoint"].shape == (1, m["x"].shape[0], 13, 2) == (1, a["total_frames"], 13, 2)
        np.testing.assert_allclose(a["keypoint"][0, ..., 0], m["x"], rtol=1e-6)
        np.testing.assert_allclose(a["keypoint"][0, ..., 1], m["y"], rtol=1e-6)
        np.testing.assert_array_equal(a["keypoint_score"][0], m["visibility"])
        assert tuple(a["img_shape"]) == tuple(int(d) for d in m["dimensions"][0, :2])


def test_loads_through_build_dataset(penn_pkl):
    # clip 1516 of train marks every joint invisible (score 0): nobody to learn from
    with pytest.raises(dd.DataError, match=r"split 'train': annotation \d+ \(1516\) shows nobody.*skip_bad"):
        dd.build_dataset(type="pyskl", ann_file=str(penn_pkl), split="train", modality="pose", num_persons=1)
    with pytest.warns(UserWarning, match="left out 1 clip"):
        train = dd.build_dataset(type="pyskl", ann_file=str(penn_pkl), train_split="train", modality="pose",
                                 frames=16, num_persons=1, train=True, skip_bad=True)
    assert train.left_out == ["1516"] and train.num_left_out == 1 and "1516" not in train.video_names()
    test = dd.build_dataset(type="pyskl", ann_file=str(penn_pkl), test_split="test", modality="pose", frames=16,
                            num_persons=1, num_clips=3)
    assert (len(train), len(test), train.num_classes, train.layout) == (1257, 1068, 15, "penn13")
    assert train.class_names[0] == "baseball_pitch"
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)))
    assert batch["pose"].shape == (8, 1, 16, 13, 3) and batch["person_mask"].any(-1).all()
    # per frame: the person counts exactly where a joint is visible (a few Penn frames show none)
    assert torch.equal(batch["person_mask"], (batch["pose"][..., 2] > 0).any(-1))
    assert torch.isfinite(batch["pose"]).all() and batch["label"].max() < 15
    item = test[5]
    assert item["pose"].shape == (3, 1, 16, 13, 3) and item["person_mask"].shape == (3, 1, 16)
    # test-time crop keeps the (visible) person inside the frame
    vis = item["pose"][..., 2] > 0
    xy = item["pose"][..., :2][vis]
    assert ((xy > -0.01) & (xy < 1.01)).all()
    # person-centred pose-only normalization with rotation/scale/shift augmentation
    with pytest.warns(UserWarning, match="left out 1 clip"):
        aug = dd.build_dataset(type="pyskl", ann_file=str(penn_pkl), split="train", modality="pose", frames=16,
                               num_persons=1, train=True, pose_norm="person", pose_rotate=10, pose_scale=0.1,
                               pose_shift=0.05, skip_bad=True)
    xy = aug[0]["pose"][..., :2][aug[0]["pose"][..., 2] > 0]
    assert xy.min() > -0.5 and xy.max() < 1.5 and (xy.amax(0) - xy.amin(0)).max() > 0.7


def test_prepare_cli_errors(tmp_path, capsys):
    assert cli_main(["prepare", "penn-action", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.pkl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deformact prepare: error:") and "nowhere" in err[0]
    (tmp_path / "labels").mkdir()
    scipy.io.savemat(tmp_path / "labels" / "0001.mat", {"x": np.zeros((3, 12)), "y": np.zeros((3, 12))})
    assert cli_main(["prepare", "penn-action", str(tmp_path), "-o", str(tmp_path / "x.pkl")]) == 2
    assert "0001.mat" in capsys.readouterr().err


def test_penn_layout_with_rgb_frames(tmp_path):
    """A release with frames/NNNN/*.jpg: convert, then load RGB + pose through the frame folders."""
    from deformact.io import write_video

    rng = np.random.default_rng(0)
    (tmp_path / "labels").mkdir()
    for i, (action, train) in enumerate([("bowl", 1), ("squat", -1), ("pushup", 1)], start=1):
        t = 12 + i
        x, y = rng.uniform(10, 54, (t, 13)), rng.uniform(8, 40, (t, 13))
        scipy.io.savemat(tmp_path / "labels" / f"{i:04d}.mat",
                         {"x": x, "y": y, "visibility": np.ones((t, 13), np.uint8), "action": action,
                          "pose": "front", "train": np.array([[train]]), "dimensions": np.array([[48, 64, t]]),
                          "nframes": np.array([[t]]), "bbox": np.zeros((t, 4))})
        write_video(tmp_path / "frames" / f"{i:04d}", rng.integers(0, 255, (t, 48, 64, 3), dtype=np.uint8),
                    codec="mjpeg")
    data = dd.convert_penn_action(tmp_path, tmp_path / "p.pkl")
    assert data["split"] == {"train": ["0001", "0003"], "test": ["0002"]}
    ds = dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "p.pkl"), split="train", train=True,
                          video_root=str(tmp_path / "frames"), frames=4, image_size=32, num_persons=1)
    item = ds[1]
    assert item["rgb"].shape == (3, 4, 32, 32) and item["pose"].shape == (1, 4, 13, 3)
    assert item["label"] == dd.PENN_ACTIONS.index("pushup") and ds.layout == "penn13"


# the holdout split's own properties are tested through `deformact prepare penn-holdout` in
# tests/test_penn_training.py; here only its errors


def test_holdout_split_errors(tmp_path):
    from deformact.errors import ConfigError

    dd.save_pyskl({"split": {"test": []}, "annotations": []}, tmp_path / "x.pkl")
    with pytest.raises(dd.DataError, match="x.pkl.*'train' split"):
        dd.add_holdout_split(tmp_path / "x.pkl")
    with pytest.raises(ConfigError, match="val_fraction"):
        dd.add_holdout_split(tmp_path / "x.pkl", val_fraction=1.0)
    with pytest.raises(ConfigError, match="invisible_score"):
        dd.add_holdout_split(tmp_path / "x.pkl", invisible_score=0.0)
