"""torchrun on CPU (gloo): 2-process DDP training, and evaluation (metrics and the per-video
``scores.npz``) that equals one process exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from test_engine import tiny_config

from deformact.engine.checkpoint import read_checkpoint
from deformact.engine.guard import LOCK_NAME
from deformact.io.scores import load_scores

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "deformact", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)


def test_two_process_training_and_evaluation_equal_single_process(tmp_path):
    # 21 test videos: the two shards differ in size, and batches of 4 split them differently
    cfg = tiny_config(epochs=1, data={"num_test": 21, "num_clips": 2}, test={"batch_size": 4})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    train = torchrun(2, "train", "-c", str(config), "--out", str(tmp_path / "ddp"))
    assert train.returncode == 0, train.stderr
    assert train.stdout.count("test: top-1") == 1  # only rank 0 reports and writes
    ckpt = read_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["epoch"] == 1
    # DDP: 48 training videos, 2 ranks x batch 8 -> 3 steps per epoch
    assert ckpt["step"] == 3
    trained = json.loads((tmp_path / "ddp" / "metrics.json").read_text())

    # the run's final test was sharded over the 2 ranks; one process must find the same numbers
    one = subprocess.run([sys.executable, "-m", "deformact", "test", "-c", str(config), "--ckpt",
                          str(tmp_path / "ddp" / "last.pt"), "--out", str(tmp_path / "one")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert single["num_samples"] == 21 and single["num_clips"] == 2
    keys = ("top1", "top5", "mean_class_acc", "num_samples", "num_clips")
    assert {k: trained[k] for k in keys} == {k: single[k] for k in keys}  # counts: exactly
    # the loss is a mean of per-video log-probabilities; a video's logits come out of batches of
    # other videos on each side (the shards split them differently), and batched matmuls round
    # differently by batch composition, so it agrees to float rounding, not bit for bit
    assert trained["loss"] == pytest.approx(single["loss"], rel=1e-6, abs=1e-7)
    # scores.npz: gathered over the ranks in dataset order, written once by rank 0; the same file
    # as one process (scores to float rounding, for the reason above)
    ddp, one = load_scores(tmp_path / "ddp"), load_scores(tmp_path / "one")
    assert ddp.scores.shape == (21, 4) and list(ddp.frame_dir) == [f"synthetic_test_{i:05d}" for i in range(21)]
    assert (ddp.labels.tolist(), list(ddp.frame_dir), ddp.class_names, ddp.split, ddp.average) == (
        one.labels.tolist(), list(one.frame_dir), one.class_names, one.split, one.average)
    np.testing.assert_allclose(ddp.scores, one.scores, rtol=1e-5, atol=1e-6)
    assert ddp.scores.argmax(1).tolist() == one.scores.argmax(1).tolist()
    assert float(np.mean(ddp.scores.argmax(1) == ddp.labels)) == trained["top1"]
    assert not (tmp_path / "ddp" / LOCK_NAME).exists()  # rank 0 held the run folder, and let it go


def test_an_error_every_rank_finds_is_printed_once(tmp_path):
    """A config error under torchrun: found by both processes before any work, printed by rank 0."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(train={"lrr": 1.0})))
    proc = torchrun(2, "train", "-c", str(cfg), "--out", str(tmp_path / "run"))
    assert proc.returncode != 0
    assert proc.stderr.count("deformact train: error") == 1 and "train.lrr" in proc.stderr


def test_other_errors_name_their_rank(tmp_path, monkeypatch, capsys):
    from deformact import cli

    monkeypatch.setenv("RANK", "1")
    assert cli.main(["prepare", "penn-action", str(tmp_path / "missing"), "-o", str(tmp_path / "p.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deformact prepare: error (rank 1): ") and err.count("\n") == 1
    assert cli.main(["train", "-c", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == ""  # a config error: rank 0 says it
