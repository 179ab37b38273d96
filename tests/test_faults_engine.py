"""Faults around the engine (docs/FAILURES.md): a locked run folder, Ctrl-C / SIGTERM, a full disk,
bad output paths, checkpoints that do not fit, epochs=0, and the saved per-video scores."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import torch_threads
from test_engine import tiny_config, tiny_pyskl
from test_engine_train import _wait_for, cli

from deformact.engine import (
    CheckpointError,
    ConfigError,
    RunInterrupted,
    TrainingError,
    build_dataset,
    read_checkpoint,
    run,
    validate_config,
)
from deformact.engine.api import test as run_test  # not test_*: pytest would collect it
from deformact.engine.builders import video_names
from deformact.engine.guard import LOCK_NAME
from deformact.errors import DeformactError
from deformact.io.scores import load_scores

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

QUIET = {"echo": lambda _m: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch tiny run: (folder, config, final metrics)."""
    out = tmp_path_factory.mktemp("faults_run")
    cfg = tiny_config(epochs=1)
    with torch_threads(1):
        metrics = run(cfg, out, **QUIET)
    return out, cfg, metrics


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert isinstance(e, DeformactError) and "\n" not in text and "Traceback" not in text, text
    return text


def _config_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**sections)))
    return path


# --- the run folder is locked while a run writes it ---------------------------------------------------


def test_second_run_into_a_locked_folder_refuses_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    first = cli("train", "-c", str(_config_file(tmp_path, epochs=200)), "--out", str(out))
    try:
        _wait_for(lambda: (out / "config.yaml").exists(), first)
        holder = json.loads((out / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"] and holder["command"] == "train"
        for attempt in (lambda: run(tiny_config(epochs=1), out, overwrite=True, **QUIET),
                        lambda: run_test(tiny_config(), out / "missing.pt", out, **QUIET)):
            with pytest.raises(TrainingError) as e:
                attempt()
            assert f"is in use by another run (pid {first.pid} on " in _one_line(e.value)
    finally:
        first.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file stays behind
        first.wait()
    assert (out / LOCK_NAME).exists()
    said: list[str] = []
    metrics = run(tiny_config(epochs=1), out, overwrite=True, echo=said.append)
    assert any(m.startswith(f"note: taking over {out / LOCK_NAME}") and f"pid {first.pid}" in m for m in said)
    assert metrics["num_samples"] == 20 and not (out / LOCK_NAME).exists()


# --- Ctrl-C and SIGTERM -----------------------------------------------------------------------------------


def test_ctrl_c_stops_with_one_line_keeps_last_pt_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    config = _config_file(tmp_path, epochs=8)
    proc = cli("train", "-c", str(config), "--out", str(out))
    _wait_for(lambda: (out / "last.pt").exists(), proc)  # epoch 1 is saved
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("deformact train: error: stopped by SIGINT ")
    saved = read_checkpoint(out / "last.pt")["epoch"]
    if saved < 8:
        assert f"{out / 'last.pt'} keeps epoch {saved}, the last finished one; continue with --resume" in err
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".*.tmp*"))
    said: list[str] = []
    metrics = run(load_yaml(config), out, resume=True, echo=said.append)
    assert any(m.startswith(f"resumed from {out / 'last.pt'} at epoch {saved},") for m in said)
    assert read_checkpoint(out / "last.pt")["epoch"] == 8 and metrics["num_samples"] == 20


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_sigterm_in_process_is_one_interrupted_line_and_frees_the_folder(tmp_path):
    def echo(msg: str) -> None:
        if msg.startswith("epoch 1/"):  # epoch 1 is saved: stop as `kill` would
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted) as e:
        run(tiny_config(epochs=3), tmp_path, echo=echo)
    assert e.value.exit_code == 128 + signal.SIGTERM
    text = _one_line(e.value)
    assert text.startswith("stopped by SIGTERM in epoch 2/3;") and "keeps epoch 1" in text
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not (tmp_path / LOCK_NAME).exists() and signal.getsignal(signal.SIGTERM) is before


# --- a full disk --------------------------------------------------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_while_saving_a_checkpoint_keeps_the_earlier_one(tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            _enospc()
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(CheckpointError) as e:
        run(tiny_config(epochs=3), tmp_path, **QUIET)
    text = _one_line(e.value)
    assert text.startswith(f"cannot write checkpoint {tmp_path}") and "No space left on device (ENOSPC)" in text
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp*")) and not (tmp_path / LOCK_NAME).exists()
    assert (tmp_path / "curves.png").exists()  # the epochs that finished are still plotted


@pytest.mark.parametrize("name", ["metrics.json", "scores.npz", "confusion_matrix.png"])
def test_disk_full_while_writing_test_outputs_is_one_line_and_keeps_old_files(tmp_path, monkeypatch, trained,
                                                                               name):
    run_dir, cfg, _ = trained
    out = tmp_path / "test"
    run_test(cfg, run_dir / "last.pt", out, **QUIET)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            _enospc()
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(TrainingError) as e:
        run_test(cfg, run_dir / "last.pt", out, **QUIET)
    assert f"{out / name}: No space left on device (ENOSPC)" in _one_line(e.value)
    monkeypatch.undo()
    assert (out / name).read_bytes() == before[name] and not list(out.glob(".*.tmp*"))


