"""No output destroys a file the user has (docs/FAILURES.md, "Which files an output may replace"):
an output that is an input, an output folder that is an input folder, and a folder holding files
of the same names that no earlier deformact command of that kind wrote are all refused with one
line (exit 2) before any work, and the file's bytes stay as they were. What worked keeps working:
`test` into a run's folder, `--resume` with the run's own config.yaml, explain regenerated in place."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import torch_threads
from test_engine import tiny_config, tiny_pyskl

import deformact.data
from deformact.cli import main
from deformact.engine import run
from deformact.errors import VideoError
from deformact.io import save_pyskl
from deformact.io.atomic import OUTPUTS_RECORD
from deformact.tools.outpaths import atomic_output

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 1-epoch tiny run (never changed by a test: copy it first) and its config file."""
    root = tmp_path_factory.mktemp("safety")
    cfg = tiny_config(epochs=1)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    with torch_threads(1):
        run(cfg, root / "run", echo=lambda _m: None)
    return root / "run", config


@pytest.fixture
def no_work(monkeypatch):
    """Any dataset or checkpoint read means the refusal came too late."""
    import deformact.engine.api as api
    import deformact.tools.inference as inference

    def refuse(*_a, **_k):
        raise AssertionError("work started before the outputs were checked")

    monkeypatch.setattr(deformact.data, "build_dataset", refuse)
    monkeypatch.setattr(api, "load_checkpoint", refuse)
    monkeypatch.setattr(inference, "load_model", refuse)


