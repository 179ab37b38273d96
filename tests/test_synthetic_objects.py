"""The synthetic objects set: a small held object and the motion decide the class; the pose cannot
see the object, the pixels cannot tell the side, and only the object at the hand tells the class."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from test_data_synthetic import _softmax_probe

import deformact
import deformact.data as dd
from deformact.data import synthetic_objects as so
from deformact.engine.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _params(n: int = 12, seed: int = 0, frames: int = 8) -> dict:
    return so.sample_params(n, np.random.default_rng(seed), frames=frames)


def test_items_tracks_and_sizes():
    ds = dd.build_dataset(type="synthetic", variant="objects", split="train", train=True, num_train=12, seed=1)
    assert isinstance(ds, so.SyntheticObjectsDataset) and ds.num_classes == 12 and len(ds) == 12
    item = ds[0]
    assert item["rgb"].shape == (3, 16, 112, 112) and item["pose"].shape == (2, 16, 17, 3)
    assert item["object_track"].shape == (16, 3) and ds.class_names[0] == "raise_left_arm_disc"
    track = ds.object_tracks()
    assert 2 * track[..., 2].max() <= 0.10  # the deciding object spans at most 10 % of the frame side
    assert (track[..., :2] > 0).all() and (track[..., :2] < 1).all()
    p = ds.data["params"]
    _, kinds = so.object_tracks(p)
    counts = np.stack([(kinds == k).sum(1) for k in range(3)], 1)
    assert (counts == 1).all()  # every kind once in every clip: which kinds are seen says nothing
    assert 0.25 < p["second"].mean() < 0.75 and np.abs(p["jitter"]).max() > 0.005  # two people, shake
    test = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=4, num_clips=2,
                            modality="pose", frames=8)
    item = test[0]
    assert set(item) == {"pose", "person_mask", "object_track", "label"} and item["object_track"].shape == (2, 8, 3)
    with pytest.raises(deformact.errors.DataError, match="variant"):
        dd.build_dataset(type="synthetic", variant="nope", split="train")


def test_object_is_invisible_in_the_pose_and_side_in_the_pixels():
    p = _params()
    a = so.generate(12, params=p, image_size=64, frames=8)
    q = copy.deepcopy(p)  # another object (all kinds shifted, so each still appears once)
    q["object"], q["distractor_kind"] = (p["object"] + 1) % 3, (p["distractor_kind"] + 1) % 3
    q["label"] = p["motion"] * 3 + q["object"]
    b = so.generate(12, params=q, image_size=64, frames=8)
    np.testing.assert_array_equal(a["pose"], b["pose"])  # identical poses: pose-only tops out at 1/3
    assert (a["label"] != b["label"]).all()
    assert (np.abs(a["rgb"].astype(int) - b["rgb"]).reshape(12, -1).max(1) > 100).all()
    q = copy.deepcopy(p)  # the other side's limb, seen from the other side
    q["motion"], q["facing"][:, 0] = p["motion"] ^ 1, 1 - p["facing"][:, 0]
    q["label"] = q["motion"] * 3 + p["object"]
    c = so.generate(12, params=q, image_size=64, frames=8)
    np.testing.assert_array_equal(a["rgb"], c["rgb"])  # identical pixels: RGB-only tops out at 1/2
    assert (a["label"] != c["label"]).all() and not np.array_equal(a["pose"], c["pose"])


def _colour_scores(rgb: np.ndarray) -> np.ndarray:
    """n x T x S x S x 3: how red, blue and yellow each pixel is (the object kinds' colours)."""
    r, g, b = (rgb[:, 0, c].astype(np.float32) / 255 for c in range(3))
    return np.maximum(np.stack([r - np.maximum(g, b), b - np.maximum(r, g), np.minimum(r, g) - b], -1), 0)


def _features(d: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose: how much each joint moves. RGB (global): how much of each object colour is seen and
    moves, and motion per band of image rows. Both: the pose's plus the object colours at the
    actor's wrists, read where the pose puts them."""
    pose = d["pose"][:, 0]  # n x M x T x V x 3
    vis = pose[..., 2:] > 0
    cnt = np.maximum(vis.sum(2), 1)
    mean = (pose[..., :2] * vis).sum(2) / cnt
    std = np.sqrt((((pose[..., :2] - mean[:, :, None]) ** 2) * vis).sum(2) / cnt).max(1).reshape(len(pose), -1)
    col = _colour_scores(d["rgb"])  # n x T x S x S x 3
    n, _, s = col.shape[:3]
    grey = d["rgb"][:, 0].astype(np.float32).mean(1) / 255  # n x T x S x S
    rows = grey.std(1).mean(2).reshape(n, 8, -1).mean(2)
    rgb = np.concatenate([col.mean((1, 2, 3)), col.std(1).mean((1, 2)), rows], 1)
    p = d["params"]
    actor = np.where(p["second"] & (p["actor_slot"] == 1), 1, 0)
    from scipy.ndimage import uniform_filter

    box = uniform_filter(col, size=(1, 1, 5, 5, 1), mode="constant")  # mean over a 5 x 5 window
    wrists = []
    for j in (9, 10):  # COCO left / right wrist of the actor
        xy = np.clip((pose[np.arange(n), actor, :, j, :2] * s).astype(int), 0, s - 1)  # n x T x 2
        ni, ti = np.meshgrid(np.arange(n), np.arange(col.shape[1]), indexing="ij")
        wrists.append(box[ni, ti, xy[..., 1], xy[..., 0]].mean(1))
    return std, rgb, np.concatenate([std, *wrists], 1)


def test_linear_probes_need_both_modalities():
    # Bayes ceilings 1/3 (pose) and 1/2 (RGB); probes land at or below them, and near 1 with both
    tr, te = (so.generate(n, seed=0, split=split, frames=8, image_size=64)
              for n, split in ((240, "train"), (180, "test")))
    (ptr, rtr, btr), (pte, rte, bte) = _features(tr), _features(te)
    pose = _softmax_probe(ptr, tr["label"], pte, te["label"])
    rgb = _softmax_probe(rtr, tr["label"], rte, te["label"])
    both = _softmax_probe(btr, tr["label"], bte, te["label"])
    assert pose < 0.45 and rgb < 0.62 and both > 0.9, (pose, rgb, both)


def test_localisation_hits_known_points():
    track = torch.tensor([[[0.5, 0.5, 0.04], [0.2, 0.8, 0.04]]])  # 1 x T=2 x (x, y, r)
    points = torch.tensor([[[0.1, 0.5, 0.55], [0.1, 0.5, 0.7], [0.9, 0.8, 0.2], [0.9, 0.5, 0.5]]])  # (t, y, x)
    hit = so.localisation_hits(points, track)
    assert hit.tolist() == [[True, False, True, False]]  # 0.05 <= 1.5 r; 0.2 > 1.5 r; frame 1; wrong frame
    points[0, 0] = float("nan")  # a masked joint anchor is never a hit
    assert so.localisation_hits(points, track).tolist() == [[False, False, True, False]]


def test_evaluate_reports_localisation():
    ds = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=6, frames=8, image_size=64)
    kw = dict(num_classes=12, frames=8, image_size=64, dim=32, heads=2, depth=2)
    grid = evaluate(deformact.build_model("demo", rgb_attention="grid", **kw), ds, batch_size=3)
    deform = evaluate(deformact.build_model("demo", offset_condition="cm", **kw), ds, batch_size=3)
    assert 0 <= grid["localisation"] <= 1
    assert deform["localisation"] == pytest.approx(grid["localisation"])  # a new model reads the grid
    assert "localisation" not in evaluate(deformact.build_model("demo", rgb_attention="full", **kw), ds)
    # with joint anchors the fraction is over the points that were read (masked anchors are NaN);
    # a new anchored model reads the grid and the joints, so its fraction is the same as computing it
    # by hand from its maps
    torch.manual_seed(0)
    anchored = deformact.build_model("demo", search_anchors="joints", **kw).eval()
    result = evaluate(anchored, ds, batch_size=6)
    got = result["localisation"]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6)))
    with torch.no_grad():
        _, maps = anchored(rgb=batch["rgb"], pose=batch["pose"], person_mask=batch["person_mask"], return_maps=True)
    last = maps["sampling_locations"][:, -1]
    assert last.isnan().any()  # the absent second person's anchors
    near = so.localisation_hits(last, batch["object_track"])
    assert got == pytest.approx(float(near.sum() / last.isfinite().all(-1).sum()))
    # attended: the CM attention of each sampled key, times the share of its G points on the object
    used = (maps["sampling_weights"][:, -1] * near.float().mean(1)).sum(-1).mean()
    assert result["attended_localisation"] == pytest.approx(float(used), abs=1e-6)


