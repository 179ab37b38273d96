"""Long videos and live sources: windowed predict, the timeline, ``deformact stream``, skeleton
layout mapping (a Penn-13 checkpoint on COCO-17 poses), dead and unopenable sources."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from test_apps import TINY, _json_out, tiny_model
from test_pose import ONE, TWO, extract_ntu

import deformact.data as dd
from deformact import cli
from deformact.data.skeletons import COCO17, NTU25, PENN13, joint_mapping, map_joints
from deformact.engine import load_config, run, save_checkpoint
from deformact.errors import DataError
from deformact.io import iter_frames, probe, write_video
from deformact.tools.windows import window_spans

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SIDE = 480  # the long video's width (NTU's 1920 x 1080 shrunk 4x)


@pytest.fixture(scope="module")
def long_video(shared_dir, tmp_path_factory):
    """The two NTU clips one after the other (175 frames, 480 x 270, H.264) and their COCO-17
    poses as one pyskl file (extracted once by test_pose's helper, concatenated in time)."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    root = tmp_path_factory.mktemp("long")
    videos = shared_dir / "videos"
    frames = [f for name in (ONE, TWO) for f in iter_frames(videos / name, SIDE)]
    video = root / "long.mp4"
    assert write_video(video, frames, fps=30) == 175
    anns = {a["frame_dir"]: a for a in dd.load_pyskl(extract_ntu(str(shared_dir)))["annotations"]}
    parts = [anns[Path(n).stem] for n in (ONE, TWO)]
    ann = {"frame_dir": "long", "label": -1, "total_frames": 175, "img_shape": (1080, 1920),
           "original_shape": (1080, 1920),
           "keypoint": np.concatenate([p["keypoint"] for p in parts], 1),
           "keypoint_score": np.concatenate([p["keypoint_score"] for p in parts], 1)}
    dd.save_pyskl({"split": {}, "annotations": [ann]}, root / "long.pkl")
    return video, root / "long.pkl"


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory):
    """An untrained RGB+pose demo-preset checkpoint (1 block, COCO-17, T=8, 64 px)."""
    cfg, ds, model = tiny_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "demo.pt"
    save_checkpoint({"model": model.state_dict(), "config": {**cfg, "model": model.config.to_dict()},
                     "class_names": list(ds.class_names), "epoch": 0, "step": 0}, path)
    return path


@pytest.fixture(scope="module")
def penn_ckpt(shared_dir, tmp_path_factory):
    """A Penn-13 pose-only checkpoint: one epoch of the Penn Action recipe on 2 clips per class."""
    root = tmp_path_factory.mktemp("penn")
    dd.convert_penn_action(shared_dir / "datasets" / "penn_action", root / "penn.pkl")
    data = dd.load_pyskl(root / "penn.pkl")
    label = {a["frame_dir"]: a["label"] for a in data["annotations"]}
    seen: Counter = Counter()
    keep = [n for n in data["split"]["train"] if (seen.update([label[n]]) or seen[label[n]] <= 2)]
    data["split"] = {"train": keep, "test": data["split"]["test"][:15]}
    dd.save_pyskl(data, root / "subset.pkl")
    recipe = Path(dd.__file__).parents[1] / "configs" / "penn_action_pose.yaml"
    cfg = load_config(recipe, [f"data.ann_file={root / 'subset.pkl'}", "data.num_clips=1", "epochs=1",
                               "train.batch_size=16", "train.num_workers=0", "train.eval_every=0",
                               "train.warmup_epochs=0", "train.ema=null", "model.dim=16", "model.heads=2",
                               "model.depth=1"])
    run(cfg, root / "run", echo=lambda _m: None)
    return root / "run" / "last.pt"


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_window_spans_cover_in_order():
    assert window_spans(10, 16, 8) == [(0, 10)]
    assert window_spans(175, 32, 16)[-1] == (143, 175)
    for n, w, s in ((175, 32, 16), (100, 30, 7), (64, 64, 1), (65, 64, 64)):
        spans = window_spans(n, w, s)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[0] < b[0] and b[0] <= a[1] for a, b in zip(spans, spans[1:]))  # ordered, no gap


