"""`deformact ablate`: every row trains and tests end to end on a tiny synthetic setting."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import yaml

from deformact import cli
from deformact.commands import ablate
from deformact.engine import CONFIG_DIR, load_config
from deformact.engine.builders import build_dataset, build_model_for
from deformact.errors import ConfigError
from deformact.tools.ablation import ROW_NAMES, ROWS, format_table, mean_std, row_config, run_ablation, select_rows

CONFIG = str(CONFIG_DIR / "synthetic.yaml")
TINY = ["epochs=1", "data.num_train=24", "data.num_test=12", "train.batch_size=12", "train.eval_every=0",
        "model.dim=32", "model.heads=2", "model.depth=2", "train.warmup_epochs=0"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def base():
    return load_config(CONFIG, TINY)


def test_rows_switch_exactly_the_documented_flag(base):
    full = row_config(base, ROWS[0], 0)
    train = build_dataset(full["data"], "train", train=True)
    ref = build_model_for(full["model"], train).config
    for row in ROWS[1:]:
        cfg = row_config(base, row, 0)
        assert cfg["seed"] == 0
        model = build_model_for(cfg["model"], build_dataset(cfg["data"], "train", train=True)).config
        changed = {k for k, v in vars(model).items() if vars(ref)[k] != v}
        expected = set()
        for override in row.overrides:
            key, value = override.split("=")
            if "." not in key:  # a top-level key (the epochs): the model stays
                assert cfg[key] == yaml.safe_load(value), row.name
                continue
            section, field = key.split(".")
            if section in ("train", "data"):  # the model stays (but a single modality drops a stream)
                assert cfg[section][field] == yaml.safe_load(value), row.name
                if key == "data.modality":
                    expected.add("modality")
                continue
            # a row that sets the base's own value (no_anchors on a grid-only base) changes nothing
            if str(vars(ref)[field]).lower() != value.lower():
                expected.add(field)
        assert changed == expected, row.name
        for section in ("train", "data"):  # nothing else of the run changes
            fields = {o.split("=")[0].split(".")[1] for o in row.overrides if o.startswith(section + ".")}
            assert {k: v for k, v in cfg[section].items() if k not in fields} == \
                {k: v for k, v in full[section].items() if k not in fields}, row.name
        top = {o.split("=")[0] for o in row.overrides if "." not in o.split("=")[0]}
        assert all(cfg[k] == full[k] for k in ("epochs", "seed") if k not in top), row.name
    assert row_config(base, ROWS[0], 7)["seed"] == 7


def test_select_rows_and_mean_std():
    assert [r.name for r in select_rows(None)] == list(ROW_NAMES)
    assert [r.name for r in select_rows(["pose_only", "full"])] == ["full", "pose_only"]  # table order
    with pytest.raises(ConfigError, match="unknown ablation row"):
        select_rows(["nope"])
    m, s = mean_std([0.5, 0.7, 0.9])
    assert m == pytest.approx(0.7) and s == pytest.approx(0.2)
    assert mean_std([0.3]) == (0.3, 0.0)


def test_ablate_command_trains_rows_and_writes_both_files(tmp_path, capsys):
    # every row's model is checked above; three rows train here to keep the test short
    out = tmp_path / "abl"
    names = ["full", "rgb_only", "full_attn"]
    args = argparse.Namespace(config=CONFIG, out=str(out), seeds=[0], rows=names, overrides=TINY, report=False)
    assert ablate.main(args) == 0
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in summary["rows"]] == names and summary["seeds"] == [0]
    rows = {r["name"]: r for r in summary["rows"]}
    for r in rows.values():
        assert r["params"] > 0 and r["gflops"] > 0 and r["step_ms"] > 0 and len(r["seeds"]) == 1
        for key in ("top1", "mean_class_acc"):
            assert 0.0 <= r[key]["mean"] <= 1.0 and r[key]["std"] == 0.0
            assert r[key]["mean"] == r["seeds"][0][key]
        run = out / "runs" / r["name"] / "seed0"
        assert json.loads((run / "metrics.json").read_text())["top1"] == r["top1"]["mean"]
    # the single modalities drop a whole stream; full attention reads every RGB token
    assert rows["rgb_only"]["params"] < rows["full"]["params"]
    assert rows["full_attn"]["gflops"] > rows["full"]["gflops"]
    table = (out / "ablation.md").read_text()
    assert table == format_table(summary) and all(f"| {n} |" in table for n in names)
    assert table in capsys.readouterr().out


def test_finished_runs_are_reused_and_seeds_give_mean_and_std(tmp_path):
    base = load_config(CONFIG, TINY)
    logs: list[str] = []
    first = run_ablation(base, tmp_path, seeds=[0, 1], rows=["pose_only"], echo=logs.append)
    row = first["rows"][0]
    per = [s["top1"] for s in row["seeds"]]
    assert [s["seed"] for s in row["seeds"]] == [0, 1]
    assert row["top1"]["mean"] == pytest.approx(sum(per) / 2)
    assert row["top1"]["std"] == pytest.approx(abs(per[0] - per[1]) / math.sqrt(2))
    logs.clear()
    again = run_ablation(base, tmp_path, seeds=[0, 1], rows=["pose_only"], echo=logs.append)
    assert sum("reusing" in m for m in logs) == 2
    assert again["rows"][0]["top1"] == row["top1"]
    full = row_config(base, ROWS[0], 0)
    model = build_model_for(full["model"], build_dataset(full["data"], "train", train=True))
    assert again["rows"][0]["params"] < sum(p.numel() for p in model.parameters())  # no RGB stream
    # --report trains nothing: the finished seeds are tabulated, an unfinished seed or row left out
    logs.clear()
    report = run_ablation(base, tmp_path, seeds=[0, 1, 2], rows=["pose_only", "grid"], echo=logs.append,
                          train=False)
    assert [r["name"] for r in report["rows"]] == ["pose_only"]
    assert [s["seed"] for s in report["rows"][0]["seeds"]] == [0, 1] and report["rows"][0]["top1"] == row["top1"]
    assert not (tmp_path / "runs" / "pose_only" / "seed2").exists() and not (tmp_path / "runs" / "grid").exists()
    assert sum("not finished" in m for m in logs) == 4  # pose_only seed 2, grid seeds 0-2
    assert "seed 1: " in format_table(report)


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert cli.main(["ablate", "-c", str(tmp_path / "missing.yaml"), "--out", str(tmp_path), "--seeds", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deformact ablate: error:") and "\n" not in err


def test_a_run_made_before_an_option_existed_is_the_same_run(tmp_path):
    import yaml

    from deformact.engine.config import dump_config
    from deformact.tools.ablation import _same_config

    cfg = row_config(load_config(CONFIG, [*TINY, "train.offset_lr_mult=1.0"]), ROWS[0], 0)
    old = yaml.safe_load(dump_config(cfg))
    del old["train"]["offset_lr_mult"]  # an option added later, at its default
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert _same_config(tmp_path, cfg)
    old["train"]["lr"] = 0.5  # a real difference stays one
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert not _same_config(tmp_path, cfg)
    old["train"].update(lr=cfg["train"]["lr"], offset_lr_mult=0.1)  # so does one from a non-default value
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert not _same_config(tmp_path, cfg)
    (tmp_path / "config.yaml").write_text("train: {lrr: 1}\n")  # not a valid config: not the same
    assert not _same_config(tmp_path, cfg)


def test_a_run_made_before_a_default_changed_is_another_run(tmp_path, base):
    """config.yaml holds only the model fields the user set; the checkpoint's resolved model tells a
    run made at an older default (here the weight init) from one made today."""
    import torch

    from deformact.tools.ablation import _same_model

    logs: list[str] = []
    run_ablation(base, tmp_path, seeds=[0], rows=["pose_only"], echo=logs.append)
    run_dir = tmp_path / "runs" / "pose_only" / "seed0"
    cfg = row_config(base, [r for r in ROWS if r.name == "pose_only"][0], 0)
    assert _same_model(run_dir, cfg)
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    model = ckpt["config"]["model"]
    assert model["weight_init"] == "xavier"
    model["weight_init"] = "trunc_normal"  # what an older default would have recorded
    torch.save(ckpt, run_dir / "last.pt")
    assert not _same_model(run_dir, cfg)
    logs.clear()
    run_ablation(base, tmp_path, seeds=[0], rows=["pose_only"], echo=logs.append)
    assert not any("reusing" in m for m in logs)  # retrained, not reused
    assert torch.load(run_dir / "last.pt", weights_only=True)["config"]["model"]["weight_init"] == "xavier"
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    del ckpt["config"]["model"]["weight_init"]  # a field added since: it ran at the default
    torch.save(ckpt, run_dir / "last.pt")
    assert _same_model(run_dir, cfg)
    (run_dir / "last.pt").write_bytes(b"not a checkpoint")  # unreadable: never reused
    assert not _same_model(run_dir, cfg)
