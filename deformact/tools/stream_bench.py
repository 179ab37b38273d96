"""Speed of the live path (docs/PERFORMANCE.md, "Long videos and live sources"):

    python -m deformact.tools.stream_bench ONE_PERSON.avi TWO_PEOPLE.avi [--json out.json]

measures pose extraction frames/s (640-pixel frames, decoding included; 1 and 2 people, and the
many-people estimators), the per-window latency of the demo preset pose-only and RGB+pose
(one window, and per window in a batch of 16), and ``deformact stream``'s real-time factor on
the one-person file with each model (live pose estimation, nothing dropped), estimating every frame
and only the frames the model samples (``--pose-frames sampled``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deformact.io import jsonout


def extraction_fps(video: Path, estimator: str, max_persons: int, max_side: int = 640) -> dict[str, Any]:
    from deformact.pose.extract import extract_video
    from deformact.tools.poses import make_estimator

    with make_estimator(estimator, max_persons) as est:
        t0 = time.perf_counter()
        ann = extract_video(video, est, max_persons, max_side, progress=False)
        dt = time.perf_counter() - t0
    seen = (ann["keypoint_score"].max(-1) > 0).sum(0)
    return {"video": video.name, "estimator": estimator, "max_persons": max_persons,
            "fps": round(ann["total_frames"] / dt, 1), "frames_with_k_people": np.bincount(seen).tolist()}


def demo_model(modality: str) -> torch.nn.Module:
    import deformact

    model = deformact.build_model(preset="demo", num_classes=12, modality=modality).eval()
    model.class_names = [f"class_{i}" for i in range(12)]
    return model


def window_latency(model: torch.nn.Module, ann: dict, video: Path, repeats: int = 20) -> dict[str, float]:
    from deformact.io import read_frames
    from deformact.tools.windows import FileFrames, MemoryFrames, WindowPredictor

    pred = WindowPredictor(model=model, batch_size=16)
    if model.config.use_rgb:
        frames = read_frames(video, 640)
        src = MemoryFrames(frames={i: f for i, f in enumerate(frames)})
    else:
        src = FileFrames(path=video)
    spans = [(s, s + 32) for s in range(0, 64, 4)]
    pred.predict(ann, spans[:2], src)  # warm-up
    t = []
    for k in range(repeats):
        t0 = time.perf_counter()
        pred.predict(ann, [spans[k % len(spans)]], src)
        t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pred.predict(ann, spans, src)
    batched = (time.perf_counter() - t0) / len(spans)
    return {"one_window_ms": round(float(np.median(t)) * 1000, 2), "batched_per_window_ms": round(batched * 1000, 2)}


def stream_factor(model: torch.nn.Module, video: Path, window: int = 32, stride: int = 16,
                  pose_frames: str = "all") -> dict[str, Any]:
    from deformact.tools.poses import make_estimator
    from deformact.tools.stream import run_stream

    lines: list[dict] = []
    with make_estimator("mediapipe", 1) as est:
        stats = run_stream(model, str(video), est, lines.append, window=window, stride=stride, max_persons=1,
                           pose_frames=pose_frames)
    return {"pose_frames": pose_frames, "top1": [x["label"] for x in lines],
            "realtime_factor": round(stats.realtime_factor, 2),
            "realtime_factor_after_first_frame": round(stats.steady_realtime_factor, 2),
            "startup_s": round(stats.startup, 3), "frames": stats.frames, "windows": stats.windows,
            "dropped": stats.dropped, "latency_ms_median": round(float(np.median(stats.latencies)), 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from deformact.tools.inference import adapt_layout  # noqa: F401  (import cost outside the timings)

    parser = argparse.ArgumentParser(prog="python -m deformact.tools.stream_bench")
    parser.add_argument("one", type=Path, help="a video with one person")
    parser.add_argument("two", type=Path, help="a video with two people")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], choices=["extract", "multi", "latency", "stream"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out: dict[str, Any] = {"threads": torch.get_num_threads()}

    def show(key: str, value: Any) -> None:
        out.setdefault(key, []).append(value)
        print(key, jsonout.dumps(value, what=key), flush=True)

    if "extract" not in args.skip:
        show("extraction", extraction_fps(args.one, "mediapipe", 1))
        show("extraction", extraction_fps(args.two, "mediapipe", 2))
    if "multi" not in args.skip:
        for video in (args.one, args.two):
            show("extraction", extraction_fps(video, "mediapipe-multi", 4))
            show("extraction", extraction_fps(video, "mediapipe", 4))
    if "latency" not in args.skip or "stream" not in args.skip:
        from deformact.pose.extract import extract_video
        from deformact.tools.poses import make_estimator

        with make_estimator("mediapipe", 2) as est:
            ann = extract_video(args.one, est, 2, 640, progress=False)
    for modality in ("pose", "rgb+pose"):
        model = demo_model(modality)
        if "latency" not in args.skip:
            show("window_latency", {"modality": modality, **window_latency(model, ann, args.one)})
        if "stream" not in args.skip:
            for pose_frames in ("all", "sampled"):
                show("stream", {"modality": modality, **stream_factor(model, args.one, pose_frames=pose_frames)})
    if args.json:
        args.json.write_text(jsonout.dumps(out, what=str(args.json), indent=1))
    return out


if __name__ == "__main__":
    main()
