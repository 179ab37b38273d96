"""The synthetic cross-modal set: deterministic, balanced, and built so that neither modality alone
suffices (colour is invisible in the pose, the limb's side is invisible in the pixels)."""

import copy

import numpy as np
import pytest
import torch

import deformact.data as dd
from deformact.data import synthetic as syn


def _params(n=24, seed=0, **kw):
    return syn.sample_params(n, np.random.default_rng(seed), **kw)


def test_deterministic_by_seed():
    a = syn.generate(24, seed=3, split="train")
    b = syn.generate(24, seed=3, split="train")
    c = syn.generate(24, seed=4, split="train")
    for k in ("rgb", "pose", "person_mask", "label"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["rgb"], c["rgb"]) and not np.array_equal(a["pose"], c["pose"])
    test = syn.generate(24, seed=3, split="test")
    assert not np.array_equal(a["pose"], test["pose"])  # train and test are different draws


def test_dataset_items_and_balance():
    ds = dd.build_dataset(type="synthetic", split="train", train=True, num_train=48, seed=1)
    assert dd.build_dataset(type="synthetic", split="train", num_train=48, seed=1).data is ds.data  # cached
    assert len(ds) == 48 and ds.num_classes == 12 and ds.layout == "coco17"
    assert ds.class_names[0] == "raise_left_arm_red" and len(set(ds.class_names)) == 12
    assert np.bincount(ds.data["label"], minlength=12).tolist() == [4] * 12
    item = ds[0]
    assert item["rgb"].shape == (3, 8, 64, 64) and item["rgb"].dtype == torch.float32
    assert item["pose"].shape == (2, 8, 17, 3) and item["person_mask"][0]
    rgb01 = item["rgb"] * dd.RGB_STD[0] + dd.RGB_MEAN[0]
    assert rgb01.min() >= -1e-6 and rgb01.max() <= 1 + 1e-6
    xy = item["pose"][..., :2][item["pose"][..., 2] > 0]
    assert xy.min() > -0.1 and xy.max() < 1.1
    second = ds.data["person_mask"][:, 0, 1]
    assert 0.1 < second.mean() < 0.6  # sometimes a second (idle) person
    test = dd.build_dataset(type="synthetic", split="test", num_test=24, num_clips=2, modality="pose")
    item = test[0]
    assert set(item) == {"pose", "person_mask", "label"} and item["pose"].shape == (2, 2, 8, 17, 3)
    assert not torch.equal(item["pose"][0], item["pose"][1])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["rgb"].shape == (4, 3, 8, 64, 64) and batch["label"].shape == (4,)


def test_colour_is_invisible_in_the_pose():
    p = _params()
    q = copy.deepcopy(p)
    q["colour"] = (p["colour"] + 1) % 3  # another class, same motion and nuisances
    q["label"] = p["motion"] * 3 + q["colour"]
    a, b = syn.generate(24, params=p), syn.generate(24, params=q)
    np.testing.assert_array_equal(a["pose"], b["pose"])  # identical poses
    assert (a["label"] != b["label"]).all()
    diff = np.abs(a["rgb"].astype(int) - b["rgb"].astype(int))
    assert (diff.reshape(24, -1).max(1) > 100).all()  # every clip's pixels change


def test_side_is_invisible_in_the_pixels():
    p = _params()
    q = copy.deepcopy(p)
    q["motion"] = p["motion"] ^ 1  # left <-> right limb: another class ...
    q["label"] = q["motion"] * 3 + p["colour"]
    q["facing"][:, 0] = 1 - p["facing"][:, 0]  # ... seen from the other side
    a, b = syn.generate(24, params=p), syn.generate(24, params=q)
    np.testing.assert_array_equal(a["rgb"], b["rgb"])  # identical pixels, so RGB-only tops out at 1/2
    assert (a["label"] != b["label"]).all()
    # the pose names the moving joint: the left wrist/ankle moves for "left" motions
    motion = p["motion"]
    for d, m in ((a, motion), (b, q["motion"])):
        actor = np.where(p["second"] & (p["actor_slot"] == 1), 1, 0)
        pose = d["pose"][np.arange(24), 0, actor]  # n x T x 17 x 3
        xy = np.where(pose[..., 2:] > 0, pose[..., :2], np.nan)  # dropped joints (score 0) don't count
        spread = np.nanstd(xy, 1).sum(-1)  # n x 17 temporal movement per joint
        moving = np.where(m < 2, np.where(spread[:, 9] > spread[:, 10], 0, 1),
                          np.where(spread[:, 15] > spread[:, 16], 2, 3))
        np.testing.assert_array_equal(moving, m)


def test_facing_is_uniform_and_independent_of_the_class():
    # the pixel argument needs P(facing | class) = 1/2 for every class
    p = _params(n=4800)
    for c in range(12):
        f = p["facing"][p["label"] == c, 0]
        assert abs(f.mean() - 0.5) < 0.08


