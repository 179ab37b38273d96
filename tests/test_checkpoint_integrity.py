"""Damaged checkpoints and non-finite numbers never give silent garbage (docs/FAILURES.md,
"Checkpoints and weights"): NaN/inf weights and flipped bytes are one-line errors, every JSON
writer refuses NaN, export's comparison is NaN-safe, and a resume with a changed config says what
it does."""

from __future__ import annotations

import ast
import json
import math
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, torch_threads
from test_engine import tiny_config

from deformact import cli
from deformact.engine import CheckpointError, ConfigError, dist, load_checkpoint, read_checkpoint, run
from deformact.engine.builders import check_backbone_weights
from deformact.engine.checkpoint import verify_archive
from deformact.engine.evaluation import write_json
from deformact.engine.optim import warmup_cosine
from deformact.engine.trainer import Trainer, _write_lines
from deformact.errors import DeformactError, InferenceError
from deformact.io import jsonout
from deformact.tools.export import ExportError, check_onnx
from deformact.viz.explain import NAN_MEANS_UNDEFINED

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

QUIET = {"echo": lambda _m: None}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch tiny run: (folder, config file)."""
    out = tmp_path_factory.mktemp("integrity_run")
    cfg = tiny_config(epochs=1)
    with torch_threads(1):
        run(cfg, out / "run", **QUIET)
    config = out / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return out / "run", config


def _strict_loads(text: str):
    """json.loads that refuses NaN / Infinity, as every other JSON parser does."""
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def _with_nan(src: Path, dst: Path, entry: str = "model", count: int = 12) -> str:
    """A copy of checkpoint ``src`` with ``count`` values of one weight set to NaN; its name."""
    ckpt = torch.load(src, weights_only=True)
    name = next(k for k, v in ckpt[entry].items() if v.is_floating_point() and v.numel() > count)
    ckpt[entry][name].view(-1)[:count] = float("nan")
    torch.save(ckpt, dst)
    return name


def _flip_in_tensor_data(src: Path, dst: Path) -> str:
    """A copy of ``src`` with one byte changed in the middle of its largest tensor's data; the member."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x40
    dst.write_bytes(bytes(data))
    return info.filename


# --- 1. NaN / inf weights ----------------------------------------------------------------------------


def test_nan_weights_are_one_line_for_test_predict_and_export(tmp_path, trained, small_video, capsys):
    run_dir, config = trained
    bad = tmp_path / "nan.pt"
    name = _with_nan(run_dir / "best.pt", bad)
    expected = f"{bad}: weight '{name}' holds 12 non-finite values (nan/inf); the checkpoint is damaged"
    video, _ = small_video
    commands = {"test": ["test", "-c", str(config), "--ckpt", str(bad), "--out", str(tmp_path / "t")],
                "predict": ["predict", str(video), "--ckpt", str(bad), "--json"],
                "export": ["export", "--ckpt", str(bad), "--onnx", str(tmp_path / "m.onnx")]}
    for command, argv in commands.items():
        assert cli.main(argv) == 2, command
        captured = capsys.readouterr()
        assert captured.err == f"deformact {command}: error: {expected}\n"
        assert "NaN" not in captured.out and "nan" not in captured.out.lower()
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "t" / "metrics.json").exists()


def test_inf_in_ema_and_nan_in_optimizer_state_are_named(tmp_path, trained):
    run_dir, _ = trained
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ema = {k: v.clone() for k, v in ckpt["model"].items()}
    ema[name].view(-1)[0] = float("inf")
    torch.save({**ckpt, "ema": ema}, tmp_path / "ema.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ema.pt")
    assert str(e.value) == (f"{tmp_path / 'ema.pt'}: EMA weight '{name}' holds 1 non-finite values (nan/inf); "
                            "the checkpoint is damaged")
    state = ckpt["optimizer"]["state"]
    slot = next(iter(state))
    state[slot]["exp_avg"].view(-1)[:3] = float("nan")
    torch.save(ckpt, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match=rf"optimizer state 'state\.{slot}\.exp_avg' holds 3 non-finite"):
        read_checkpoint(tmp_path / "opt.pt")