def test_cli_disk_full_is_one_line(tmp_path, monkeypatch, capsys, trained):
    from deformact.cli import main

    run_dir, cfg, _ = trained
    monkeypatch.setattr(np, "savez", _enospc)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["test", "-c", str(config), "--ckpt", str(run_dir / "last.pt"), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err == (f"deformact test: error: cannot write scores {tmp_path / 't' / 'scores.npz'}: "
                   "No space left on device (ENOSPC)\n")


# --- the output path is checked before any work --------------------------------------------------------------


def test_bad_output_paths_fail_before_any_dataset_is_built(tmp_path, monkeypatch, trained):
    import deformact.data

    run_dir, cfg, _ = trained

    def no_work(**_kwargs):
        raise AssertionError("a dataset was built before the output folder was checked")

    monkeypatch.setattr(deformact.data, "build_dataset", no_work)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    for out, message in ((a_file, f"output folder {a_file} is an existing file"),
                         (a_file / "sub", f"output folder {a_file / 'sub'} cannot be created: {a_file} is a file")):
        for attempt in (lambda o=out: run(cfg, o, **QUIET),
                        lambda o=out: run_test(cfg, run_dir / "last.pt", o, **QUIET)):
            with pytest.raises(ConfigError) as e:
                attempt()
            assert _one_line(e.value).startswith(message)
    assert a_file.read_text() == "keep me"
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match="is not writable"):
                run(cfg, locked / "run", **QUIET)
        finally:
            locked.chmod(0o755)


# --- checkpoints that cannot be used ------------------------------------------------------------------------


def test_checkpoint_that_does_not_fit_the_test_data_names_the_fields(tmp_path, monkeypatch, trained):
    import deformact.engine.api as api

    run_dir, cfg, _ = trained
    monkeypatch.setattr(api, "evaluate", lambda *a, **k: pytest.fail("evaluated a checkpoint that does not fit"))
    cases = {"frames: checkpoint 4, test data 8 (data.frames)": {"frames": 8},
             "num_persons: checkpoint 2, test data 1 (data.num_persons)": {"num_persons": 1},
             "modality: checkpoint 'rgb+pose', test data 'pose'": {"modality": "pose"},
             "it predicts 4 classes but the test split has 8": {"num_classes": 8}}
    for message, data in cases.items():
        with pytest.raises(CheckpointError) as e:
            run_test(tiny_config(data=data), run_dir / "best.pt", tmp_path / "t", **QUIET)
        text = _one_line(e.value)
        assert text.startswith(f"{run_dir / 'best.pt'} does not fit the test data: ") and message in text


def test_broken_checkpoints_are_one_line_and_never_suggest_unsafe_loading(tmp_path, trained):
    run_dir, cfg, _ = trained
    good = (run_dir / "last.pt").read_bytes()
    files = {"random.pt": os.urandom(4096), "empty.pt": b"", "truncated.pt": good[: len(good) // 2],
             "text.pt": b"hello, not a checkpoint\n", "object.pt": pickle.dumps({"a": object})}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            run_test(cfg, tmp_path / name, tmp_path / "t", **QUIET)
        text = _one_line(e.value)
        assert text.startswith(f"{tmp_path / name}: not a readable checkpoint"), text
        assert "weights_only" not in text and "weights only" not in text.lower()
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    for value, kind in (([1, 2, 3], "list"), ({"w": "not a tensor"}, "dict")):
        torch.save({**ckpt, "model": value}, tmp_path / "odd.pt")
        with pytest.raises(CheckpointError) as e:
            run_test(cfg, tmp_path / "odd.pt", tmp_path / "t", **QUIET)
        assert _one_line(e.value) == f"{tmp_path / 'odd.pt'}: its 'model' entry is not a state dict " \
                                     f"(names -> tensors) but {kind}"


def test_missing_or_unreadable_backbone_weights_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2], not_weights)
    for path, message in ((tmp_path / "missing.pt", "file not found"),
                          (garbage, "is not a readable weights file"), (not_weights, "is not a state dict")):
        with pytest.raises(CheckpointError) as e:
            run(tiny_config(epochs=1, model={"backbone_weights": str(path)}), tmp_path / "run", **QUIET)
        text = _one_line(e.value)
        assert text.startswith("model.backbone_weights: ") and message in text and str(path) in text
        assert "weights_only" not in text
        assert not (tmp_path / "run").exists()  # refused before anything was written


# --- epochs=0 -------------------------------------------------------------------------------------------------


def test_zero_epochs_is_a_config_error():
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1, got 0"):
        validate_config(tiny_config(epochs=0))


# --- scores.npz -----------------------------------------------------------------------------------------------


