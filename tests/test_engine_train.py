"""Training runs: outputs, exact resume after SIGKILL, divergence stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_engine import tiny_config, tiny_pyskl

from deformact.engine import (
    ConfigError,
    Trainer,
    TrainingError,
    build_dataset,
    dist,
    evaluate,
    load_checkpoint,
    load_config,
    run,
    validate_config,
)
from deformact.engine.checkpoint import read_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deformact", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_run_writes_every_output_and_metrics_match_the_checkpoint(tmp_path):
    cfg = tiny_config(epochs=2, train={"eval_every": 1}, data={"num_clips": 2})
    metrics = run(cfg, tmp_path, echo=lambda _m: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert {"top1", "top5", "mean_class_acc", "loss"} <= set(saved) and saved["num_clips"] == 2
    assert all(0.0 <= saved[k] <= 1.0 for k in ("top1", "top5", "mean_class_acc")) and saved["loss"] > 0
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert {"train_loss", "train_top1", "test_top1", "test_top5", "test_loss", "lr", "step"} <= set(log[-1])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    for png in ("curves.png", "confusion_matrix.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert read_checkpoint(tmp_path / "best.pt")["metrics"]["top1"] == max(r["test_top1"] for r in log)
    assert load_config(tmp_path / "config.yaml") == validate_config(cfg)
    # the final metrics are those of the last weights, 2 clips per video
    model = load_checkpoint(tmp_path / "last.pt")
    again = evaluate(model, build_dataset(cfg["data"], "test", train=False, num_clips=2), batch_size=5, num_clips=2)
    assert {k: again[k] for k in ("top1", "top5", "mean_class_acc")} == {
        k: saved[k] for k in ("top1", "top5", "mean_class_acc")}
    assert again["loss"] == pytest.approx(saved["loss"], rel=1e-6)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(cfg, tmp_path, echo=lambda _m: None)


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read()
        assert time.monotonic() < end, "timed out waiting for the run"
        time.sleep(0.02)


def _epochs_logged(out: Path) -> int:
    log = out / "log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _strip_times(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (out / "log.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_gives_exactly_the_uninterrupted_metrics(tmp_path):
    """Augmented pose data, dropout, drop-path, shuffling: killed twice, resumed twice, same numbers."""
    ann = tiny_pyskl(tmp_path / "tiny.pkl")
    cfg = tiny_config(epochs=5, data={"type": "pyskl", "ann_file": str(ann), "train_split": "train",
                                      "test_split": "test", "modality": "pose", "frames": 8, "num_persons": 1,
                                      "num_clips": 2, "flip": 0.5, "pose_rotate": 10.0})
    for key in ("num_classes", "num_train", "num_test", "image_size"):
        cfg["data"].pop(key)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = cli("train", "-c", str(config), "--out", str(full))

    proc = cli("train", "-c", str(config), "--out", str(killed))
    _wait_for(lambda: (killed / "config.yaml").exists(), proc)  # kill 1: inside epoch 1, no checkpoint yet
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "last.pt").exists()
    proc = cli("train", "-c", str(config), "--out", str(killed), "--resume")
    _wait_for(lambda: _epochs_logged(killed) >= 2, proc)  # kill 2: somewhere after epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()
    stopped_at = read_checkpoint(killed / "last.pt")["epoch"]
    assert 1 <= stopped_at < 5  # 1: killed between writing log.jsonl and last.pt (also fine)
    proc = cli("train", "-c", str(config), "--out", str(killed), "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"resumed from {killed / 'last.pt'} at epoch {stopped_at}" in out

    out_ref, err_ref = ref.communicate(timeout=300)
    assert ref.returncode == 0, err_ref
    assert (killed / "metrics.json").read_text() == (full / "metrics.json").read_text()
    assert _strip_times(killed) == _strip_times(full)
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(killed / "last.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_state(tmp_path):
    cfg = tiny_config(epochs=1)
    run(cfg, tmp_path, echo=lambda _m: None)
    good = read_checkpoint(tmp_path / "last.pt")
    cfg = tiny_config(epochs=3)
    ctx = dist.setup("cpu")
    trainer = Trainer(cfg, tmp_path, ctx, echo=lambda _m: None)
    trainer.resume(tmp_path / "last.pt")
    with torch.no_grad():  # what a blown-up update leaves behind
        trainer.model.head[1].weight.fill_(float("inf"))
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2, step \d+ .*last\.pt keeps epoch 1"):
        trainer.fit(resume=False)
    after = read_checkpoint(tmp_path / "last.pt")
    assert after["epoch"] == 1 and all(torch.equal(after["model"][k], good["model"][k]) for k in good["model"])
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 1
    assert (tmp_path / "curves.png").exists()


def test_cli_divergence_is_one_line_without_traceback(tmp_path, capsys):
    from deformact.cli import main

    cfg = tiny_config(epochs=2, train={"optimizer": "sgd", "lr": 1e10, "momentum": 0.0, "weight_decay": 0.0})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deformact train: error: loss became nan at epoch 1") and err.count("\n") == 1
    assert "no epoch had finished, so there is no checkpoint" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bf16_autocast_on_cpu_and_fp16_needs_a_gpu(tmp_path):
    metrics = run(tiny_config(epochs=1, train={"amp": "bf16", "optimizer": "sgd", "lr": 0.05}), tmp_path / "bf16",
                  echo=lambda _m: None)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("top1", "top5")) and metrics["loss"] == metrics["loss"]
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a GPU"):
            run(tiny_config(epochs=1, train={"amp": "fp16"}), tmp_path / "fp16", echo=lambda _m: None)


def test_amp_auto_uses_bf16_on_cpu_only_with_native_bf16(monkeypatch, tmp_path):
    from deformact.engine import runtime as trainer  # device and AMP resolution live in engine.runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: False)
    assert trainer.resolve_amp(True, cpu) is None and trainer.resolve_amp("auto", cpu) is None
    said: list[str] = []  # ... and a run says so once
    run(tiny_config(epochs=1, train={"amp": True, "device": "cpu"}), tmp_path / "auto", echo=said.append)
    assert sum("no native bf16" in m for m in said) == 1
    assert trainer.resolve_amp("bf16", cpu) is torch.bfloat16  # asked for by name: honoured
    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: True)
    assert trainer.resolve_amp(True, cpu) is torch.bfloat16
    assert trainer.resolve_amp(False, cpu) is None
    # the probe answers from the running CPU, without raising
    monkeypatch.undo()
    assert isinstance(trainer.cpu_has_fast_bf16(), bool)


def test_training_sees_a_fresh_generated_set_each_round(tmp_path):
    """data.regenerate_every=1: epoch 1 trains on round 0, the plain run's set (same loss), and
    epoch 2 on a new draw (another loss); the test split stays the same set."""
    logs = {}
    for k in (0, 1):
        run(tiny_config(epochs=2, train={"eval_every": 1}, data={"regenerate_every": k}), tmp_path / str(k),
            echo=lambda _m: None)
        logs[k] = [json.loads(line) for line in (tmp_path / str(k) / "log.jsonl").read_text().splitlines()]
    assert logs[0][0]["train_loss"] == logs[1][0]["train_loss"]
    assert logs[0][0]["test_loss"] == logs[1][0]["test_loss"]
    assert logs[0][1]["train_loss"] != logs[1][1]["train_loss"]
