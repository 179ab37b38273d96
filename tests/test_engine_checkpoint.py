"""Checkpoints: atomic writes, safe and clear loading, load_checkpoint, RNG round trips."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from conftest import torch_threads
from test_engine import tiny_config

from deformact.engine import CheckpointError, load_checkpoint, read_checkpoint, run, save_checkpoint
from deformact.engine.checkpoint import get_rng_state, remove_stale_temps, set_rng_state

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch tiny run with EMA: its folder and metrics."""
    out = tmp_path_factory.mktemp("ckpt_run")
    with torch_threads(1):
        metrics = run(tiny_config(epochs=1, train={"ema": 0.5}), out, echo=lambda _m: None)
    return out, metrics


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}, "config": {}, "class_names": ["a"], "epoch": int(value)}


def _killed(*_args, **_kwargs):  # the process dies after writing the temp file, before the rename
    raise KeyboardInterrupt("SIGKILL stand-in")


def _torn_save(real_save):
    def torn_save(obj, f, *args, **kwargs):  # half the bytes reach the disk, then the process dies
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt("SIGKILL stand-in")

    return torn_save


@pytest.mark.parametrize("when", ["between temp write and rename", "during the temp write"])
def test_kill_while_saving_keeps_old_file(tmp_path, monkeypatch, when):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    if when == "during the temp write":
        monkeypatch.setattr(torch, "save", _torn_save(torch.save))
    else:
        monkeypatch.setattr(os, "replace", _killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((64, 64), 1.0))
    save_checkpoint(_state(3.0), path)
    assert read_checkpoint(path)["epoch"] == 3


def test_stale_temps_are_removed(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    # a temp file left by a real SIGKILL (no cleanup ran) is removed before the next run writes
    (tmp_path / ".last.pt.tmp12345").write_bytes(b"partial")
    remove_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_corrupt_truncated_and_foreign_files_give_clear_errors(tmp_path, trained):
    out, _ = trained
    good = (out / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 3])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(CheckpointError, match="not a readable checkpoint"):
            load_checkpoint(path)
    foreign = tmp_path / "state_dict.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a deformact checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "deformact-checkpoint", "model": _Exploit(), "config": {}, "class_names": []}, evil)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(evil)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(CheckpointError):
        read_checkpoint(plain)
    assert not (tmp_path / "pwned_by_checkpoint").exists()


def test_load_checkpoint_returns_eval_model_with_names_config_and_ema(trained):
    out, _ = trained
    ckpt = torch.load(out / "last.pt", weights_only=True)  # plain data all the way down
    assert ckpt["epoch"] == 1 and ckpt["step"] > 0 and ckpt["ema"] is not None
    assert {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(ckpt)
    model = load_checkpoint(out / "last.pt")
    assert not model.training
    assert model.class_names == ckpt["class_names"] and len(model.class_names) == 4
    assert model.run_config["model"]["num_classes"] == 4 and model.run_config["seed"] == 0
    # the EMA weights (decay 0.5 here, so they differ from the raw weights) are the ones loaded
    for name, value in model.state_dict().items():
        assert torch.equal(value, ckpt["ema"][name])
    assert any(not torch.equal(ckpt["ema"][k], ckpt["model"][k]) for k in ckpt["model"])
    best = load_checkpoint(out / "best.pt")
    assert best.class_names == model.class_names


def test_weights_that_do_not_fit_the_config_are_a_clear_error(tmp_path, trained):
    out, _ = trained
    ckpt = torch.load(out / "best.pt", weights_only=True)
    ckpt["config"]["model"]["dim"] = 32
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="weights do not fit this model config"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_state_round_trip():
    gen = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = get_rng_state(gen)
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.rand(2, generator=gen).tolist())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    gen.manual_seed(9)
    set_rng_state(state, gen)
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), torch.rand(2, generator=gen).tolist())
    assert first == again