def _digests(*paths: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _refused(capsys, argv: list[str]) -> str:
    """Run the CLI; exit 2 with exactly one error line on stderr, which is returned."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and ".tmp" not in err, err
    assert err.startswith(f"deformact {argv[0]}: error: "), err
    return err


def _copy_run(trained, dst: Path) -> Path:
    shutil.copytree(trained[0], dst)
    return dst


# --- 1. ensemble into an input run ---------------------------------------------------------------------


def test_ensemble_never_writes_into_an_input_run_or_another_run(tmp_path, trained, capsys):
    a, b, other = (_copy_run(trained, tmp_path / n) for n in ("a", "b", "other"))
    kept = _digests(*(r / n for r in (a, b, other) for n in ("scores.npz", "metrics.json")))
    for argv in (["ensemble", a, b, "--out", a], ["ensemble", a, b, "--out", b],
                 ["ensemble", a / "scores.npz", b, "--out", a], ["ensemble", a, b, "--search-weights", "--out", a]):
        err = _refused(capsys, argv)
        assert f"refusing to write into {argv[argv.index('--out') + 1]}: it is the input folder" in err
    # a third run's folder is not an ensemble's: its metrics.json and scores.npz are the run's own
    err = _refused(capsys, ["ensemble", a, b, "--out", other])
    assert f"{other} already holds files deformact would overwrite (metrics.json, confusion_matrix.png, " in err
    assert "not written there by an earlier deformact ensemble" in err
    assert _digests(*kept) == kept
    # an ensemble's own folder is simply regenerated
    for _ in range(2):
        assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "ens")]) == 0
    assert (tmp_path / "ens" / "per_class.md").is_file() and (tmp_path / "ens" / OUTPUTS_RECORD).is_file()


# --- 2. and 3. train / test outputs that are inputs ------------------------------------------------------


def test_train_refuses_to_overwrite_its_own_config_file(tmp_path, no_work, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1)) + "# my notes\n")
    kept = _digests(config)
    err = _refused(capsys, ["train", "-c", config, "--out", tmp_path])
    assert f"refusing to write {config}: it is the input {config} (-c)" in err
    assert _digests(config) == kept and not (tmp_path / OUTPUTS_RECORD).exists()


def _pyskl_config(tmp_path: Path, ann: Path) -> Path:
    cfg = tiny_config(epochs=1, data={"type": "pyskl", "ann_file": str(ann), "modality": "pose", "frames": 8,
                                      "num_persons": 1})
    for key in ("num_classes", "num_train", "num_test", "image_size"):
        cfg["data"].pop(key)
    path = tmp_path / "pyskl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("command, key, name", [
    ("train", "data.ann_file", "log.jsonl"),
    ("train", "model.backbone_weights", "best.pt"),
    ("train", "data.video_root", ""),
    ("test", "data.ann_file", "metrics.json"),
    ("test", "--ckpt", "scores.npz"),
])
def test_an_input_named_in_the_config_or_the_checkpoint_is_never_an_output(tmp_path, trained, no_work, capsys,
                                                                          command, key, name):
    out = tmp_path / "out"
    out.mkdir()
    target = out / name if name else out
    ann = tiny_pyskl(out / "poses.pkl")
    if key == "data.ann_file":
        shutil.copyfile(ann, target)
    elif key == "--ckpt" or key == "model.backbone_weights":
        shutil.copyfile(trained[0] / "best.pt", target)
    argv = [command, "-c", _pyskl_config(tmp_path, ann), "--out", out]
    argv += ["--ckpt", target if key == "--ckpt" else trained[0] / "best.pt"] if command == "test" else []
    argv += [] if key == "--ckpt" else ["--set", f"{key}={target}"]
    kept = _digests(*(p for p in out.iterdir() if p.is_file()))
    err = _refused(capsys, argv)
    if name:
        assert f"refusing to write {target}: it is the input {target} ({key}); it would be overwritten" in err
    else:
        assert f"refusing to write into {out}: it is the input folder {out} (data.video_root)" in err
    assert _digests(*kept) == kept and not (out / OUTPUTS_RECORD).exists()


# --- 4. a folder holding the user's own files of the same names ----------------------------------------------


def test_a_fresh_folder_with_the_users_own_files_is_refused(tmp_path, trained, no_work, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    (mine / "metrics.json").write_text('{"mine": 1}\n')
    (mine / "other.txt").write_text("not a name deformact writes\n")
    kept = _digests(*mine.iterdir())
    err = _refused(capsys, ["train", "-c", trained[1], "--out", mine])
    assert f"{mine} already holds files deformact would overwrite (metrics.json, config.yaml), not written " \
           "there by an earlier deformact train or test; choose an empty folder or another --out" in err
    err = _refused(capsys, ["train", "-c", trained[1], "--out", mine, "--resume"])
    assert "already holds files deformact would overwrite (metrics.json, config.yaml)" in err
    err = _refused(capsys, ["test", "-c", trained[1], "--ckpt", trained[0] / "best.pt", "--out", mine])
    assert f"{mine} already holds files deformact would overwrite (metrics.json), not written there" in err
    assert _digests(*kept) == kept and sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in kept)


def test_a_runs_own_folder_still_takes_test_resume_and_a_rerun(tmp_path, trained, capsys):
    run_dir = _copy_run(trained, tmp_path / "run")
    ckpt = _digests(run_dir / "best.pt", run_dir / "last.pt")
    assert main(["test", "-c", str(trained[1]), "--ckpt", str(run_dir / "best.pt"), "--out", str(run_dir)]) == 0
    assert _digests(*ckpt) == ckpt
    # resuming with the run's own config.yaml rewrites that file with the config it runs
    assert main(["train", "-c", str(run_dir / "config.yaml"), "--out", str(run_dir), "--resume"]) == 0
    # a run folder from before the output record existed is still a run folder
    (run_dir / OUTPUTS_RECORD).unlink()
    assert main(["test", "-c", str(trained[1]), "--ckpt", str(run_dir / "best.pt"), "--out", str(run_dir)]) == 0
    # a test folder takes the next test; a folder with files of other names takes a run
    test_dir = tmp_path / "t"
    for _ in range(2):
        assert main(["test", "-c", str(trained[1]), "--ckpt", str(run_dir / "best.pt"), "--out", str(test_dir)]) == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("keep me\n")
    assert main(["test", "-c", str(trained[1]), "--ckpt", str(run_dir / "best.pt"), "--out",
                 str(tmp_path / "notes")]) == 0
    assert (tmp_path / "notes" / "README.txt").read_text() == "keep me\n"
    capsys.readouterr()


# --- 5. explain ---------------------------------------------------------------------------------------------


def test_explain_regenerates_its_own_outputs_but_never_an_input_or_a_users_file(tmp_path, trained, small_video,
                                                                                capsys):
    video, ann = small_video
    poses = tmp_path / "poses.pkl"
    save_pyskl({"annotations": [ann]}, poses)
    ckpt = trained[0] / "best.pt"
    out = tmp_path / "explain"
    for _ in range(2):  # a second explain into the same folder replaces the first one's files
        argv = ["explain", video, "--ckpt", ckpt, "--poses", poses, "--out", out, "--no-progress"]
        assert main([str(a) for a in argv]) == 0
    assert (out / "explain.json").is_file() and (out / "top5.png").is_file()
    capsys.readouterr()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "top5.png").write_bytes(b"my own picture")
    inside = tmp_path / "inside"
    inside.mkdir()
    shutil.copyfile(poses, inside / "explain.json")  # the poses file is named like an output
    kept = _digests(mine / "top5.png", inside / "explain.json", *(p for p in out.iterdir() if p.is_file()))
    err = _refused(capsys, ["explain", video, "--ckpt", ckpt, "--poses", poses, "--out", mine])
    assert f"{mine} already holds files deformact would overwrite (top5.png), not written there by an earlier " \
           "deformact explain" in err
    err = _refused(capsys, ["explain", video, "--ckpt", ckpt, "--poses", inside / "explain.json", "--out", inside])
    assert f"refusing to write {inside / 'explain.json'}: it is the input {inside / 'explain.json'}" in err
    err = _refused(capsys, ["explain", video, "--ckpt", out / "explain.json", "--out", out])
    assert "it is the input" in err
    assert _digests(*kept) == kept


# --- 6. predict: every output is checked before the work, and named as the user gave it ----------------------


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_predict_checks_every_output_before_the_work_and_names_the_users_path(tmp_path, trained, small_video,
                                                                              no_work, capsys):
    video, _ = small_video
    ckpt = trained[0] / "best.pt"
    err = _refused(capsys, ["predict", video, "--ckpt", ckpt, "--out", "/proc/a.mp4"])
    assert "cannot write annotated video /proc/a.mp4: folder /proc takes no new file" in err
    err = _refused(capsys, ["predict", video, "--ckpt", ckpt, "--window", "8", "--timeline", "/proc/t.png"])
    assert "cannot write timeline /proc/t.png: folder /proc takes no new file" in err
    kept = _digests(video)
    err = _refused(capsys, ["predict", video, "--ckpt", ckpt, "--out", video])
    assert f"refusing to write annotated video {video}: it is the input {video}" in err
    assert _digests(video) == kept


def test_a_writers_error_names_the_output_not_its_temp_file(tmp_path):
    target = tmp_path / "a.mp4"
    with pytest.raises(VideoError) as e, atomic_output(target, "annotated video") as tmp:
        raise VideoError(f"{tmp}: cannot write video (ValueError: no codec)")
    assert str(e.value) == f"{target}: cannot write video (ValueError: no codec)"
    assert not list(tmp_path.iterdir())