def _features(d):
    """Pose: how much each joint moves (max over people). RGB: colour of the saturated pixels and
    the temporal variation per image row (where in height things move)."""
    pose = d["pose"][:, 0]  # n x M x T x V x 3
    vis = pose[..., 2:] > 0
    cnt = np.maximum(vis.sum(2), 1)
    mean = (pose[..., :2] * vis).sum(2) / cnt
    std = np.sqrt((((pose[..., :2] - mean[:, :, None]) ** 2) * vis).sum(2) / cnt).max(1).reshape(len(pose), -1)
    rgb = d["rgb"][:, 0].astype(np.float32) / 255  # n x 3 x T x S x S
    sat = (rgb.max(1) - rgb.min(1) > 0.3)[:, None]
    colour = (rgb * sat).sum((2, 3, 4)) / np.maximum(sat.sum((2, 3, 4)), 1)
    rows = rgb.std(2).mean((1, 3))
    return std, np.concatenate([colour, rows], 1)


def _softmax_probe(xtr, ytr, xte, yte, lam=1e-3):
    from scipy.optimize import minimize

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a, b = ((np.concatenate([(x - mu) / sd, np.ones((len(x), 1))], 1)) for x in (xtr, xte))
    y, d = np.eye(12)[ytr], a.shape[1]

    def loss(w):  # einsum, not BLAS: tiny matrices, and no thread pool fighting a busy machine
        w = w.reshape(d, 12)
        z = np.einsum("nd,dk->nk", a, w)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = np.einsum("nd,nk->dk", a, p - y) / len(a)
        g[:-1] += 2 * lam * w[:-1]
        return -(y * np.log(p + 1e-12)).sum() / len(a) + lam * (w[:-1] ** 2).sum(), g.ravel()

    w = minimize(loss, np.zeros(d * 12), jac=True, method="L-BFGS-B", options={"maxiter": 300}).x
    return float((np.einsum("nd,dk->nk", b, w.reshape(d, 12)).argmax(1) == yte).mean())


def test_linear_probes_need_both_modalities():
    # Bayes ceilings 1/3 (pose) and 1/2 (RGB); learned probes land there, and near 1 with both
    tr, te = syn.generate(240, seed=0, split="train"), syn.generate(180, seed=0, split="test")
    (ptr, rtr), (pte, rte) = _features(tr), _features(te)
    pose = _softmax_probe(ptr, tr["label"], pte, te["label"])
    rgb = _softmax_probe(rtr, tr["label"], rte, te["label"])
    both = _softmax_probe(np.concatenate([ptr, rtr], 1), tr["label"], np.concatenate([pte, rte], 1), te["label"])
    assert pose < 0.45 and rgb < 0.62 and both > 0.9, (pose, rgb, both)


def test_regenerated_training_sets_are_fresh_and_repeatable():
    """data.regenerate_every K: round epoch // K is a new draw (balanced labels, the same sizes);
    round 0 is the set a run without regeneration trains on, and going back to an epoch gives
    back its exact clips (what a resumed run needs)."""
    kw = {"type": "synthetic", "split": "train", "train": True, "num_train": 24, "seed": 2, "image_size": 32,
          "frames": 4}
    plain = dd.build_dataset(**kw)
    ds = dd.build_dataset(**kw, regenerate_every=2)
    first = copy.deepcopy(ds.data)
    for k in ("rgb", "pose", "label"):
        np.testing.assert_array_equal(first[k], plain.data[k])
    ds.set_epoch(1)
    assert ds.data is not None and ds.round == 0
    np.testing.assert_array_equal(ds.data["rgb"], first["rgb"])
    ds.set_epoch(2)
    assert ds.round == 1 and len(ds) == 24 and ds[0]["rgb"].shape == plain[0]["rgb"].shape
    assert not np.array_equal(ds.data["rgb"], first["rgb"]) and not np.array_equal(ds.data["pose"], first["pose"])
    assert np.bincount(ds.data["label"], minlength=12).tolist() == [2] * 12
    second = copy.deepcopy(ds.data)
    ds.set_epoch(5)
    assert ds.round == 2 and not np.array_equal(ds.data["rgb"], second["rgb"])
    ds.set_epoch(3)
    np.testing.assert_array_equal(ds.data["rgb"], second["rgb"])
    ds.set_epoch(0)
    np.testing.assert_array_equal(ds.data["rgb"], first["rgb"])
    # the test split is one fixed set; a negative or fractional period is a config error
    test = dd.build_dataset(**{**kw, "split": "test", "train": False, "num_test": 12}, regenerate_every=1)
    before = test.data
    test.set_epoch(3)
    assert test.data is before
    for bad in (-1, 1.5, True):
        with pytest.raises(dd.DataError, match="regenerate_every"):
            dd.build_dataset(**kw, regenerate_every=bad)
