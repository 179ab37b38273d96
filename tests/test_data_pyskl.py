"""pyskl pickles: safe round trip, malicious pickles refused without running; label maps; layouts."""

import collections
import os
import pickle

import numpy as np
import pytest

import deformact.data as dd
from deformact.io.pyskl import safe_loads


def _sample() -> dict:
    rng = np.random.default_rng(0)
    return {
        "split": {"train": ["a", "b"], "val": ["c"]},
        "annotations": [
            {"frame_dir": d, "label": i, "total_frames": 5, "img_shape": (480, 640), "original_shape": (480, 640),
             "keypoint": rng.normal(size=(2, 5, 17, 2)).astype(np.float32),
             "keypoint_score": rng.uniform(size=(2, 5, 17)).astype(np.float16)}
            for i, d in enumerate("abc")
        ],
        "misc": [None, True, 1.5, np.int64(3), np.float32(2.5), np.dtype("f4"), {1, 2}, b"raw", (1, "x"),
                 np.array(["s", 1], dtype=object), np.zeros(3, dtype=[("x", "f4"), ("y", "i2")]),
                 np.asfortranarray(np.arange(6.0).reshape(2, 3)), collections.OrderedDict(k=1)],
    }


def _assert_same(a, b):
    assert type(a) is type(b) or (isinstance(a, np.generic) and isinstance(b, np.generic))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.f_contiguous == b.flags.f_contiguous
        assert (a == b).all()
    else:
        assert a == b


def test_save_load_round_trip(tmp_path):
    obj = _sample()
    path = dd.save_pyskl(obj, tmp_path / "sub" / "x.pkl")
    _assert_same(obj, dd.load_pyskl(path))
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves nothing behind


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reads_every_protocol(protocol):
    # pyskl/mmcv files use protocol 2 (numpy arrays via _reconstruct and _codecs.encode)
    obj = _sample()
    _assert_same(obj, safe_loads(pickle.dumps(obj, protocol=protocol)))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_malicious_pickle_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"annotations": [_Evil(marker)]}, protocol=protocol))
    with pytest.raises(dd.DataError, match=r"bad\.pkl.*(posix|os|nt)\.system"):
        dd.load_pyskl(bad)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",                       # builtins.eval
    b"cnumpy\nload\n(S'x.npy'\ntR.",                          # a numpy function that is not array building
    b"c_codecs\nencode\n(S'x'\nS'rot13'\ntR.",               # _codecs.encode only with latin1
    b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x05popen\x93.",  # STACK_GLOBAL os.popen
])
def test_other_unsafe_globals_refused(tmp_path, payload):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(payload)
    with pytest.raises(dd.DataError, match="bad.pkl"):
        dd.load_pyskl(bad)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(dd.DataError, match="missing.pkl.*not found"):
        dd.load_pyskl(tmp_path / "missing.pkl")
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(pickle.dumps(_sample())[:100])
    with pytest.raises(dd.DataError, match="trunc.pkl"):
        dd.load_pyskl(trunc)


def test_save_refuses_non_plain_objects(tmp_path):
    with pytest.raises(dd.DataError, match="not plain data"):
        dd.save_pyskl({"annotations": [object()]}, tmp_path / "x.pkl")
    assert not (tmp_path / "x.pkl").exists()


def test_label_map(tmp_path, shared_dir):
    names = dd.load_label_map(shared_dir / "label_maps" / "ntu60.txt")
    assert len(names) == 60 and names[0].lower().startswith("drink")
    assert len(dd.load_label_map(shared_dir / "label_maps" / "ntu120.txt")) == 120
    assert len(dd.load_label_map(shared_dir / "label_maps" / "gym99.txt")) == 99
    (tmp_path / "m.txt").write_text("a\n\nb\n")
    with pytest.raises(dd.DataError, match="blank line 2"):
        dd.load_label_map(tmp_path / "m.txt")


@pytest.mark.parametrize("name,v", [("coco17", 17), ("ntu25", 25), ("penn13", 13)])
def test_skeleton_layouts(name, v):
    sk = dd.SKELETONS[name]
    assert sk.num_joints == v and dd.get_skeleton(None, v) is sk
    flip = sk.flip_index
    assert (flip[flip] == np.arange(v)).all()  # an involution
    for a, b in sk.flip_pairs:  # pairs really are left/right twins
        assert sk.joints[a].startswith("left") and sk.joints[b] == sk.joints[a].replace("left", "right")
    unpaired = set(range(v)) - set(np.flatnonzero(flip != np.arange(v)))
    assert all("left" not in sk.joints[j] and "right" not in sk.joints[j] for j in unpaired)
    edges = np.array(sk.edges)
    assert edges.min() >= 0 and edges.max() < v
    assert len({j for e in sk.edges for j in e}) == v  # every joint is drawn
    with pytest.raises(dd.DataError, match=f"{name} has {v} joints, data has {v + 1}"):
        dd.get_skeleton(name, v + 1)
    with pytest.raises(dd.DataError, match="cannot infer"):
        dd.get_skeleton(None, 18)
