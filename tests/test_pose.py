"""Pose extraction: the real NTU clips through mediapipe, the pyskl file it writes, bad videos,
the tracker and the estimator plug-in point."""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import deformact.data as dd
from deformact import cli
from deformact.io import write_video
from deformact.pose import PoseEstimator, build_estimator, register_estimator, track_persons
from deformact.pose.extract import NoPersonWarning, extract_video
from deformact.pose.tracking import box_iou, person_box

ONE = "S001C001P001R001A001_rgb.avi"  # one person drinking, 103 frames
TWO = "ntu_sample.avi"  # two people handing over a hat, 72 frames


@functools.cache
def extract_ntu(shared: str) -> Path:
    """Both NTU clips through ``deformact extract-poses``, once per process (test_apps reuses it)."""
    out = Path(tempfile.mkdtemp(prefix="deformact-test-poses-")) / "ntu.pkl"
    atexit.register(shutil.rmtree, out.parent, ignore_errors=True)
    videos = Path(shared) / "videos"
    rc = cli.main(["extract-poses", str(videos / ONE), str(videos / TWO), "-o", str(out), "--no-progress"])
    assert rc == 0
    return out


@pytest.fixture(scope="session")
def ntu_poses(shared_dir):
    """(pose file, {frame_dir: annotation}) read back with the safe pyskl loader."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    out = extract_ntu(str(shared_dir))
    return out, {a["frame_dir"]: a for a in dd.load_pyskl(out)["annotations"]}


def _person_present(ann: dict, min_score: float = 0.5) -> np.ndarray:
    """M x T: mean joint score of each person in each frame reaches ``min_score``."""
    return ann["keypoint_score"].mean(-1) >= min_score


def test_pyskl_format(ntu_poses):
    _, anns = ntu_poses
    assert set(anns) == {ONE[:-4], TWO[:-4]}
    for name, frames in ((ONE[:-4], 103), (TWO[:-4], 72)):
        a = anns[name]
        assert a["label"] == -1 and a["total_frames"] == frames
        assert tuple(a["img_shape"]) == tuple(a["original_shape"]) == (1080, 1920)
        assert a["keypoint"].shape == (2, frames, 17, 2) and a["keypoint"].dtype == np.float32
        assert a["keypoint_score"].shape == (2, frames, 17) and a["keypoint_score"].dtype == np.float32
        assert np.isfinite(a["keypoint"]).all()
        assert (a["keypoint_score"] >= 0).all() and (a["keypoint_score"] <= 1).all()
        seen = a["keypoint_score"] > 0
        kp = a["keypoint"]
        assert (kp[..., 0][seen] >= 0).all() and (kp[..., 0][seen] <= 1919).all()
        assert (kp[..., 1][seen] >= 0).all() and (kp[..., 1][seen] <= 1079).all()


def test_one_person_clip(ntu_poses):
    a = ntu_poses[1][ONE[:-4]]
    present = _person_present(a)
    assert present[0].all(), f"person 0 missing in frames {np.flatnonzero(~present[0])}"
    assert present[1].mean() < 0.1  # nobody else in the room
    kp = a["keypoint"][0]
    # an upright person: nose above the hips above the ankles, in every frame
    assert (kp[:, 0, 1] < kp[:, 11:13, 1].min(1)).all() and (kp[:, 11:13, 1].max(1) < kp[:, 15:17, 1].min(1)).all()
    height = kp[:, 15:17, 1].mean(1) - kp[:, 0, 1]
    assert 250 < np.median(height) < 900  # a standing adult in a 1080p frame, not a tiny false hit


def test_two_person_clip(ntu_poses):
    a = ntu_poses[1][TWO[:-4]]
    present = _person_present(a)
    both = present.all(0)
    assert both.mean() >= 0.8, f"two people in only {both.sum()} of {both.size} frames"
    kp = a["keypoint"]
    for t in np.flatnonzero(both):  # two distinct people, not one found twice
        boxes = np.stack([person_box(np.concatenate([kp[m, t], a["keypoint_score"][m, t, :, None]], -1))
                          for m in range(2)])
        assert box_iou(boxes[:1], boxes[1:])[0, 0] < 0.5
    # stable identities: a person's hip centre never jumps by more than a tenth of the frame width
    hips = kp[:, :, 11:13, 0].mean(-1)
    for m in range(2):
        ok = present[m, 1:] & present[m, :-1]
        assert np.abs(np.diff(hips[m]))[ok].max() < 192


def test_no_person_video(tmp_path, capsys):
    pytest.importorskip("mediapipe")
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 220, 120)[:, None, None]
    frames = [np.broadcast_to(np.clip(ramp + rng.normal(0, 4, (120, 160, 1)), 0, 255), (120, 160, 3)).astype(np.uint8)
              for _ in range(12)]
    video = tmp_path / "empty_room.mp4"
    write_video(video, frames, fps=12)
    out = tmp_path / "p.pkl"
    assert cli.main(["extract-poses", str(video), "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "empty_room.mp4" in err and "no person" in err
    (a,) = dd.load_pyskl(out)["annotations"]
    assert a["total_frames"] == 12 and a["keypoint"].shape == (2, 12, 17, 2)
    assert not a["keypoint_score"].any() and not a["keypoint"].any()


def test_truncated_and_missing_videos(shared_dir, tmp_path, capsys):
    pytest.importorskip("mediapipe")
    cut = tmp_path / "cut.avi"
    cut.write_bytes((shared_dir / "videos" / ONE).read_bytes()[:200_000])
    out = tmp_path / "p.pkl"
    rc = cli.main(["extract-poses", str(cut), str(tmp_path / "gone.mp4"), "-o", str(out), "--no-progress"])
    assert rc == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert "Traceback" not in "\n".join(lines)
    cut_lines = [ln for ln in lines if "cut.avi" in ln]
    assert len(cut_lines) == 1 and "truncated" in cut_lines[0] and cut_lines[0].startswith("deformact extract-poses:")
    assert sum("gone.mp4" in ln for ln in lines) == 1
    assert not out.exists()  # nothing good to write


def test_garbage_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(5000))
    with register_fake():
        assert cli.main(["extract-poses", str(bad), "-o", str(tmp_path / "p.pkl"), "--estimator", "fake-centre"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "noise.mp4" in err[0]  # the file's error + the summary


# ------------------------------------------------------------------- plug-in point, tracker (no mediapipe)


class CentrePose(PoseEstimator):
    """One fake person whose joints sit at the centre of whatever frame it gets."""

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        return [np.tile(np.array([[w / 2, h / 2, 0.9]], np.float32), (17, 1))]


class register_fake:  # noqa: N801 - context manager used like a function
    def __enter__(self):
        register_estimator("fake-centre")(CentrePose)

    def __exit__(self, *exc):
        from deformact.pose import base

        base._REGISTRY.pop("fake-centre", None)


def test_plugged_estimator_and_pixel_scaling(tmp_path):
    """A registered estimator runs on frames decoded small; coordinates come back in video pixels."""
    video = tmp_path / "grey.mp4"
    write_video(video, [np.full((360, 640, 3), 128, np.uint8)] * 5, fps=5)
    with register_fake():
        est = build_estimator("fake-centre")
        ann = extract_video(video, est, max_persons=2, max_side=160, progress=False)
    assert ann["img_shape"] == (360, 640) and ann["total_frames"] == 5
    np.testing.assert_allclose(ann["keypoint"][0], np.broadcast_to([320.0, 180.0], (5, 17, 2)), atol=1e-4)
    assert (ann["keypoint_score"][0] == np.float32(0.9)).all() and not ann["keypoint_score"][1].any()
    # the same class by import path
    sys.modules[__name__].CentrePose = CentrePose
    assert isinstance(build_estimator(f"{__name__}:CentrePose"), CentrePose)
    with pytest.raises(ValueError, match="unknown pose estimator"):
        build_estimator("nope")


def test_empty_video_warns(tmp_path):
    video = tmp_path / "grey.mp4"
    write_video(video, [np.full((64, 64, 3), 90, np.uint8)] * 3, fps=5)

    class Nobody(PoseEstimator):
        def __call__(self, frame):
            return []

    with pytest.warns(NoPersonWarning, match="grey.mp4"):
        ann = extract_video(video, Nobody(), progress=False)
    assert ann["keypoint"].shape == (2, 3, 17, 2) and not ann["keypoint_score"].any()


def _person(x: float, y: float, score: float = 0.9) -> np.ndarray:
    p = np.zeros((17, 3), np.float32)
    p[:, 0] = x + np.linspace(-20, 20, 17)
    p[:, 1] = y + np.linspace(-60, 60, 17)
    p[:, 2] = score
    return p


def test_tracker_keeps_identities():
    # two people walking past each other's start points, detected in a shuffled order
    frames = []
    for t in range(10):
        a, b = _person(100 + 8 * t, 200, 0.9), _person(300 - 8 * t, 200, 0.7)
        frames.append([a, b] if t % 2 else [b, a])
    frames[4] = [frames[4][0]]  # a missed detection
    kp, sc = track_persons(frames, 2)
    assert kp.shape == (2, 10, 17, 2) and sc.shape == (2, 10, 17)
    assert np.allclose(sc[0][sc[0] > 0], 0.9) and np.allclose(sc[1][sc[1] > 0], 0.7)  # ids never swap
    assert (sc[0] > 0).all(-1).sum() + (sc[1] > 0).all(-1).sum() == 19
    # more people than slots: the most confident are kept
    kp, sc = track_persons([[_person(0, 0, 0.3), _person(100, 0, 0.8), _person(200, 0, 0.6)]], 2)
    assert sorted(sc[:, 0, 0].tolist()) == pytest.approx([0.6, 0.8])


def test_missing_mediapipe_message(monkeypatch):
    from deformact.pose import mediapipe_pose

    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps mediapipe==0\.10\.14"):
        mediapipe_pose._import_mediapipe()


def test_frames_where_the_estimator_loses_the_person_are_masked_per_frame(tmp_path):
    """Extraction writes zero scores where nobody was found; the pipeline turns them into a
    per-frame person mask (M x T) that the model masks (garbage there cannot change the logits)."""
    import torch

    import deformact
    from deformact.data import build_test_pipeline

    video = tmp_path / "blink.mp4"
    bright = [i % 3 != 1 for i in range(12)]  # the person is lost in every third frame
    write_video(video, [np.full((64, 64, 3), 200 if b else 20, np.uint8) for b in bright], fps=12)

    class SeenInBrightFrames(CentrePose):
        def __call__(self, frame):
            return super().__call__(frame) if frame.mean() > 100 else []

    ann = extract_video(video, SeenInBrightFrames(), max_persons=2, progress=False)
    assert (ann["keypoint_score"][0].any(-1) == np.array(bright)).all()
    item = build_test_pipeline({"modality": "pose", "frames": 12, "num_persons": 2})(ann)
    assert item["person_mask"].tolist() == [bright, [False] * 12]
    model = deformact.build_model("demo", num_classes=3, modality="pose", frames=12).eval()
    x = {"pose": item["pose"][None], "person_mask": item["person_mask"][None]}
    lost = ~x["person_mask"][..., None, None]
    with torch.no_grad():
        ref = model(**x)
        out = model(pose=torch.where(lost, torch.randn_like(x["pose"]) * 50, x["pose"]), person_mask=x["person_mask"])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_staged_cascade_gives_exactly_the_sequential_people(shared_dir):
    """The cascade with the decoder and each tracker in a thread of its own
    (MediaPipePose.stream) finds exactly the people the frame-by-frame loop finds."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    from deformact.io import read_frames

    frames = read_frames(shared_dir / "videos" / TWO, 640)[:30]
    with build_estimator("mediapipe", max_persons=2) as est:
        seq = [est(f) for f in frames]
        est.reset()
        piped = est.estimate(iter(frames))
    assert len(piped) == len(seq) == 30 and sum(len(p) for p in seq) >= 50
    for a, b in zip(seq, piped):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)


