"""The clip pipeline: one annotation through ``build_test_pipeline`` gives exactly the dataset's
item (pose-only and RGB + pose from a video), training draws come from ``results["rng"]`` only,
and every transform touches only the keys it declares."""

import inspect
import re

import numpy as np
import pytest
import torch

import deformact.data as dd
from deformact.data import pipeline as pl
from deformact.io import write_video
from deformact.tools.data_bench import random_annotations


def _equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _anns(n=3, frames=30, persons=3, img_shape=(96, 128)):
    anns = random_annotations(n, frames, num_persons=persons, img_shape=img_shape, num_classes=3)
    anns[0]["keypoint"][1, 4, 2] = np.nan  # sanitized alike on both paths
    anns[1]["keypoint_score"][:, 7] = 0.0
    return anns


def _save(tmp_path, anns):
    path = tmp_path / "a.pkl"
    dd.save_pyskl({"split": {"all": [a["frame_dir"] for a in anns]}, "annotations": anns}, path)
    return str(path)


POSE_CFGS = [
    {"modality": "pose", "frames": 8},
    {"modality": "pose", "frames": 8, "num_clips": 3, "num_persons": 2},
    {"modality": "pose", "frames": 12, "pose_norm": "person", "num_persons": 4, "compact": False},
    {"modality": "pose", "frames": 40, "compact_padding": 0.5, "layout": "coco17"},  # more frames than the clip
]


@pytest.mark.parametrize("cfg", POSE_CFGS)
def test_test_pipeline_equals_the_dataset_item_pose(tmp_path, cfg):
    anns = _anns()
    ds = dd.build_dataset(type="pyskl", ann_file=_save(tmp_path, anns), split="all", train=False, **cfg)
    # a run config's data section: the dataset-only keys are ignored
    pipeline = dd.build_test_pipeline({"type": "pyskl", "ann_file": "elsewhere.pkl", "train_split": "x",
                                       "test_split": "y", "skip_bad": True, "label_map": None, **cfg})
    for i, ann in enumerate(anns):
        before = {k: np.copy(v) if isinstance(v, np.ndarray) else v for k, v in ann.items()}
        _equal(pipeline(ann), ds[i])
        for k, v in before.items():  # the annotation is left as it was
            np.testing.assert_array_equal(ann[k], v)
        # without a label, the item has none
        item = pipeline({k: v for k, v in ann.items() if k != "label"})
        assert "label" not in item and torch.equal(item["pose"], ds[i]["pose"])


def test_num_clips_override_and_score_channel(tmp_path):
    anns = _anns(n=2)
    ds = dd.build_dataset(type="pyskl", ann_file=_save(tmp_path, anns), split="all", modality="pose", frames=8,
                          num_clips=5)
    pipeline = dd.build_test_pipeline({"modality": "pose", "frames": 8, "num_clips": 1}, num_clips=5)
    ann = dict(anns[1])
    # pyskl also allows M x T x V x 3 keypoints (score last) without keypoint_score
    ann["keypoint"] = np.concatenate([ann["keypoint"], ann.pop("keypoint_score")[..., None]], -1)
    _equal(pipeline(ann), ds[1])
    item, state = pipeline.run(anns[1])
    _equal(item, ds[1])
    np.testing.assert_array_equal(state["frame_inds"].reshape(5, 8), ds.frame_indices(1))
    np.testing.assert_array_equal(state["rank"], ds.anns[1]["rank"])


def _video_dataset(tmp_path, modality="rgb+pose", **cfg):
    anns = _anns(n=2, frames=24, persons=2, img_shape=(48, 64))
    root = tmp_path / "videos"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for a in anns:
        write_video(root / f"{a['frame_dir']}.mp4", rng.integers(0, 255, (24, 48, 64, 3), dtype=np.uint8), crf=18)
    ds = dd.build_dataset(type="pyskl", ann_file=_save(tmp_path, anns), split="all", modality=modality,
                          video_root=str(root), frames=6, image_size=32, **cfg)
    return ds, anns, root


@pytest.mark.parametrize("num_clips", [1, 2])
def test_test_pipeline_equals_the_dataset_item_rgb_pose(tmp_path, num_clips):
    ds, anns, root = _video_dataset(tmp_path, num_clips=num_clips)
    cfg = {"type": "pyskl", "modality": "rgb+pose", "frames": 6, "image_size": 32, "num_clips": num_clips,
           "video_root": "ignored"}
    pipeline = dd.build_test_pipeline(cfg)
    for i, ann in enumerate(anns):
        item = pipeline({**ann, "filename": root / f"{ann['frame_dir']}.mp4"})
        assert item["rgb"].shape == ((num_clips,) if num_clips > 1 else ()) + (3, 6, 32, 32)
        _equal(item, ds[i])
    with pytest.raises(dd.DataError, match="filename"):
        pipeline(anns[0])