def test_windowed_predict_covers_the_long_video(demo_ckpt, long_video, tmp_path, capsys):
    video, poses = long_video
    timeline, out = tmp_path / "timeline.png", tmp_path / "annotated.mp4"
    rc, stdout, _ = _cli(capsys, "predict", video, "--ckpt", demo_ckpt, "--poses", poses, "--window", 32,
                         "--stride", 16, "--json", "--timeline", timeline, "--out", out, "--device", "cpu")
    assert rc == 0
    res = json.loads(stdout)
    wins = res["windows"]
    assert len(res["top5"]) == 5 and res["persons_found"] >= 2
    assert wins[0]["start_frame"] == 0 and wins[-1]["end_frame"] == 175 and len(wins) == 10
    assert all(a["start_frame"] < b["start_frame"] <= a["end_frame"] for a, b in zip(wins, wins[1:]))
    for w in wins:
        assert w["end_frame"] - w["start_frame"] == 32
        assert w["start_s"] == pytest.approx(w["start_frame"] / 30, abs=1e-3) and len(w["top5"]) == 5
        assert sum(t["score"] for t in w["top5"]) <= 1 + 1e-5
    assert timeline.stat().st_size > 10_000
    assert probe(out).frames == 175 and not list(tmp_path.glob(".*tmp*"))


def test_stream_prints_one_json_line_per_window(demo_ckpt, long_video, capsys):
    video, poses = long_video
    rc, stdout, stderr = _cli(capsys, "stream", video, "--ckpt", demo_ckpt, "--poses", poses, "--window", 24,
                              "--stride", 12, "--max-windows", 4, "--device", "cpu")
    assert rc == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert len(lines) == 4
    assert [(x["start_frame"], x["end_frame"]) for x in lines] == [(0, 24), (12, 36), (24, 48), (36, 60)]
    for x in lines:
        assert set(x) >= {"start_frame", "end_frame", "t_s", "label", "score", "top5", "latency_ms"}
        assert x["label"] == x["top5"][0]["label"] and x["latency_ms"] > 0 and x["persons"] >= 1
    assert "4 windows" in stderr and "real-time factor" in stderr


def test_stream_with_the_pose_estimator(demo_ckpt, long_video, capsys):
    video, _ = long_video
    rc, stdout, stderr = _cli(capsys, "stream", video, "--ckpt", demo_ckpt, "--window", 12, "--max-windows", 1,
                              "--device", "cpu")
    assert rc == 0, stderr
    (line,) = [json.loads(x) for x in stdout.splitlines()]
    assert line["end_frame"] == 12 and line["persons"] == 1


def test_stream_stops_cleanly_on_ctrl_c(demo_ckpt, long_video, monkeypatch, capsys):
    from deformact.tools import stream

    video, poses = long_video
    real = stream.ReplayEstimator.__call__

    def interrupt_at_50(self, frame):
        if self.i == 50:
            raise KeyboardInterrupt
        return real(self, frame)

    monkeypatch.setattr(stream.ReplayEstimator, "__call__", interrupt_at_50)
    rc, stdout, stderr = _cli(capsys, "stream", video, "--ckpt", demo_ckpt, "--poses", poses, "--window", 16,
                              "--stride", 16, "--device", "cpu")
    assert rc == 130
    assert [json.loads(x)["end_frame"] for x in stdout.splitlines()] == [16, 32, 48]
    assert stderr.count("\n") == 1 and "stopped by Ctrl-C after 50 frames" in stderr