def test_motion_and_object_are_scored_apart():
    from deformact.engine.evaluation import part_accuracies

    ds = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=6, frames=8, image_size=64)
    labels = torch.tensor([0, 4, 8, 11])  # motion 0 / 1 / 2 / 3, object 0 / 1 / 2 / 2
    pred = torch.tensor([1, 4, 5, 0])  # right motion + wrong object, right, wrong motion + right object, neither
    scores = torch.nn.functional.one_hot(pred, 12).float()
    assert part_accuracies(ds, scores, labels) == {"motion_acc": 0.5, "object_acc": 0.5}
    assert part_accuracies(dd.build_dataset(type="synthetic", split="test", num_test=4), scores, labels) == {}
    # through evaluate: the shares follow from the confusion matrix
    m = evaluate(deformact.build_model("demo", num_classes=12, frames=8, image_size=64, dim=32, heads=2), ds,
                 batch_size=3)
    conf = torch.as_tensor(m["confusion"])  # rows: true class
    motion = torch.arange(12) // 3
    same = (motion[:, None] == motion[None]).float()
    assert m["part_acc"]["motion_acc"] == pytest.approx(float((conf * same).sum() / conf.sum()))


def test_object_probe_reads_the_token_under_the_object():
    from deformact.tools.objects_probe import read_at_object, run_probe

    volume = torch.zeros(1, 2, 4, 7, 7)  # B C T' H' W'
    volume[0, 0, :, 5, 1] = 1.0  # token row 5, column 1 in every token frame
    volume[0, 1, 2, 5, 1] = 4.0  # and channel 1 only in token frame 2
    track = torch.tensor([(1.5 / 7, 5.5 / 7, 0.05)]).expand(8, 3)[None]  # centre of that token, T = 8
    torch.testing.assert_close(read_at_object(volume, track), torch.tensor([[1.0, 1.0]]))
    out = run_probe(read="object", epochs=1, num_train=16, num_test=8, frames=4, image_size=32, dim=8)
    assert [e["epoch"] for e in out["epochs"]] == [1] and 0 <= out["epochs"][0]["object_top1"] <= 1


