"""Sampling and augmentation keep the two modalities aligned: same frames, joints under their pixels
after crop and flip (with left/right swapped); NaN keypoints, zero people and person ranking."""

import numpy as np
import pytest
import torch

import deformact.data as dd
from deformact.io import write_video

MEAN, STD = dd.RGB_MEAN[0], dd.RGB_STD[0]


def _write(tmp_path, anns, frames_by_dir, codec="libx264"):
    root = tmp_path / "videos"
    root.mkdir()
    for d, frames in frames_by_dir.items():
        write_video(root / (d if codec == "png" else f"{d}.mp4"), frames, codec=codec, crf=10)
    dd.save_pyskl({"split": {"s": [a["frame_dir"] for a in anns]}, "annotations": anns}, tmp_path / "a.pkl")
    return str(tmp_path / "a.pkl"), str(root)


def test_segment_indices():
    for n, t in [(100, 16), (16, 16), (7, 16), (1, 4), (33, 8)]:
        test = dd.segment_indices(n, t, num_clips=5)
        assert test.shape == (5, t) and test.min() >= 0 and test.max() < n
        assert (np.diff(test, axis=1) >= 0).all()  # temporal order kept
        np.testing.assert_array_equal(test, dd.segment_indices(n, t, num_clips=5))  # deterministic
        train = dd.segment_indices(n, t, rng=np.random.default_rng(0))[0]
        assert (np.diff(train) >= 0).all() and train.max() < n
        if n >= t:  # one frame per equal segment
            seg = np.floor(np.arange(t) * n / t), np.ceil((np.arange(t) + 1) * n / t)
            assert ((train >= seg[0]) & (train < seg[1])).all()
            assert len(np.unique(test[0])) == t
        else:  # short clips: every frame used, repeated evenly
            assert set(test[0]) == set(range(n)) and np.bincount(test[0]).max() - np.bincount(test[0]).min() <= 1
    clips = dd.segment_indices(100, 4, num_clips=4)
    assert len({tuple(c) for c in clips}) == 4  # different clips see different frames


def _dot_scene(n=12, w=128, h=96):
    """Red dot at the left wrist, green dot at the right wrist, moving; the body's other joints around."""
    frames = np.full((n, h, w, 3), 10, np.uint8)
    kp = np.zeros((1, n, 17, 2), np.float32)
    rng = np.random.default_rng(1)
    body = rng.uniform([40, 25], [90, 75], (17, 2))
    for i in range(n):
        red, green = (30 + 2 * i, 40 + i), (95 - 2 * i, 62 - i)
        frames[i, red[1] - 2:red[1] + 3, red[0] - 2:red[0] + 3] = (250, 0, 0)
        frames[i, green[1] - 2:green[1] + 3, green[0] - 2:green[0] + 3] = (0, 250, 0)
        kp[0, i] = body
        kp[0, i, 9], kp[0, i, 10] = np.add(red, 0.5), np.add(green, 0.5)  # pixel centres
    ann = {"frame_dir": "dots", "label": 0, "total_frames": n, "img_shape": (h, w), "keypoint": kp,
           "keypoint_score": np.ones((1, n, 17), np.float32)}
    return frames, ann


def _centroid(img, colour):
    """(x, y) centre of the pixels of a colour in a 3 x H x W normalized frame, in [0, 1] units."""
    rgb = img * STD + MEAN
    on = (rgb[colour] > 0.5) & (rgb[1 - colour] < 0.35)
    if on.sum() < 2:
        return None
    ys, xs = np.nonzero(on.numpy())
    w = rgb[colour].numpy()[ys, xs]
    s = img.shape[-1]
    return (np.average(xs, weights=w) + 0.5) / s, (np.average(ys, weights=w) + 0.5) / s


@pytest.mark.parametrize("flip", [0.0, 1.0])
@pytest.mark.parametrize("codec", ["libx264", "png"])
def test_joints_stay_under_their_pixels(tmp_path, flip, codec):
    frames, ann = _dot_scene()
    ann_file, root = _write(tmp_path, [ann], {"dots": frames}, codec)
    ds = dd.build_dataset(type="pyskl", ann_file=ann_file, split="s", video_root=root, frames=6, image_size=64,
                          train=True, flip=flip, crop_scale=(0.35, 1.0), num_persons=2)
    checked = 0
    for seed in range(6):
        torch.manual_seed(seed)
        ds._rng = None
        item = ds[0]
        assert item["person_mask"].tolist() == [[True] * 6, [False] * 6]  # per frame
        for t in range(6):
            pose = item["pose"][0, t]
            # flip swaps the joint names: the red (left-wrist) dot is now under the *right* wrist
            for colour, joint in ((0, 10 if flip else 9), (1, 9 if flip else 10)):
                x, y = pose[joint, :2].tolist()
                if not (0.06 < x < 0.94 and 0.06 < y < 0.94):
                    continue  # dot (partly) cropped away
                c = _centroid(item["rgb"][:, t], colour)
                assert c is not None, (seed, t, colour)
                assert abs(c[0] - x) < 1.0 / 64 and abs(c[1] - y) < 1.0 / 64, (seed, t, colour, c, (x, y))
                checked += 1
    assert checked > 30


