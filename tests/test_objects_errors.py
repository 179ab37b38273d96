"""Scoring an objects-set run by scene cell: arm or leg (does the held object's hand move?), alone
or beside the idle person who holds a distractor."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from deformact.data import synthetic_objects as so
from deformact.errors import DataError
from deformact.io.scores import save_scores
from deformact.tools import objects_errors as oe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _split(n: int = 48) -> dict:
    return so.generate(n, 0, "test", 4, 32, rgb=False)


def test_cells_partition_the_clips_by_limb_and_company():
    d = _split()
    cells = oe.scene_cells(d["params"])
    assert tuple(cells) == oe.CELLS and cells["all"].all()
    parts = np.stack([cells[c] for c in oe.CELLS[1:]])
    assert (parts.sum(0) == 1).all()  # every clip in exactly one of the four cells
    motion = d["label"] // len(so.OBJECTS)
    leg = cells["leg, alone"] | cells["leg, two people"]
    assert np.array_equal(leg, motion >= 2)  # kicks are motions 2 and 3
    assert np.array_equal(cells["arm, two people"] | cells["leg, two people"], d["params"]["second"])


def test_breakdown_scores_each_half_of_the_label():
    d = _split()
    labels, cells = d["label"], oe.scene_cells(d["params"])
    perfect = oe.breakdown(labels, labels, cells)
    assert all(m[k] == 1.0 for m in perfect.values() for k in ("top1", "object", "motion", "limb"))
    assert sum(perfect[c]["clips"] for c in oe.CELLS[1:]) == len(labels)
    # the other side's motion with the right object: what RGB alone cannot tell apart
    k = len(so.OBJECTS)
    mirrored = ((labels // k) ^ 1) * k + labels % k
    m = oe.breakdown(mirrored, labels, cells)["all"]
    assert (m["top1"], m["object"], m["motion"], m["limb"]) == (0.0, 1.0, 0.0, 1.0)
    # a wrong object on kicks only: the object half fails in the leg cells and nowhere else
    wrong = np.where(labels // k >= 2, labels // k * k + (labels + 1) % k, labels)
    t = oe.breakdown(wrong, labels, cells)
    assert t["arm, alone"]["object"] == t["arm, two people"]["object"] == 1.0
    assert t["leg, alone"]["object"] == t["leg, two people"]["object"] == 0.0
    assert t["all"]["object"] == pytest.approx((labels // k < 2).mean())
    assert np.isnan(oe.breakdown(labels, labels, {"empty": np.zeros(len(labels), bool)})["empty"]["top1"])


def _run(tmp_path, labels: np.ndarray, n: int, variant: str = "objects"):
    run = tmp_path / "run"
    run.mkdir()
    data = {"type": "synthetic", "variant": variant, "num_test": n, "frames": 4, "image_size": 32}
    (run / "config.yaml").write_text(yaml.safe_dump({"data": data}))
    scores = np.eye(len(so.class_names()))[labels]
    save_scores(run / "scores.npz", scores=scores, labels=labels, frame_dir=[str(i) for i in range(n)],
                split="test", class_names=so.class_names())
    return run


def test_a_run_is_scored_against_its_own_test_split(tmp_path, capsys):
    labels = _split(24)["label"]
    run = _run(tmp_path, labels, 24)
    table = oe.run_breakdown(run)
    assert table["all"] == {"clips": 24, "top1": 1.0, "object": 1.0, "motion": 1.0, "limb": 1.0}
    assert oe.main([str(run)]) == 0
    assert f"| {run} | leg, two people | {table['leg, two people']['clips']} | 100.0 |" in capsys.readouterr().out


def test_scores_of_another_split_or_set_are_refused_in_one_line(tmp_path, capsys):
    labels = _split(24)["label"]
    run = _run(tmp_path, np.roll(labels, 1), 24)
    with pytest.raises(DataError, match="not those of the run's test split"):
        oe.run_breakdown(run)
    with pytest.raises(SystemExit) as e:
        oe.main([str(run)])
    err = capsys.readouterr()
    assert e.value.code == 2 and err.out == "" and len(err.err.strip().splitlines()) == 1
    (tmp_path / "demo").mkdir()
    demo = _run(tmp_path / "demo", labels, 24, variant="motion_colour")
    with pytest.raises(DataError, match="not a run on the objects set"):
        oe.run_breakdown(demo)
    with pytest.raises(DataError, match="no saved scores"):
        oe.run_breakdown(tmp_path / "missing")


def test_a_test_folder_is_scored_with_the_config_and_overrides_it_was_tested_with(tmp_path, capsys):
    bigger = so.generate(30, 1, "test", 4, 32, rgb=False)["label"]  # data.seed 1, 30 clips
    run = _run(tmp_path, bigger, 30)
    config = tmp_path / "tested.yaml"
    (run / "config.yaml").rename(config)
    with pytest.raises(DataError, match="not those"):  # the config as saved: 30 clips of data.seed 0
        oe.run_breakdown(run, config, ["data.num_test=30"])
    assert oe.run_breakdown(run, config, ["data.seed=1", "data.num_test=30"])["all"]["top1"] == 1.0
    assert oe.main([str(run), "-c", str(config), "--set", "data.seed=1", "--set", "data.num_test=30"]) == 0
    assert "| all | 30 | 100.0 |" in capsys.readouterr().out