def test_realtime_drops_what_a_slow_estimator_cannot_keep_up_with(demo_ckpt, long_video, monkeypatch, capsys):
    """--realtime on a file paced at its frame rate, with an estimator that needs 2.5 frame
    periods a frame: frames are dropped (counted in every line and the summary), every window
    still comes, in order, and without --realtime nothing is dropped."""
    from deformact.tools import stream

    video, poses = long_video
    real = stream.ReplayEstimator.__call__

    def slow(self, frame):
        time.sleep(2.5 / 30)
        return real(self, frame)

    monkeypatch.setattr(stream.ReplayEstimator, "__call__", slow)
    args = ("stream", video, "--ckpt", demo_ckpt, "--poses", poses, "--window", 16, "--stride", 16,
            "--max-windows", 3, "--device", "cpu")
    rc, stdout, stderr = _cli(capsys, *args, "--realtime")
    assert rc == 0, stderr
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert [x["end_frame"] for x in lines] == [16, 32, 48]
    dropped = lines[-1]["dropped"]
    assert 8 <= dropped <= 45 and f"{dropped} dropped" in stderr
    assert [x["dropped"] for x in lines] == sorted(x["dropped"] for x in lines)
    rc, stdout, stderr = _cli(capsys, *args)
    assert rc == 0 and " 0 dropped" in stderr
    assert all(json.loads(x)["dropped"] == 0 for x in stdout.splitlines())


def test_dead_source_and_unopenable_url(demo_ckpt, long_video, tmp_path, capsys):
    video, poses = long_video
    cut = tmp_path / "cut.mp4"
    data = video.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    rc, stdout, stderr = _cli(capsys, "stream", cut, "--ckpt", demo_ckpt, "--poses", poses, "--window", 16,
                              "--stride", 16, "--device", "cpu")
    assert rc == 2 and stderr.count("\n") == 1 and stderr.startswith("deformact stream: error: ")
    lines = [json.loads(x) for x in stdout.splitlines()]  # whatever was printed is valid JSON
    assert all(x["end_frame"] <= 175 for x in lines)
    rc, stdout, stderr = _cli(capsys, "stream", "rtsp://127.0.0.1:9/x", "--ckpt", demo_ckpt, "--timeout", 3,
                              "--device", "cpu")
    assert rc == 2 and stdout == "" and stderr.count("\n") == 1 and "rtsp://127.0.0.1:9/x" in stderr
    rc, _, stderr = _cli(capsys, "stream", tmp_path / "missing.mp4", "--ckpt", demo_ckpt, "--device", "cpu")
    assert rc == 2 and stderr.count("\n") == 1


def test_joint_mapping_by_name():
    assert joint_mapping(COCO17, PENN13)[0] == (0,)  # head <- nose
    assert [COCO17.joints[i] for (i,) in joint_mapping(COCO17, PENN13)[1:]] == list(PENN13.joints[1:])
    ntu = joint_mapping(COCO17, NTU25)
    assert ntu[0] == (11, 12) and len(ntu) == 25  # spine base = mid-hip
    kp = np.random.default_rng(0).random((2, 5, 17, 2)).astype(np.float32)
    sc = np.random.default_rng(1).random((2, 5, 17)).astype(np.float32)
    mkp, msc = map_joints(kp, sc, COCO17, NTU25)
    np.testing.assert_allclose(mkp[..., 0, :], kp[..., [11, 12], :].mean(-2))
    np.testing.assert_array_equal(msc[..., 0], sc[..., [11, 12]].min(-1))
    with pytest.raises(DataError, match="no penn13 joint for left_eye, right_eye, left_ear, right_ear"):
        joint_mapping(PENN13, COCO17)