def test_export_comparison_is_nan_safe(trained, tmp_path, monkeypatch):
    """max() over differences calls a NaN 0; check_onnx must not (a fake session: no export needed)."""
    import onnxruntime

    run_dir, _ = trained
    model = load_checkpoint(run_dir / "best.pt")
    answer: dict = {}

    class Session:
        def __init__(self, *_args, **_kwargs):
            pass

        def get_inputs(self):
            return [SimpleNamespace(name=n) for n in ("rgb", "pose", "person_mask")]

        def run(self, _names, feed):
            with torch.no_grad():
                ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
            return [answer.get("logits", ref)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    onnx = tmp_path / "m.onnx"
    assert check_onnx(model, onnx) == 0.0  # the fake graph computes exactly what PyTorch does
    answer["logits"] = np.full((1, 4), np.nan, np.float32)
    with pytest.raises(ExportError, match="onnxruntime's logits .* hold 4 non-finite values"):
        check_onnx(model, onnx)
    answer.clear()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(InferenceError, match="the PyTorch model's logits hold \\d+ non-finite values") as e:
        check_onnx(model, onnx)
    assert not isinstance(e.value, ExportError)


# --- 2. flipped bytes ----------------------------------------------------------------------------------


def test_a_flipped_byte_in_tensor_data_is_one_line(tmp_path, trained, capsys):
    run_dir, config = trained
    flipped = tmp_path / "flip.pt"
    member = _flip_in_tensor_data(run_dir / "best.pt", flipped)
    torch.load(flipped, weights_only=True)  # torch itself loads it without a word: why the CRCs are checked
    assert cli.main(["test", "-c", str(config), "--ckpt", str(flipped), "--out", str(tmp_path / "t")]) == 2
    assert capsys.readouterr().err == (f"deformact test: error: {flipped}: checkpoint is corrupt "
                                       f"(CRC mismatch in member '{member}')\n")
    with pytest.raises(CheckpointError) as e:  # backbone weights are read the same way
        check_backbone_weights(flipped)
    assert str(e.value) == (f"model.backbone_weights: {flipped} is not a readable weights file: "
                            f"corrupt (CRC mismatch in member '{member}')")


def test_legacy_and_crc_less_torch_files_keep_their_behaviour(tmp_path, trained):
    run_dir, _ = trained
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    legacy = tmp_path / "legacy.pt"
    torch.save(ckpt, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    verify_archive(legacy)  # not a zip: nothing to check, torch.load decides
    loaded = read_checkpoint(legacy)
    assert all(torch.equal(loaded["model"][k], v) for k, v in ckpt["model"].items())
    cut = tmp_path / "legacy_cut.pt"
    cut.write_bytes(legacy.read_bytes()[: legacy.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(cut)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="not a deformact checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    torch.serialization.set_crc32_options(False)  # every CRC written as 0: there is nothing to check
    try:
        torch.save(ckpt, tmp_path / "nocrc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    read_checkpoint(tmp_path / "nocrc.pt")


# --- 3. JSON writers -----------------------------------------------------------------------------------


def test_json_writer_refuses_nan_and_inf_with_one_line(tmp_path):
    for value, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (np.float64("-inf"), "-inf")):
        with pytest.raises(jsonout.NonFiniteJSONError) as e:
            jsonout.dumps({"top5": [{"label": "a", "score": 0.5}, {"label": "b", "score": value}]}, what="X")
        assert str(e.value) == (f"X: refusing to write {shown} at top5[1].score: JSON has no NaN or infinity "
                                "(a non-finite number there means a broken model, checkpoint or input)")
    assert _strict_loads(jsonout.dumps({"a": [1, 2.5, None, "nan"]})) == {"a": [1, 2.5, None, "nan"]}
    # where NaN means "undefined" (masked anchors in explain.json) it is written null
    info = {"top5": [], "sampling_locations": {"values": [[0.5, float("nan")]]}}
    assert _strict_loads(jsonout.dumps(info, null_under=NAN_MEANS_UNDEFINED)) == {
        "top5": [], "sampling_locations": {"values": [[0.5, None]]}}
    with pytest.raises(DeformactError, match="at top5"):
        jsonout.dumps({**info, "top5": [math.nan]}, null_under=NAN_MEANS_UNDEFINED)


def test_metrics_and_log_writers_refuse_nan_and_keep_the_old_file(tmp_path):
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"top1": 0.5})
    with pytest.raises(DeformactError, match=rf"{re.escape(str(metrics))}: refusing to write nan at loss"):
        write_json(metrics, {"top1": 0.5, "loss": float("nan")})
    assert _strict_loads(metrics.read_text()) == {"top1": 0.5}
    log = tmp_path / "log.jsonl"
    with pytest.raises(DeformactError, match=r"refusing to write inf at train_loss"):
        _write_lines(log, [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": float("inf")}])
    assert not log.exists()


def test_predict_json_with_a_nan_score_is_one_line(monkeypatch, capsys, tmp_path):
    import deformact.tools.inference as inference

    pred = SimpleNamespace(top=lambda k: [{"label": "wave", "score": float("nan")}], persons_found=1, timings={})
    monkeypatch.setattr(inference, "load_model", lambda *a, **k: SimpleNamespace(class_names=["wave"]))
    monkeypatch.setattr(inference, "predict_video", lambda *a, **k: pred)
    assert cli.main(["predict", str(tmp_path / "v.mp4"), "--ckpt", str(tmp_path / "c.pt"), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("deformact predict: error: predict --json: refusing to write nan at top5[0].score: "
                            "JSON has no NaN or infinity (a non-finite number there means a broken model, "
                            "checkpoint or input)\n")


def test_every_json_writer_is_strict():
    """Each json.dump(s) call in deformact/ passes allow_nan=False (deformact.io.jsonout does)."""
    loose = []
    for path in sorted((REPO / "deformact").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("dump", "dumps") and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "json"
                    and not any(k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False
                                for k in node.keywords)):
                loose.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not loose, f"json.dumps without allow_nan=False (use deformact.io.jsonout.dumps): {loose}"


# --- 4. resume with a changed config ----------------------------------------------------------------


def test_resume_with_more_epochs_prints_the_note_and_replans_the_schedule(tmp_path, capsys):
    run(tiny_config(epochs=1), tmp_path, **QUIET)
    steps = read_checkpoint(tmp_path / "last.pt")["step"]
    capsys.readouterr()
    run(tiny_config(epochs=2), tmp_path, resume=True, **QUIET)
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("note: resuming")]
    assert len(notes) == 1, err
    found = re.fullmatch(rf"note: resuming with epochs 2 \(the checkpoint's run had 1\); the LR schedule "
                         rf"\(warm-up \+ cosine\) is re-planned over 2 epochs from step {steps} on: "
                         rf"lr 0 -> (\S+)", notes[0])
    assert found, notes[0]
    warmup = round(0.5 * steps)  # tiny_config: lr 3e-3, warm-up 0.5 epochs, min_lr 0
    assert float(found.group(1)) == pytest.approx(3e-3 * warmup_cosine(steps, 2 * steps, warmup, 0.0), rel=1e-2)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["lr"] == pytest.approx(0.0, abs=1e-12)
    capsys.readouterr()
    run(tiny_config(epochs=2), tmp_path, resume=True, **QUIET)  # the same config: no note
    assert "note:" not in capsys.readouterr().err


def test_resume_with_a_setting_the_checkpoint_fixes_is_one_line_and_changes_nothing(tmp_path, capsys):
    run(tiny_config(epochs=1), tmp_path, **QUIET)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ConfigError) as e:
        run(tiny_config(epochs=2, train={"lr": 1e-2}, seed=3), tmp_path, resume=True, **QUIET)
    assert str(e.value) == (f"{tmp_path / 'last.pt'} cannot be resumed with this config: train.lr 0.01 (the "
                            "checkpoint's run had 0.003); seed 3 (the checkpoint's run had 0); the optimizer state "
                            "and random streams saved in it fix these, so set them back or start a new run in "
                            "another --out")
    assert (tmp_path / "last.pt").read_bytes() == before
    capsys.readouterr()
    run(tiny_config(epochs=1, train={"batch_size": 4}, model={"drop_path": 0.2}), tmp_path, resume=True, **QUIET)
    err = capsys.readouterr().err
    assert ("note: resuming with changed settings: train.batch_size 4 (the checkpoint's run had 8), "
            "model.drop_path 0.2 (the checkpoint's run had 0.1); the run goes on with them") in err


def test_resume_that_adds_an_ema_starts_it_from_the_resumed_weights(tmp_path, capsys):
    run(tiny_config(epochs=1), tmp_path, **QUIET)
    trainer = Trainer(tiny_config(epochs=2, train={"ema": 0.9}), tmp_path, dist.setup("cpu"), **QUIET)
    trainer.resume(tmp_path / "last.pt")
    model, ema = trainer.model.state_dict(), trainer.ema.state_dict()
    assert all(torch.equal(model[k], ema[k]) for k in model)
    assert "train.ema 0.9 (the checkpoint's run had None)" in capsys.readouterr().err