def test_frames_left_out_pass_through_the_cascade_as_none(shared_dir):
    """A None frame (stream --pose-frames sampled) comes out as None in its place, and the
    frames estimated get exactly the people the frame-by-frame loop finds on those frames alone."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    from deformact.io import read_frames

    frames = read_frames(shared_dir / "videos" / TWO, 640)[:24]
    keep = [i % 4 == 2 for i in range(len(frames))]  # the first frames are left out too
    with build_estimator("mediapipe", max_persons=2) as est:
        seq = [est(f) for f, k in zip(frames, keep) if k]
        est.reset()
        piped = est.estimate(f if k else None for f, k in zip(frames, keep))
    assert len(piped) == len(frames)
    assert [p is None for p in piped] == [not k for k in keep]
    got = [p for p in piped if p is not None]
    assert len(got) == len(seq) == 6 and sum(len(p) for p in seq) >= 10
    for a, b in zip(seq, got):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)


def test_xnnpack_threads_change_the_speed_not_the_poses(shared_dir, monkeypatch):
    """The trackers' TFLite models on 2 XNNPACK threads find the same joints as on one; the
    default shares the cores among the cascade's trackers (which run side by side)."""
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.14 is installed by `make install`")
    from deformact.io import read_frames
    from deformact.pose import mediapipe_pose

    frames = read_frames(shared_dir / "videos" / ONE, 640)[:8]
    people = {}
    for threads in (1, 2):
        with mediapipe_pose.MediaPipePose(max_persons=1, threads=threads) as est:
            people[threads] = [est(f) for f in frames]
            config = est._trackers[0]._graph.text_config  # the option reached both models of the built graph
            assert config.count(f"num_threads: {threads}") == 2
    for a, b in zip(people[1], people[2]):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a[0], b[0], atol=1e-3)
    monkeypatch.setattr(mediapipe_pose.os, "sched_getaffinity", lambda _pid: set(range(2)))
    assert [mediapipe_pose.default_threads(m) for m in (1, 2, 4)] == [2, 1, 1]
    monkeypatch.setattr(mediapipe_pose.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert [mediapipe_pose.default_threads(m) for m in (1, 2, 4)] == [4, 4, 4]