def test_scores_npz_round_trips_and_reproduces_the_metrics(tmp_path, trained):
    run_dir, cfg, metrics = trained
    for folder, clips in ((run_dir, 1), (tmp_path / "t2", 2)):
        if clips == 2:
            metrics = run_test(cfg, run_dir / "last.pt", folder, num_clips=2, **QUIET)
        saved = load_scores(folder)
        assert json.loads((folder / "metrics.json").read_text())["top1"] == metrics["top1"]
        assert saved.scores.shape == (20, 4) and saved.split == "test" and saved.average == "prob"
        assert saved.class_names == tuple(read_checkpoint(run_dir / "last.pt")["class_names"])
        assert list(saved.frame_dir) == [f"synthetic_test_{i:05d}" for i in range(20)]
        assert saved.labels.tolist() == [int(build_dataset(cfg["data"], "test", train=False)[i]["label"])
                                         for i in range(20)]
        np.testing.assert_allclose(saved.scores.sum(1), 1.0, rtol=1e-5)  # probabilities
        assert float(np.mean(saved.scores.argmax(1) == saved.labels)) == metrics["top1"]


def test_video_names_come_from_the_pyskl_annotations(tmp_path):
    ann = tiny_pyskl(tmp_path / "tiny.pkl", train=8, test=4)
    data = {"type": "pyskl", "ann_file": str(ann), "modality": "pose", "frames": 8, "num_persons": 1}
    ds = build_dataset(data, "test", train=False)
    assert video_names(ds) == [f"clip{i:03d}" for i in range(8, 12)]



def test_bad_test_clips_are_left_out_and_counted_never_replaced(tmp_path):
    """Off the training split, ``skip_bad`` leaves a bad clip out of the metrics and counts it in
    ``skipped_samples``: a clip with nobody in it (found when the set is built) and a video that
    cannot be decoded (found when it is loaded) alike; no other clip is scored twice."""
    from deformact.data import build_dataset, load_pyskl, save_pyskl
    from deformact.engine import evaluate
    from deformact.models import build_model
    from deformact.tools.data_bench import make_video

    path = tiny_pyskl(tmp_path / "tiny.pkl")
    data = load_pyskl(path)
    test_names = data["split"]["test"]
    bad_pose = next(a for a in data["annotations"] if a["frame_dir"] == test_names[0])
    bad_pose["keypoint"][:] = np.nan
    videos = tmp_path / "videos"
    videos.mkdir()
    for a in data["annotations"]:
        if a["frame_dir"] in test_names:
            t = a["keypoint"].shape[1]
            make_video(videos / f"{a['frame_dir']}.mp4", num_frames=t, width=120, height=120)
    (videos / f"{test_names[1]}.mp4").write_bytes(b"\x00" * 500)  # undecodable
    save_pyskl(data, path)
    with torch_threads(1):
        for modality, bad in (("pose", 1), ("rgb+pose", 2)):
            with pytest.warns(UserWarning, match="left out 1 clip"):
                ds = build_dataset(type="pyskl", ann_file=path, split="test", modality=modality, frames=4,
                                   image_size=32, num_persons=1, video_root=videos, skip_bad=True)
            torch.manual_seed(0)
            model = build_model("demo", num_classes=4, frames=4, image_size=32, num_persons=1, num_joints=17,
                                modality=modality, dim=16, depth=1, heads=2, backbone_channels=[8, 8, 16])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the undecodable video's own warning
                m = evaluate(model, ds, batch_size=4)
            assert m["skipped_samples"] == bad, modality
            assert m["num_samples"] == 16 - bad
            kept = sorted(m["index"].tolist())
            assert len(set(kept)) == len(kept)  # nothing scored twice


def test_a_stop_between_saving_last_pt_and_noting_it_reports_the_saved_epoch(tmp_path):
    """The stop can land after last.pt's rename and before the trainer notes the save: the message
    then follows the file (deterministic stand-in for the race that a loaded machine widens)."""
    import types

    import torch

    from deformact.engine.api import _interrupted
    from deformact.engine.guard import StopSignal

    trainer = types.SimpleNamespace(epoch=1, saved_epoch=0, config=types.SimpleNamespace(epochs=8))
    stop = StopSignal(signal.SIGINT)
    assert "before any checkpoint was saved" in str(_interrupted(stop, tmp_path, trainer))  # no file yet
    torch.save({"format": "deformact-checkpoint", "version": 1, "epoch": 1, "model": {"w": torch.zeros(1)},
                "config": {}, "class_names": []}, tmp_path / "last.pt")
    msg = str(_interrupted(stop, tmp_path, trainer))
    assert f"in epoch 2/8; {tmp_path / 'last.pt'} keeps epoch 1, the last finished one" in msg, msg
    trainer.epoch = 2  # epoch 2 finished, its save not done: last.pt still holds epoch 1
    trainer.saved_epoch = 1
    assert "keeps epoch 1, the last finished one" in str(_interrupted(stop, tmp_path, trainer))
    (tmp_path / "last.pt").write_bytes(b"torn")  # unreadable: the trainer's own count stands
    assert "keeps epoch 1, the last finished one" in str(_interrupted(stop, tmp_path, trainer))