def test_penn13_checkpoint_predicts_on_coco17_poses(penn_ckpt, demo_ckpt, long_video, tmp_path, capsys):
    video, poses = long_video
    model = torch.load(penn_ckpt, map_location="cpu", weights_only=True)
    assert model["config"]["model"]["num_joints"] == 13
    rc, stdout, stderr = _cli(capsys, "predict", video, "--ckpt", penn_ckpt, "--poses", poses, "--json",
                              "--window", 64, "--stride", 64, "--device", "cpu")
    assert rc == 0, stderr
    res = json.loads(stdout)
    assert len(res["windows"]) == 3 and res["top5"][0]["label"] in dd.PENN_ACTIONS
    # the other way round cannot be mapped: Penn-13 poses have no eyes or ears for a COCO-17 model
    ann = dd.load_pyskl(poses)["annotations"][0]
    penn = dict(ann)
    penn["keypoint"], penn["keypoint_score"] = map_joints(ann["keypoint"], ann["keypoint_score"], COCO17, PENN13)
    dd.save_pyskl({"split": {}, "annotations": [penn]}, tmp_path / "penn13.pkl")
    rc, stdout, stderr = _cli(capsys, "predict", video, "--ckpt", demo_ckpt, "--poses", tmp_path / "penn13.pkl",
                              "--device", "cpu")
    assert rc == 2 and stdout == "" and stderr.count("\n") == 1
    assert "cannot map penn13 poses to the coco17 layout" in stderr


# ------------------------------------------------------------------ outputs and odd inputs (docs/FAILURES.md)


def _one_error(capsys, prog: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"deformact {prog}: error: "), captured.err
    return err[0]


def test_outputs_never_overwrite_an_input(demo_ckpt, small_video, tmp_path, capsys):
    """--out naming the input video (itself, a symlink or a hard link to it) is refused before any
    work; the input keeps its bytes. The same for explain and extract-poses."""
    import os

    video, ann = small_video
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(video.read_bytes())
    before = clip.read_bytes()
    dd.save_pyskl({"annotations": [ann]}, tmp_path / "poses.pkl")
    (tmp_path / "link.mp4").symlink_to(clip)
    os.link(clip, tmp_path / "hard.mp4")
    base = ["--ckpt", str(demo_ckpt), "--poses", str(tmp_path / "poses.pkl"), "--no-progress"]
    for out in (clip, tmp_path / "link.mp4", tmp_path / "hard.mp4", tmp_path / "." / "clip.mp4"):
        assert cli.main(["predict", str(clip), *base, "--out", str(out)]) == 2
        assert "is the input" in _one_error(capsys, "predict")
    assert cli.main(["predict", str(clip), *base, "--window", "16", "--timeline", str(tmp_path / "poses.pkl")]) == 2
    assert "is the input" in _one_error(capsys, "predict")
    assert cli.main(["extract-poses", str(clip), "-o", str(tmp_path / "hard.mp4"), "--no-progress"]) == 2
    assert "is the input" in _one_error(capsys, "extract-poses")
    (tmp_path / "exp").mkdir()
    os.link(tmp_path / "poses.pkl", tmp_path / "exp" / "explain.json")
    assert cli.main(["explain", str(clip), *base, "--out", str(tmp_path / "exp")]) == 2
    assert "is the input" in _one_error(capsys, "explain")
    assert clip.read_bytes() == before
    # a good --out is written through a temp file and renamed: no temp is left
    assert cli.main(["predict", str(clip), *base, "--out", str(tmp_path / "annotated.mp4")]) == 0
    capsys.readouterr()
    assert (tmp_path / "annotated.mp4").stat().st_size > 0 and not list(tmp_path.glob(".*tmp*"))


