"""`deformact train / test / demo` on the command line: help, one-line errors, the demo's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from conftest import torch_threads
from test_engine import tiny_config

from deformact.cli import main
from deformact.engine import CONFIG_DIR, config_path, load_config, run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1)))
    with torch_threads(1):
        run(load_config(config), out / "run", echo=lambda _m: None)
    return config, out / "run"


def test_help_lists_the_commands():
    res = subprocess.run([sys.executable, "-m", "deformact", "--help"], env=ENV, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.startswith("    ") and line.split()}
    for name in ("demo", "train", "test"):
        assert name in lines and len(lines[name].split()) > 2, res.stdout  # name + one-line help


def test_train_help_shows_overrides_and_resume(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--set KEY=VALUE" in out and "--resume" in out and "--out" in out


def test_errors_are_one_line_without_traceback_in_a_real_process(tmp_path):
    res = subprocess.run([sys.executable, "-m", "deformact", "train", "-c", str(tmp_path / "missing.yaml"),
                          "--out", str(tmp_path / "o")], env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr == f"deformact train: error: config file not found: {tmp_path / 'missing.yaml'}\n"


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_user_errors(capsys, tmp_path, tiny_run):
    config, out = tiny_run
    err = _error(capsys, ["train", "-c", str(config), "--set", "train.lr=-1", "--out", str(tmp_path / "a")])
    assert err.startswith("deformact train: error: train.lr must be a number > 0")
    err = _error(capsys, ["train", "-c", str(config), "--set", "train.learning_rate=1", "--out", str(tmp_path)])
    assert "unknown key train.learning_rate" in err
    err = _error(capsys, ["train", "-c", str(config), "--set", "model.dimension=8", "--out", str(tmp_path / "b")])
    assert err.startswith("deformact train: error: model:") and "dimension" in err
    err = _error(capsys, ["train", "-c", str(config), "--out", str(out)])
    assert "already holds a run" in err and "--resume" in err
    missing = tmp_path / "none.pkl"
    err = _error(capsys, ["train", "-c", str(config), "--set", f"data={{type: pyskl, ann_file: {missing}}}",
                          "--out", str(tmp_path / "c")])
    assert err.startswith("deformact train: error:") and str(missing) in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes((out / "last.pt").read_bytes()[:1000])
    err = _error(capsys, ["test", "-c", str(config), "--ckpt", str(bad), "--out", str(tmp_path / "t")])
    assert err.startswith(f"deformact test: error: {bad}: not a readable checkpoint")
    err = _error(capsys, ["test", "-c", str(config), "--ckpt", str(out / "best.pt"), "--clips", "0",
                          "--out", str(tmp_path / "t")])
    assert "--clips must be >= 1" in err
    err = _error(capsys, ["test", "-c", str(config), "--ckpt", str(out / "best.pt"), "--set", "data.num_classes=8",
                          "--out", str(tmp_path / "t")])
    assert "predicts 4 classes but the test split has 8" in err


def test_test_command_writes_metrics_and_confusion(capsys, tmp_path, tiny_run):
    config, out = tiny_run
    assert main(["test", "-c", str(config), "--ckpt", str(out / "best.pt"), "--clips", "2",
                 "--out", str(tmp_path)]) == 0
    assert "test: top-1" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_clips"] == 2 and {"top1", "top5", "mean_class_acc", "loss"} <= set(metrics)
    assert (tmp_path / "confusion_matrix.png").exists()


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    """The configs are package data (deformact/configs/, the repo's configs/ links there): the demo
    and ``-c NAME`` work wherever deformact runs from, and a path that exists is read as given."""
    repo_file = load_config(CONFIG_DIR / "synthetic.yaml")
    monkeypatch.chdir(tmp_path)
    assert config_path("synthetic") == config_path("synthetic.yaml") == CONFIG_DIR / "synthetic.yaml"
    assert load_config("synthetic") == repo_file
    (tmp_path / "synthetic.yaml").write_text("model: {preset: demo}\ndata: {type: synthetic}\nepochs: 2\n")
    assert load_config("synthetic.yaml")["epochs"] == 2  # the local file wins
    res = subprocess.run([sys.executable, "-m", "deformact", "train", "-c", "ntu60_xsub", "--set", "train.lr=-1",
                          "--out", str(tmp_path / "o")], env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "train.lr must be a number > 0" in res.stderr, res.stderr


def test_demo_runs_end_to_end_and_says_where_everything_went(capsys, tmp_path):
    sets = ["epochs=1", "data.num_train=32", "data.num_test=16", "data.frames=4", "data.image_size=32",
            "data.num_classes=4", "model.dim=16", "model.depth=1", "model.heads=2", "model.backbone_channels=[8,8,16]"]
    argv = ["demo", "--out", str(tmp_path)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "demo finished in" in out and "test top-1" in out
    for name in ("metrics.json", "best.pt", "confusion_matrix.png", "curves.png", "log.jsonl"):
        assert (tmp_path / name).exists() and str(tmp_path / name) in out
    assert main(argv) == 0  # running the demo again simply replaces its outputs