def test_same_frames_for_both_modalities(tmp_path):
    n = 40
    tex = np.random.default_rng(0).integers(0, 20, (48, 64, 1))
    frames = np.stack([np.clip(5 * i + tex, 0, 255).repeat(3, -1) for i in range(n)]).astype(np.uint8)
    kp = np.random.default_rng(0).uniform(10, 40, (1, n, 17, 2)).astype(np.float32)
    score = np.repeat(((np.arange(n) + 1) / 100)[None, :, None], 17, 2).astype(np.float32)  # frame index
    ann = {"frame_dir": "idx", "label": 0, "total_frames": n, "img_shape": (48, 64), "keypoint": kp,
           "keypoint_score": score}
    ann_file, root = _write(tmp_path, [ann], {"idx": frames})

    def indices(item):
        rgb = (item["rgb"] * STD + MEAN) * 255
        from_rgb = torch.round((rgb.mean((-4, -2, -1)) - 9.5) / 5)
        from_pose = torch.round(item["pose"][..., 0, :, 0, 2] * 100 - 1)
        return from_rgb, from_pose

    for train, clips in ((True, 1), (False, 3)):
        ds = dd.build_dataset(type="pyskl", ann_file=ann_file, split="s", video_root=root, frames=8, image_size=32,
                              train=train, num_clips=clips, num_persons=1, compact=False)
        for seed in range(3):
            torch.manual_seed(seed)
            ds._rng = None
            a, b = indices(ds[0])
            torch.testing.assert_close(a, b)
            assert (b.diff(dim=-1) >= 0).all() and len(b.unique()) >= 8
        if not train:
            np.testing.assert_array_equal(b.numpy(), ds.frame_indices(0))


def _pose_ds(tmp_path, kp, score, **kw):
    ann = {"frame_dir": "p", "label": 0, "total_frames": kp.shape[1], "img_shape": (100, 100), "keypoint": kp,
           "keypoint_score": score}
    dd.save_pyskl({"annotations": [ann]}, tmp_path / "p.pkl")
    return dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "p.pkl"), modality="pose", frames=4, compact=False,
                            **kw)


def test_nan_keypoints_and_frames_without_people(tmp_path):
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (2, 4, 17, 2)).astype(np.float32)
    score = rng.uniform(0.5, 1, (2, 4, 17)).astype(np.float32)
    kp[0, 0, 3, 0] = np.nan
    kp[1, 2, 5] = np.inf
    score[0, 1, 7] = np.nan
    kp[:, 3], score[:, 3] = 0, 0  # nobody in the last frame
    item = _pose_ds(tmp_path, kp, score, num_persons=2)[0]
    pose = item["pose"]
    assert torch.isfinite(pose).all() and pose.shape == (2, 4, 17, 3)
    assert (pose[..., 2] >= 0).all() and (pose[..., 2] <= 1).all()
    # the bad joints are missing: (0, 0, 0); the empty frame is all zeros; both people present
    order = [0, 1] if np.nansum(score[0]) >= np.nansum(score[1]) else [1, 0]
    p0, p1 = order.index(0), order.index(1)
    assert pose[p0, 0, 3].tolist() == [0, 0, 0] and pose[p1, 2, 5].tolist() == [0, 0, 0]
    assert pose[p0, 1, 7].tolist() == [0, 0, 0] and (pose[:, 3] == 0).all()
    # both people present; the empty frame is masked for both (a per-frame mask, M x T)
    assert item["person_mask"].tolist() == [[True, True, True, False]] * 2
    # a clip with no people at all: zeros through the pipeline (predict on a video with nobody) ...
    ann = {"frame_dir": "p", "label": 0, "img_shape": (100, 100), "keypoint": np.zeros((0, 4, 17, 2), np.float32),
           "keypoint_score": np.zeros((0, 4, 17), np.float32)}
    empty = dd.build_test_pipeline({"modality": "pose", "frames": 4, "compact": False})(ann)
    assert (empty["pose"] == 0).all() and not empty["person_mask"].any()
    # ... but a dataset of nobody is an error, not a run that learns nothing
    with pytest.raises(dd.DataError, match="no clip shows anybody"):
        _pose_ds(tmp_path, ann["keypoint"], ann["keypoint_score"])


def test_people_ranked_by_total_score(tmp_path):
    kp = np.zeros((3, 4, 17, 2), np.float32)
    kp[..., 0] = np.array([10, 50, 90])[:, None, None]  # person k stands at x = 10, 50, 90 px
    kp[..., 1] = 50
    score = np.ones((3, 4, 17), np.float32) * np.array([0.2, 0.9, 0.5])[:, None, None]
    item = _pose_ds(tmp_path, kp, score, num_persons=2)[0]
    np.testing.assert_allclose(item["pose"][:, 0, 0, 0], [0.5, 0.9], atol=1e-6)  # people 1 then 2
    item = _pose_ds(tmp_path, kp, score, num_persons=4)[0]
    assert item["person_mask"].all(-1).tolist() == [True, True, True, False] and (item["pose"][3] == 0).all()


def test_multi_clip_items_collate(tmp_path):
    rng = np.random.default_rng(0)
    ds = _pose_ds(tmp_path, rng.uniform(0, 100, (1, 30, 17, 2)).astype(np.float32),
                  np.ones((1, 30, 17), np.float32), num_clips=4)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert batch["pose"].shape == (1, 4, 2, 4, 17, 3) and batch["person_mask"].shape == (1, 4, 2, 4)
    assert not torch.equal(batch["pose"][0, 0], batch["pose"][0, 1])
