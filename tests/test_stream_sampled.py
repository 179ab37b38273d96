"""``deformact stream --pose-frames sampled``: the estimator runs on exactly the frames the model
samples from some window, and those frames carry the same poses as with every frame estimated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_stream import _cli, demo_ckpt, long_video  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.mark.parametrize("window,stride,windows", [(24, 12, 4), (32, 16, 3), (20, 7, 5)])
def test_pose_frames_sampled_estimates_exactly_the_frames_the_model_samples(demo_ckpt, long_video, monkeypatch,  # noqa: F811
                                                                            capsys, window, stride, windows):
    """--pose-frames sampled: the estimator runs on the frames the test-time pipeline samples from
    some window (read off WindowPredictor itself) and on no other; every other frame is skipped."""
    from deformact.tools import stream
    from deformact.tools.inference import load_model
    from deformact.tools.windows import FileFrames, WindowPredictor

    video, poses = long_video
    ann = stream.replay_annotation(poses, str(video))
    predictor = WindowPredictor(model=load_model(demo_ckpt, None, "cpu"))
    last_end = window + (windows - 1) * stride
    frames = FileFrames(path=video)
    want = {int(i) for k in range(0, last_end, stride)
            for i in predictor.window_inputs(ann, (k, k + window), frames)[1]}
    want = {i for i in want if i < last_end}
    needed = stream.sampled_frames(window, stride, 8)
    assert {n for n in range(last_end) if needed(n)} == want and len(want) < last_end
    estimated, skipped = [], []
    real_call, real_skip = stream.ReplayEstimator.__call__, stream.ReplayEstimator.skip
    monkeypatch.setattr(stream.ReplayEstimator, "__call__",
                        lambda self, f: estimated.append(self.i) or real_call(self, f))
    monkeypatch.setattr(stream.ReplayEstimator, "skip", lambda self: skipped.append(self.i) or real_skip(self))
    rc, stdout, stderr = _cli(capsys, "stream", video, "--ckpt", demo_ckpt, "--poses", poses, "--window", window,
                              "--stride", stride, "--max-windows", windows, "--pose-frames", "sampled",
                              "--device", "cpu")
    assert rc == 0, stderr
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert [x["end_frame"] for x in lines] == [window + k * stride for k in range(windows)]
    assert all(x["persons"] >= 1 for x in lines) and " 0 dropped" in stderr
    assert {i for i in estimated if i < last_end} == want
    assert {i for i in skipped if i < last_end} == set(range(last_end)) - want
    # the frames the model samples carry exactly the replayed poses in both modes
    sampled_mode = _stream_inputs(monkeypatch, capsys, demo_ckpt, video, poses, window, stride, windows, "sampled")
    all_mode = _stream_inputs(monkeypatch, capsys, demo_ckpt, video, poses, window, stride, windows, "all")
    assert len(sampled_mode) == len(all_mode) == windows
    for (ka, sa), (kb, sb) in zip(sampled_mode, all_mode):
        assert np.array_equal(ka, kb) and np.array_equal(sa, sb)


def _stream_inputs(monkeypatch, capsys, ckpt, video, poses, window, stride, windows, mode):
    """(keypoints, scores) at the sampled frames of every window a stream hands to the pipeline."""
    from deformact.tools.windows import WindowPredictor

    seen = []
    real = WindowPredictor.window_inputs

    def spy(self, ann, span, source=None, frame_offset=0):
        inputs, inds = real(self, ann, span, source, frame_offset)
        rel = inds - span[0]
        seen.append((np.asarray(ann["keypoint"])[:, rel], np.asarray(ann["keypoint_score"])[:, rel]))
        return inputs, inds

    monkeypatch.setattr(WindowPredictor, "window_inputs", spy)
    rc, _, stderr = _cli(capsys, "stream", video, "--ckpt", ckpt, "--poses", poses, "--window", window, "--stride",
                         stride, "--max-windows", windows, "--pose-frames", mode, "--device", "cpu")
    monkeypatch.setattr(WindowPredictor, "window_inputs", real)
    assert rc == 0, stderr
    return seen