def test_output_paths_are_checked_before_the_work(demo_ckpt, small_video, tmp_path, capsys, monkeypatch):
    """A folder where a file is expected, a file where a folder is expected, or a file in the
    way of the output's folder: one line, before any pose is extracted or model loaded."""
    import deformact.pose.extract as extract
    import deformact.tools.inference as inference

    def no_work(*_a, **_k):
        raise AssertionError("the work started before the output path was checked")

    monkeypatch.setattr(extract, "extract_video", no_work)
    monkeypatch.setattr(inference, "load_checkpoint", no_work, raising=False)
    video, _ = small_video
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["extract-poses", str(video), "-o", str(tmp_path / "a_dir")], "extract-poses", "is a folder"),
        (["extract-poses", str(video), "-o", str(tmp_path / "a_file" / "p.pkl")], "extract-poses", "is a file"),
        (["explain", str(video), "--ckpt", str(demo_ckpt), "--out", str(tmp_path / "a_file")], "explain", "is a file"),
        (["predict", str(video), "--ckpt", str(demo_ckpt), "--out", str(tmp_path / "a_dir")], "predict", "is a folder"),
        (["predict", str(video), "--ckpt", str(demo_ckpt), "--window", "8", "--timeline",
          str(tmp_path / "a_file" / "t.png")], "predict", "is a file"),
        (["predict", str(video), "--ckpt", str(demo_ckpt), "--timeline", str(tmp_path / "t.png")], "predict",
         "--timeline needs --window"),
    ]
    for argv, prog, words in cases:
        assert cli.main(argv) == 2, argv
        assert words in _one_error(capsys, prog)


def test_no_person_is_reported_in_json_and_text(demo_ckpt, small_video, tmp_path, capsys):
    video, ann = small_video
    empty = {**ann, "keypoint_score": np.zeros_like(ann["keypoint_score"])}
    dd.save_pyskl({"annotations": [empty]}, tmp_path / "empty.pkl")
    base = [str(video), "--ckpt", str(demo_ckpt), "--poses", str(tmp_path / "empty.pkl")]
    assert cli.main(["predict", *base, "--json", "--window", "16"]) == 0
    res = _json_out(capsys)
    assert res["persons_found"] == 0 and len(res["windows"]) == 4
    assert cli.main(["predict", *base]) == 0
    assert "no person found" in capsys.readouterr().out
    assert cli.main(["explain", *base, "--out", str(tmp_path / "exp")]) == 0
    assert "no person found" in capsys.readouterr().out
    assert json.loads((tmp_path / "exp" / "explain.json").read_text())["persons_found"] == 0
    dd.save_pyskl({"annotations": [ann]}, tmp_path / "walk.pkl")
    assert cli.main(["predict", str(video), "--ckpt", str(demo_ckpt), "--poses", str(tmp_path / "walk.pkl"),
                     "--json"]) == 0
    assert _json_out(capsys)["persons_found"] == 2


@pytest.mark.parametrize("top", [[1, 2, 3], "poses", 7, {"split": {}}, {"annotations": [1]}])
def test_poses_file_that_is_not_pyskl(demo_ckpt, small_video, tmp_path, capsys, top):
    video, _ = small_video
    dd.save_pyskl(top, tmp_path / "odd.pkl")
    assert cli.main(["predict", str(video), "--ckpt", str(demo_ckpt), "--poses", str(tmp_path / "odd.pkl")]) == 2
    err = _one_error(capsys, "predict")
    assert "odd.pkl" in err and "not a pyskl pose file" in err


def test_out_on_a_one_pixel_video(demo_ckpt, tmp_path, capsys):
    """A 1 x 1 video: predict (no person) answers and --out writes a legible, enlarged video."""
    import av

    from deformact.io import probe

    video = tmp_path / "dot.mkv"
    with av.open(str(video), "w") as c:
        s = c.add_stream("ffv1", rate=30)
        s.width = s.height = 1
        s.pix_fmt = "yuv444p"
        for i in range(20):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((1, 1, 3), i * 10, np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    ann = {"frame_dir": "dot", "label": -1, "img_shape": (1, 1), "total_frames": 20,
           "keypoint": np.zeros((1, 20, 17, 2), np.float32), "keypoint_score": np.zeros((1, 20, 17), np.float32)}
    dd.save_pyskl({"annotations": [ann]}, tmp_path / "dot.pkl")
    out = tmp_path / "dot_annotated.mp4"
    rc = cli.main(["predict", str(video), "--ckpt", str(demo_ckpt), "--poses", str(tmp_path / "dot.pkl"), "--out",
                   str(out), "--json", "--window", "10"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["persons_found"] == 0 and len(res["windows"]) == 3
    info = probe(out)
    assert min(info.width, info.height) >= 96
