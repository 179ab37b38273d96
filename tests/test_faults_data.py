"""Bad data ends in one clear DataError or a counted skip, never in a traceback, silent garbage or
a huge allocation (docs/FAILURES.md, "Data")."""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import deformact.data as dd
from deformact.io.pyskl import load_pyskl

try:
    from numpy._core import multiarray, numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray, numeric

GB4 = (100_000, 10_000)  # 1e9 float32 = 4 GB


class _Reduce:
    """Pickles as ``func(*args)`` (then ``__setstate__(state)`` when given): hand-made hostile data."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def _reconstructed(state):
    return _Reduce(multiarray._reconstruct, (np.ndarray, (0,), b"b"), state)


HOSTILE = {
    "ndarray constructor": (_Reduce(np.ndarray, (GB4, np.dtype("f4"))), "numpy.ndarray"),
    "_reconstruct with a big shape": (_Reduce(multiarray._reconstruct, (np.ndarray, GB4, b"b")), "non-empty shape"),
    "state declaring 4 GB": (_reconstructed((1, GB4, np.dtype("f4"), False, b"\0" * 30_000)),
                             r"declares 4\.0 GB .* but holds 30\.0 KB"),
    "state with a huge subarray dtype": (_reconstructed((1, (4,), np.dtype(("f8", (50_000, 2_500))), False, b"12")),
                                         "declares 4.0 GB"),
    "object array declaring 1e9 items": (_reconstructed((1, (10**9,), np.dtype("O"), False, [1, 2])),
                                         "declares 1,000,000,000 items"),
    "state that is not bytes": (_reconstructed((1, GB4, np.dtype("f4"), False, 5)), "holds int"),
    "bytes(4e9)": (_Reduce(bytes, (4 * 10**9,)), r"bytes\(\) only from data"),
    "bytearray(4e9)": (_Reduce(bytearray, (4 * 10**9,)), r"bytearray\(\) only from data"),
    "scalar of a 4 GB dtype": (_Reduce(multiarray.scalar, (np.dtype(("f8", (50_000, 2_500))), b"x")), "numpy scalar"),
    "_frombuffer with a big shape": (_Reduce(numeric._frombuffer, (b"abcd", np.dtype("f4"), GB4, "C")),
                                     "declares 4.0 GB"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_small_pickle_cannot_allocate_gigabytes(tmp_path, name):
    obj, message = HOSTILE[name]
    path = tmp_path / "hostile.pkl"
    for protocol in (2, 4):
        path.write_bytes(pickle.dumps({"annotations": [{"keypoint": obj}]}, protocol=protocol))
        assert path.stat().st_size < 40_000
        tracemalloc.start()
        try:
            with pytest.raises(dd.DataError, match=message) as info:
                load_pyskl(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 100e6, f"{name}: {peak / 1e6:.0f} MB allocated"
        msg = str(info.value)
        assert msg.startswith(str(path)) and "\n" not in msg


def test_declared_pickle_lengths_do_not_grow_memory(tmp_path):
    """A BINBYTES8 claiming 4 GB with 100 bytes behind it: one line, the process stays small."""
    path = tmp_path / "frame.pkl"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 4 * 10**9) + b"x" * 100 + b".")
    # the peak of this process's own memory (VmHWM): ru_maxrss would also count the parent's
    # memory at the fork (Linux keeps it across exec), i.e. the whole pytest run's
    code = ("import re\nfrom deformact.io.pyskl import load_pyskl\nfrom deformact.errors import DataError\n"
            f"try:\n    load_pyskl({str(path)!r})\nexcept DataError as e:\n    print(e)\n"
            "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    message, maxrss_kb = out.stdout.strip().splitlines()
    assert "frame.pkl" in message and "truncated" in message
    assert int(maxrss_kb) < 1_000_000  # far from the 4 GB declared (torch and numpy themselves take ~0.3 GB)


def test_real_arrays_still_load_exactly(tmp_path):
    arrays = {"f16": np.arange(12, dtype=np.float16).reshape(3, 4), "fortran": np.asfortranarray(np.ones((3, 2))),
              "empty": np.zeros((0, 5), np.float32), "obj": np.array([np.arange(3), "x", None], dtype=object),
              "scalar": np.float64(1.5), "rec": np.zeros(2, dtype=[("a", "f4"), ("b", "i8", (2,))])}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(arrays, protocol=protocol))
        back = load_pyskl(path)
        for k, v in arrays.items():
            assert type(back[k]) is type(v), (protocol, k)
            if k == "obj":
                assert (back[k][0] == v[0]).all() and back[k][1:].tolist() == ["x", None]
            else:
                assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
        assert back["fortran"].flags.f_contiguous


def test_unreadable_penn_labels_name_the_file(tmp_path, capsys):
    import scipy.io

    from deformact.cli import main as cli_main

    labels = tmp_path / "labels"
    labels.mkdir()
    t = 5
    scipy.io.savemat(labels / "0001.mat", {"x": np.ones((t, 13)), "y": np.ones((t, 13)),
                                           "visibility": np.ones((t, 13)), "action": "bowl",
                                           "train": np.array([[1]]), "dimensions": np.array([[48, 64, t]])})
    (labels / "0002.mat").write_bytes(b"")
    (labels / "0003.mat").write_text("these are not the labels you are looking for\n")
    out = tmp_path / "p.pkl"
    assert cli_main(["prepare", "penn-action", str(tmp_path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0002.mat: not a Penn Action label file" in err[0] and "1 more" in err[0]
    assert not out.exists()
    with pytest.warns(UserWarning, match="0003.mat"):
        assert cli_main(["prepare", "penn-action", str(tmp_path), "-o", str(out), "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 unreadable label file(s)" in printed and "0002.mat" in printed
    assert [a["frame_dir"] for a in load_pyskl(out)["annotations"]] == ["0001"]


def test_unwritable_prepare_output_is_one_line(tmp_path, capsys):
    from deformact.cli import main as cli_main

    (tmp_path / "labels").mkdir()
    (tmp_path / "afile").write_text("x")
    for out, message in [(tmp_path / "afile" / "p.pkl", "afile is a file"), (tmp_path, "it is a folder")]:
        assert cli_main(["prepare", "penn-action", str(tmp_path), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    with pytest.raises(dd.DataError, match="cannot write .*: it is a folder"):
        dd.save_pyskl({"a": 1}, tmp_path)
    full = tmp_path / "full.pkl"
    import unittest.mock

    with unittest.mock.patch("pickle.dump", side_effect=OSError(28, "No space left on device")):
        with pytest.raises(dd.DataError, match="cannot write .*full.pkl: No space left on device"):
            dd.save_pyskl({"a": 1}, full)
    assert not full.exists() and not list(tmp_path.glob(".full.pkl*"))


def test_labels_must_be_contiguous_or_declared(tmp_path):
    from deformact.tools.data_bench import random_annotations

    anns = random_annotations(4, 8, num_classes=3)
    anns[2]["label"] = 99
    path = dd.save_pyskl({"annotations": anns}, tmp_path / "a.pkl")
    with pytest.raises(dd.DataError, match=r"annotation 2 \(clip00002\) has label 99, but label 2 .* never occurs"):
        dd.build_dataset(type="pyskl", ann_file=str(path), modality="pose")
    ds = dd.build_dataset(type="pyskl", ann_file=str(path), modality="pose", num_classes=100)  # declared: fine
    assert ds.num_classes == 100
    with pytest.raises(dd.DataError, match="label 99 out of range"):
        dd.build_dataset(type="pyskl", ann_file=str(path), modality="pose", label_map=["a", "b", "c"])


@pytest.mark.parametrize("what", ["nan", "zero score", "no person"])
def test_clips_with_nobody(tmp_path, what):
    from deformact.tools.data_bench import random_annotations

    anns = random_annotations(4, 8, num_classes=2)
    for i in (1, 3):
        if what == "nan":
            anns[i]["keypoint"][:] = np.nan
        elif what == "zero score":
            anns[i]["keypoint_score"][:] = 0
        else:
            anns[i]["keypoint"], anns[i]["keypoint_score"] = anns[i]["keypoint"][:0], anns[i]["keypoint_score"][:0]
    path = dd.save_pyskl({"split": {"all": [a["frame_dir"] for a in anns]}, "annotations": anns}, tmp_path / "a.pkl")
    kw = {"type": "pyskl", "ann_file": str(path), "modality": "pose", "split": "all"}
    with pytest.raises(dd.DataError, match=r"annotation 1 \(clip00001\) shows nobody.*2 such clip"):
        dd.build_dataset(**kw)
    for train in (True, False):  # left out and counted, training or not
        with pytest.warns(UserWarning, match="left out 2 clip"):
            ds = dd.build_dataset(skip_bad=True, train=train, **kw)
        assert len(ds) == 2 and ds.left_out == ["clip00001", "clip00003"] and ds.video_names() == ["clip00000",
                                                                                                     "clip00002"]
    for a in anns:  # nobody anywhere: an error even with skip_bad
        a["keypoint_score"][:] = 0
    path = dd.save_pyskl({"split": {"all": [a["frame_dir"] for a in anns]}, "annotations": anns}, tmp_path / "a.pkl")
    with pytest.raises(dd.DataError, match="split 'all': no clip shows anybody"):
        dd.build_dataset(skip_bad=True, **kw)


def test_evaluation_drops_and_counts_placeholders(tmp_path):
    """What evaluation does with skip_bad off the training split: the bad clip is neither scored
    nor replaced, the other clips keep their dataset indices."""
    import torch

    from deformact.data.checks import drop_placeholders

    good = {"pose": torch.ones(2, 1), "label": 3}
    bad = {"pose": torch.zeros(2, 1), "label": dd.SKIPPED_LABEL}
    order = list(range(10, 16))
    seen, dropped, pos = [], 0, 0
    for items in ([good, bad, good], [bad, bad], [good]):
        batch = torch.utils.data.default_collate(items)
        batch, n = drop_placeholders(batch, order, pos)
        dropped += n
        if not batch:
            continue
        b = len(batch["label"])
        assert (batch["label"] == 3).all() and (batch["pose"] == 1).all()
        seen += order[pos:pos + b]
        pos += b
    assert seen == [10, 12, 15] and dropped == 3