def test_explain_item_draws_the_points_and_scores_one_clip(tmp_path):
    from deformact.tools.explain_objects import explain_item

    ds = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=2, frames=8, image_size=64)
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=12, frames=8, image_size=64, dim=32, heads=2,
                                  search_anchors="joints")
    out = explain_item(model, ds, 1, tmp_path / "points.png")
    assert (tmp_path / "points.png").stat().st_size > 10_000
    assert out["label"] == ds.class_names[ds[1]["label"]] and out["predicted"] in ds.class_names
    assert 0 <= out["attended_localisation"] <= 1 and 0 <= out["localisation"] <= 1


def test_read_distances_known_points_and_a_new_model_reads_where_the_grid_reads():
    from deformact.tools.objects_reads import measure, read_distances

    track = torch.tensor([[[0.5, 0.5, 0.04], [0.2, 0.8, 0.04]]])  # 1 x T=2 x (x, y, r)
    points = torch.tensor([[[[0.1, 0.5, 0.54], [0.1, 0.5, 0.7], [0.9, 0.8, 0.3], [float("nan")] * 3]]])
    weights = torch.tensor([[0.5, 0.5, 0.0, 0.0]])  # B x P
    nearest, weighted = read_distances(points, weights, track)
    assert nearest.tolist() == pytest.approx([1.0])  # 0.04 away = one radius; the NaN anchor is left out
    assert weighted.tolist() == pytest.approx([(1.0 + 5.0) / 2])  # 0.2 away = 5 radii
    ds = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=6, frames=8, image_size=64)
    kw = dict(num_classes=12, frames=8, image_size=64, dim=32, heads=2, depth=2, search_anchors="joints")
    torch.manual_seed(0)
    grid = measure(deformact.build_model("demo", rgb_attention="grid", **kw), ds, batch_size=3)
    torch.manual_seed(1)
    deform = measure(deformact.build_model("demo", **kw), ds, batch_size=3)  # zero-initialized offsets
    assert grid["clips"] == 6 and 0 < grid["nearest_median_r"] < 20
    assert deform["nearest_median_r"] == pytest.approx(grid["nearest_median_r"], abs=1e-5)
    assert deform["clips_with_a_read_within_1_r"] == grid["clips_with_a_read_within_1_r"]
    assert grid["grid_moved_cells_block1"] == 0.0 and deform["grid_moved_cells_block2"] == pytest.approx(0.0, abs=1e-6)


def test_grid_displacement_is_measured_in_cells_of_the_reference_grid():
    from deformact.tools.objects_reads import grid_displacement

    ds = dd.build_dataset(type="synthetic", variant="objects", split="test", num_test=2, frames=8, image_size=64)
    model = deformact.build_model("demo", num_classes=12, frames=8, image_size=64, dim=32, heads=2, depth=2)
    last = model.blocks[1].rgb.attn.search.offset_net[-1]  # block 2: every point 0.5 cells along x
    with torch.no_grad():
        last.bias.copy_(torch.tensor([0.0, 0.0, math.atanh(0.5 / model.config.offset_range)]))
    item = ds[0]
    with torch.no_grad():
        _, maps = model(**{k: item[k][None] for k in ("rgb", "pose", "person_mask")}, return_maps=True)
    moved = grid_displacement(model, maps["sampling_locations"])  # B x L x G x P
    assert moved.shape[:2] == (1, 2)
    assert torch.equal(moved[:, 0], torch.zeros_like(moved[:, 0]))  # block 1 untouched: on its grid
    assert torch.allclose(moved[:, 1], torch.full_like(moved[:, 1], 0.5), atol=1e-5)
