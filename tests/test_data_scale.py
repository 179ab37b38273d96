"""NTU-scale data layout, scaled down (2,000 clips): the annotations live in a few contiguous
arrays that forked DataLoader workers share, and items are bit-identical to the per-clip dicts
they were packed from. The full-size figures are a benchmark (``deformact bench --data-only
--ntu-scale``, docs/PERFORMANCE.md), not a test."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import deformact.data as dd
from deformact.data.store import ClipStore
from deformact.tools.data_bench import random_annotations
from deformact.tools.data_scale import memory_bytes

N = 2000


@pytest.fixture(scope="module")
def ntu_like(tmp_path_factory):
    anns = random_annotations(N, num_frames=(30, 300), num_persons=(1, 3), img_shape=(1080, 1920), num_classes=60,
                              dtype=np.float16, seed=1)
    anns[5]["keypoint"] = anns[5]["keypoint"].astype(np.float32)  # mixed dtypes are promoted exactly
    anns[7]["total_frames"] = None
    path = tmp_path_factory.mktemp("ntu") / "ntu.pkl"
    dd.save_pyskl({"split": {"train": [a["frame_dir"] for a in anns]}, "annotations": anns}, path)
    return path, anns


def _equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_layout_is_a_few_contiguous_arrays(ntu_like):
    path, anns = ntu_like
    ds = dd.build_dataset(type="pyskl", ann_file=str(path), split="train", modality="pose", frames=16, train=True)
    store = ds.anns
    assert isinstance(store, ClipStore) and len(store) == N
    rows = sum(a["keypoint"].shape[0] * a["keypoint"].shape[1] for a in anns)
    assert store.keypoint.shape == (rows, 17, 2) and store.keypoint.flags.c_contiguous
    assert store.keypoint.dtype == np.float32 and store.keypoint_score.dtype == np.float16
    for i in (0, 5, 7, N - 1):
        ann = store[i]
        assert np.shares_memory(ann["keypoint"], store.keypoint)
        assert np.shares_memory(ann["keypoint_score"], store.keypoint_score)
        np.testing.assert_array_equal(ann["keypoint"], anns[i]["keypoint"])
        assert ann["frame_dir"] == anns[i]["frame_dir"] and ann["total_frames"] == anns[i]["total_frames"]
    # no per-clip Python objects: a handful of arrays, whatever the clip count
    assert all(isinstance(v, np.ndarray) or np.isscalar(v) for v in vars(store).values())
    assert ds.video_names() == [a["frame_dir"] for a in anns]


@pytest.mark.parametrize("train", [True, False])
def test_items_equal_the_per_dict_path(ntu_like, train):
    path, anns = ntu_like
    ds = dd.build_dataset(type="pyskl", ann_file=str(path), split="train", modality="pose", frames=16, train=train,
                          num_clips=2, pose_rotate=10 if train else 0)
    for i in range(0, N, 7):  # the same pipeline on the original dict (people ranked per call)
        packed = ds.pipeline({**ds.anns[i], "rng": np.random.default_rng(i) if train else None})
        plain = ds.pipeline({**anns[i], "rng": np.random.default_rng(i) if train else None})
        _equal(packed, plain)
    if not train:
        _equal(ds[3], dd.build_test_pipeline({"modality": "pose", "frames": 16, "num_clips": 2})(anns[3]))


def test_forked_workers_share_the_arrays(ntu_like):
    path, _ = ntu_like
    ds = dd.build_dataset(type="pyskl", ann_file=str(path), split="train", modality="pose", frames=16, train=True)
    nbytes = ds.anns.keypoint.nbytes + ds.anns.keypoint_score.nbytes
    ctx = torch.multiprocessing.get_context("fork")
    loader = torch.utils.data.DataLoader(ds, batch_size=50, num_workers=1, persistent_workers=True,
                                         multiprocessing_context=ctx)
    it = iter(loader)
    assert sum(len(b["label"]) for b in it) == N  # the worker read every clip
    it = iter(loader)
    pid = it._workers[0].pid
    private = memory_bytes(pid)["private"]
    del it, loader
    if not os.path.exists(f"/proc/{pid}") and private == 0:
        pytest.skip("no /proc")
    # the worker read every clip's joints, yet holds well under a copy of them
    assert private < 0.5 * nbytes, (private, nbytes)
