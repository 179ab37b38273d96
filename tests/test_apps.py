"""From a raw video to an answer: predict, explain and ONNX export with a tiny trained checkpoint;
the command line's one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_pose import ONE, TWO, extract_ntu

import deformact.data as dd
from deformact import cli
from deformact.engine import load_checkpoint, save_checkpoint, validate_config
from deformact.engine.builders import build_dataset, build_model_for, model_inputs
from deformact.engine.optim import build_optimizer
from deformact.errors import DeformactError, VideoError
from deformact.io import write_video
from deformact.models.deformable import pool_to_grid
from deformact.tools.inference import load_model, predict_video
from deformact.viz.draw import draw_skeleton, skeleton_edges

TINY = {
    "model": {"preset": "demo", "depth": 1},
    "data": {"type": "synthetic", "train_split": "train", "test_split": "test", "frames": 8, "image_size": 64,
             "num_clips": 2, "num_train": 8, "num_test": 8},
    "train": {"batch_size": 8, "lr": 1e-3},
    "epochs": 1,
}


def tiny_model(config: dict) -> tuple[dict, object, torch.nn.Module]:
    """(validated config, its training set, a freshly built model with seed 0)."""
    torch.manual_seed(0)
    cfg = validate_config(config)
    ds = build_dataset(cfg["data"], "train", train=True)
    return cfg, ds, build_model_for(cfg["model"], ds)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A demo-preset checkpoint (1 block) after 3 AdamW steps on the synthetic set, saved by the engine."""
    cfg, ds, model = tiny_model(TINY)
    opt = build_optimizer(model, cfg["train"])
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    for _ in range(3):
        loss = F.cross_entropy(model(**model_inputs(batch, torch.device("cpu"))), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint({"model": model.state_dict(), "config": {**cfg, "model": model.config.to_dict()},
                     "class_names": list(ds.class_names), "epoch": 1, "step": 3}, path)
    return path


@pytest.fixture(scope="module")
def poses(shared_dir):
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    return extract_ntu(str(shared_dir))


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_predict_matches_test_time_dataset(ckpt, poses, shared_dir, tmp_path, capsys):
    """predict's top-5 = the checkpoint's test pipeline (2 clips, its crop) on the same poses."""
    video = shared_dir / "videos" / TWO
    assert cli.main(["predict", str(video), "--ckpt", str(ckpt), "--poses", str(poses), "--json"]) == 0
    top5 = _json_out(capsys)["top5"]
    model = load_checkpoint(ckpt)
    scores = [t["score"] for t in top5]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert len(top5) == 5 and all(t["label"] in model.class_names for t in top5)

    # the same video through a pyskl dataset built the way `deformact test` would build it
    (ann,) = [a for a in dd.load_pyskl(poses)["annotations"] if a["frame_dir"] == TWO[:-4]]
    ann = {**ann, "label": 0}
    dd.save_pyskl({"split": {}, "annotations": [ann]}, tmp_path / "one.pkl")
    ds = dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "one.pkl"), video_root=str(video.parent),
                          modality="rgb+pose", frames=8, image_size=64, num_clips=2, num_persons=2,
                          label_map=model.class_names)
    item = ds[0]
    with torch.no_grad():
        probs = model(rgb=item["rgb"], pose=item["pose"], person_mask=item["person_mask"]).softmax(-1).mean(0)
    best = torch.argsort(probs, descending=True)[:5]
    assert [t["label"] for t in top5] == [model.class_names[i] for i in best]
    np.testing.assert_allclose([t["score"] for t in top5], probs[best].numpy(), atol=1e-6)


def test_predict_extracts_poses_and_writes_video(ckpt, poses, shared_dir, tmp_path, capsys):
    """Without --poses, predict runs mediapipe itself and gets the same answer as with extract-poses."""
    import av

    video = shared_dir / "videos" / ONE
    out = tmp_path / "annotated.mp4"
    assert cli.main(["predict", str(video), "--ckpt", str(ckpt), "--json", "--out", str(out), "--no-progress"]) == 0
    live = _json_out(capsys)["top5"]
    assert cli.main(["predict", str(video), "--ckpt", str(ckpt), "--poses", str(poses), "--json"]) == 0
    cached = _json_out(capsys)["top5"]
    assert [t["label"] for t in live] == [t["label"] for t in cached]
    np.testing.assert_allclose([t["score"] for t in live], [t["score"] for t in cached], atol=1e-5)
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 103 and frames[0].shape == (360, 640, 3)
    # the label box is drawn in the top-left corner (dark background, white text)
    corner = frames[50][8:30, 8:120]
    assert corner.min() < 30 and corner.max() > 220