@pytest.mark.parametrize("modality,cfg", [
    ("rgb+pose", {"flip": 1.0, "crop_scale": (0.3, 1.0)}),
    ("pose", {"flip": 0.5, "pose_rotate": 10, "pose_scale": 0.1, "pose_shift": 0.05}),
    ("pose", {"flip": 0.5, "pose_norm": "person", "pose_rotate": 5}),
])
def test_train_pipeline_draws_only_from_results_rng(tmp_path, modality, cfg):
    """The dataset's training item is the train pipeline fed a generator seeded like the dataset's."""
    ds, anns, root = _video_dataset(tmp_path, modality, train=True, **cfg)
    pipeline = dd.build_train_pipeline({"modality": modality, "frames": 6, "image_size": 32, **cfg})
    for seed in range(3):
        torch.manual_seed(seed)
        ds._rng = None
        expected = ds[1]
        ann = {**anns[1], "filename": root / f"{anns[1]['frame_dir']}.mp4",
               "rng": np.random.default_rng(torch.initial_seed())}
        _equal(pipeline(ann), expected)


def test_pipeline_defaults_are_the_dataset_defaults():
    ds_params = inspect.signature(dd.PysklDataset).parameters
    for name, p in inspect.signature(pl.clip_pipeline).parameters.items():
        assert ds_params[name].default == p.default, name
    assert set(pl.CLIP_KEYS) <= set(dd.PYSKL_KEYS)
    with pytest.raises(dd.DataError, match="pose-only options"):
        dd.build_test_pipeline({"modality": "rgb+pose", "pose_norm": "person"})


class Recorder(dict):
    """A results dict that records which keys are read and written."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read, self.written = set(), set()

    def __getitem__(self, k):
        self.read.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.read.add(k)
        return super().get(k, default)

    def __contains__(self, k):
        self.read.add(k)
        return super().__contains__(k)

    def __setitem__(self, k, v):
        self.written.add(k)
        super().__setitem__(k, v)

    def update(self, *a, **kw):
        for k, v in dict(*a, **kw).items():
            self[k] = v


def _declared(doc: str) -> tuple[set[str], set[str]]:
    text = " ".join(doc.split())
    m = re.search(r"Reads: (.*?)\. Writes: (.*?)[.(]", text)
    assert m, f"no 'Reads: ... Writes: ...' line in {doc!r}"
    names = [{w.strip() for w in g.split(",")} - {"nothing"} for g in m.groups()]
    return names[0], names[1]


def _results(ann, root, train):
    return {**ann, "filename": root / f"{ann['frame_dir']}.mp4", "rng": np.random.default_rng(0) if train else None}


def test_each_transform_uses_only_its_declared_keys(tmp_path):
    transforms = {c for c in vars(pl).values() if isinstance(c, type) and issubclass(c, pl.Transform)}
    assert transforms - {pl.Transform} == set(pl.TRANSFORMS)
    for t in pl.TRANSFORMS:
        reads, writes = _declared(t.__doc__)
        assert reads == set(t.reads) and writes == set(t.writes), t.__name__
    seen = set()
    for case, (modality, cfg) in enumerate([
            ("rgb+pose", {"flip": 1.0, "num_clips": 2}),
            ("pose", {"flip": 1.0, "pose_rotate": 10, "pose_scale": 0.1, "pose_shift": 0.05}),
            ("pose", {"pose_norm": "person", "flip": 1.0})]):
        ds, anns, root = _video_dataset(tmp_path / str(case), modality)
        for train in (True, False):
            opts = {"modality": modality, "frames": 6, "image_size": 32, **cfg}
            pipeline = dd.build_train_pipeline(opts) if train else dd.build_test_pipeline(opts)
            results = _results(anns[0], root, train)
            for t in pipeline.transforms:
                rec = Recorder(results)
                out = t(rec)
                assert rec.read <= set(t.reads), (t, rec.read - set(t.reads))
                assert rec.written <= set(t.writes), (t, rec.written - set(t.writes))
                results = dict(out)
                seen.add(type(t))
            _equal(results, pipeline(_results(anns[0], root, train)))  # step by step = Compose
    assert seen == set(pl.TRANSFORMS)


def test_rgb_only_without_img_shape_probes_the_video(tmp_path):
    ds, anns, root = _video_dataset(tmp_path, "rgb")
    ann = {"frame_dir": anns[0]["frame_dir"], "label": 2}
    rgb_only = tmp_path / "rgb.pkl"
    dd.save_pyskl({"annotations": [ann]}, rgb_only)
    ds = dd.build_dataset(type="pyskl", ann_file=str(rgb_only), modality="rgb", video_root=str(root), frames=4,
                          image_size=32, label_map=["a", "b", "c"])
    pipeline = dd.build_test_pipeline({"modality": "rgb", "frames": 4, "image_size": 32})
    _equal(pipeline({**ann, "filename": root / f"{ann['frame_dir']}.mp4"}), ds[0])