def test_predict_text_output(ckpt, poses, shared_dir, capsys):
    video = shared_dir / "videos" / TWO
    labels = shared_dir / "label_maps" / "ntu60.txt"
    assert cli.main(["predict", str(video), "--ckpt", str(ckpt), "--poses", str(poses)]) == 0
    out = capsys.readouterr().out
    ranked = re.findall(r"^\s+\d\. (\S+)\s+([0-9.]+)$", out, flags=re.M)
    assert len(ranked) == 5 and "ms per clip" in out
    assert [float(s) for _, s in ranked] == sorted((float(s) for _, s in ranked), reverse=True)
    # a label map with a different number of classes is refused with one line
    assert cli.main(["predict", str(video), "--ckpt", str(ckpt), "--poses", str(poses), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "60 class names" in err[0]


def test_predict_bad_inputs(ckpt, shared_dir, tmp_path, capsys):
    cut = tmp_path / "cut.avi"
    cut.write_bytes((shared_dir / "videos" / ONE).read_bytes()[:150_000])
    assert cli.main(["predict", str(cut), "--ckpt", str(ckpt), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut.avi" in err[0] and err[0].startswith("deformact predict: error:")
    assert cli.main(["predict", str(shared_dir / "videos" / ONE), "--ckpt", str(tmp_path / "no.pt")]) == 2
    assert "no.pt" in capsys.readouterr().err
    # poses in another layout (Penn Action, 13 joints) do not fit a COCO-17 checkpoint
    wrong = {"frame_dir": ONE[:-4], "label": -1, "img_shape": (1080, 1920), "total_frames": 103,
             "keypoint": np.zeros((1, 103, 13, 2), np.float32), "keypoint_score": np.ones((1, 103, 13), np.float32)}
    dd.save_pyskl({"annotations": [wrong]}, tmp_path / "penn.pkl")
    rc = cli.main(["predict", str(shared_dir / "videos" / ONE), "--ckpt", str(ckpt), "--poses",
                   str(tmp_path / "penn.pkl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "13 joints" in err[0]


def test_explain_pictures_and_numbers(ckpt, poses, shared_dir, tmp_path, capsys):
    from matplotlib.image import imread

    video = shared_dir / "videos" / TWO
    out = tmp_path / "explain"
    assert cli.main(["explain", str(video), "--ckpt", str(ckpt), "--poses", str(poses), "--out", str(out)]) == 0
    names = ["top5.png", "joint_importance.png", "temporal_attention.png", "sampling_points.png"]
    for name in names:
        img = imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300 and img.std() > 0.01
    info = json.loads((out / "explain.json").read_text())
    assert info["pictures"] == names

    # the numbers are the model's maps on the centre clip
    model = load_model(ckpt)
    pred = predict_video(model, video, dd.load_pyskl(poses), return_maps=True, num_clips=1, progress=False)
    assert [t["label"] for t in info["top5"]] == [t["label"] for t in pred.top(5)]
    assert info["frame_indices"] == pred.frame_indices[0].tolist()
    persons = info["joint_importance"]["persons"]
    assert [p["present"] for p in persons] == [True, True]  # both people of the clip reach the model
    np.testing.assert_allclose([p["values"] for p in persons], pred.maps["joint_importance"][0], atol=1e-5)
    assert len(info["joint_importance"]["joints"]) == 17
    att = np.array(info["temporal_attention"]["matrix"])
    assert att.shape == (4, 4) and (att >= 0).all() and (att.sum(1) <= 1 + 1e-4).all()
    loc = np.array(info["sampling_locations"]["values"])
    assert loc.shape == pred.maps["sampling_locations"][0].shape and loc.shape[0] == 1 and loc.shape[-1] == 3
    assert np.isfinite(loc).all() and (np.abs(loc - 0.5) < 1.5).all()


def test_export_roundtrip(ckpt, poses, shared_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    path = tmp_path / "tiny.onnx"
    assert cli.main(["export", "--ckpt", str(ckpt), "--onnx", str(path)]) == 0
    out = capsys.readouterr().out
    diff = float(re.search(r"max abs difference ([0-9.e+-]+)", out).group(1))
    assert diff <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["rgb", "pose", "person_mask"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    # real inputs: both test clips of the two-person video (batch 2 on a dynamic batch axis)
    model = load_model(ckpt)
    pred = predict_video(model, shared_dir / "videos" / TWO, dd.load_pyskl(poses), progress=False)
    feed = {k: v.numpy() for k, v in pred.inputs.items()}
    assert feed["rgb"].shape[0] == 2
    with torch.no_grad():
        ref = model(**pred.inputs).numpy()
    np.testing.assert_allclose(session.run(["logits"], feed)[0], ref, atol=1e-4, rtol=0)


def test_export_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert cli.main(["export", "--ckpt", str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pt" in err[0]


@pytest.mark.parametrize("shape,size", [((2, 3, 4, 14, 14), (2, 7, 7)), ((1, 2, 5, 7, 6), (3, 4, 5)),
                                        ((1, 1, 3, 3, 3), 1)])
def test_export_pooling_is_exact(shape, size):
    x = torch.randn(shape)
    grid = (size,) * 3 if isinstance(size, int) else size
    torch.testing.assert_close(pool_to_grid(x, grid), F.adaptive_avg_pool3d(x, size), atol=1e-6, rtol=0)


def test_draw_and_write_video(tmp_path):
    import av

    frame = np.zeros((101, 121, 3), np.uint8)  # odd size: the writer crops to even
    person = np.zeros((17, 3), np.float32)
    person[:, 0], person[:, 1], person[:, 2] = np.linspace(20, 100, 17), 50, 1.0
    person[3] = (110, 90, 0.0)  # a missing joint: neither it nor its bone is drawn
    draw_skeleton(frame, person, skeleton_edges("coco17"), color=(255, 0, 0), radius=3)
    for v in range(17):
        assert frame[50, int(person[v, 0])].any() == (v != 3)
    assert frame[:40].max() == 0 and frame[60:].max() == 0  # nothing far from the skeleton
    n = write_video(tmp_path / "v.mp4", [frame] * 7, fps=7)
    with av.open(str(tmp_path / "v.mp4")) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert n == 7 and len(got) == 7 and got[0].shape == (100, 120, 3)
    assert abs(got[3][50, 60].astype(int) - frame[50, 60].astype(int)).max() < 40  # lossy, but the same image


# ------------------------------------------------------------------ in memory, no mediapipe or ../shared


def test_predict_builds_clips_in_memory_like_the_test_dataset(ckpt, small_video, tmp_path, monkeypatch):
    """predict_video writes no file (no temporary pyskl, no dataset) and gives the probabilities of
    the checkpoint's test-time dataset on the same poses."""
    import tempfile

    video, ann = small_video
    model = load_model(ckpt)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def no_temp(*_a, **_k):
        raise AssertionError("predict_video created a temporary file")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "TemporaryFile"):
        monkeypatch.setattr(tempfile, name, no_temp)
    pred = predict_video(model, video, {"annotations": [ann]}, progress=False)
    monkeypatch.undo()
    assert list(scratch.iterdir()) == []
    assert pred.clip_probs.shape == (2, len(model.class_names)) and pred.frame_indices.shape == (2, 8)

    # the old path: a one-video pyskl file read by the dataset `deformact test` builds
    dd.save_pyskl({"split": {}, "annotations": [{**ann, "label": 0}]}, tmp_path / "one.pkl")
    ds = dd.build_dataset(type="pyskl", ann_file=str(tmp_path / "one.pkl"), video_root=str(video.parent),
                          modality="rgb+pose", frames=8, image_size=64, num_clips=2, num_persons=2,
                          label_map=model.class_names)
    item = ds[0]
    for key in ("rgb", "pose", "person_mask"):
        torch.testing.assert_close(pred.inputs[key], torch.as_tensor(item[key]), atol=0, rtol=0)
    with torch.no_grad():
        probs = model(rgb=item["rgb"], pose=item["pose"], person_mask=item["person_mask"]).softmax(-1)
    np.testing.assert_allclose(pred.clip_probs, probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(pred.probs, probs.mean(0).numpy(), atol=1e-6)


def _stub_command(monkeypatch, name: str, error: BaseException) -> None:
    import importlib

    module = importlib.import_module(cli.COMMANDS[name][0])

    def main(_args):
        raise error

    monkeypatch.setattr(module, "add_arguments", lambda parser: None)
    monkeypatch.setattr(module, "main", main)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_any_command_prints_a_deformact_error_as_one_line(name, monkeypatch, capsys):
    _stub_command(monkeypatch, name, VideoError("clip.mp4: truncated video,\n decoded 3 of 9 frames"))
    assert cli.main([name]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"deformact {name}: error: clip.mp4: truncated video,; decoded 3 of 9 frames\n"
    assert captured.out == ""


def test_interrupt_is_one_line_and_status_130(monkeypatch, capsys):
    _stub_command(monkeypatch, "train", KeyboardInterrupt())
    assert cli.main(["train"]) == 130
    assert capsys.readouterr().err == "deformact train: interrupted\n"


def test_bugs_keep_their_traceback(monkeypatch):
    _stub_command(monkeypatch, "info", ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        cli.main(["info"])


def test_commands_leave_error_printing_to_the_cli():
    """Every user error is a DeformactError caught once by cli.main: no command prints its own."""
    import importlib
    import inspect

    assert issubclass(VideoError, DeformactError)
    for name, (module_name, _) in cli.COMMANDS.items():
        src = inspect.getsource(importlib.import_module(module_name))
        assert "return 2" not in src and "error:" not in src and "user_errors" not in src, name

