"""Loader throughput: pose-only items/s on one core and RGB+pose clips/s from H.264 video.

Used by ``scripts/bench_data.py`` (targets: >= 2,000 pose items/s per core; >= 20 clips/s of 16
frames at 224 x 224 on 2 cores).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from .pyskl import save_pyskl


def make_video(path: str | os.PathLike, num_frames: int = 100, width: int = 456, height: int = 256,
               fps: int = 30, gop: int = 32, seed: int = 0, preset: str = "veryfast") -> Path:
    """Write an H.264 test video (yuv420p) with moving textured content; frame ``i`` carries its
    index as the brightness of the 8-pixel bar at the top (value 2 * i % 256) so tests can check
    which frame was decoded."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
    tex = np.kron(tex, np.ones((8, 8, 1), np.uint8))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": preset, "crf": "23", "threads": "1"}
        for i in range(num_frames):
            dy, dx = (i * 2) % 16, (i * 3) % 16
            img = np.ascontiguousarray(tex[dy:dy + height, dx:dx + width])
            img[:8] = (2 * i) % 256
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def random_annotations(n: int, num_frames: int = 100, num_persons: int = 2, num_joints: int = 17,
                       img_shape: tuple[int, int] = (256, 456), num_classes: int = 10,
                       seed: int = 0, prefix: str = "clip") -> list[dict[str, Any]]:
    """pyskl annotations with plausible random walks of joints (for benchmarks and tests)."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    anns = []
    for i in range(n):
        base = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h], (num_persons, 1, 1, 2))
        walk = np.cumsum(rng.normal(0, 2.0, (num_persons, num_frames, num_joints, 2)), axis=1)
        spread = rng.normal(0, 0.08 * h, (num_persons, 1, num_joints, 2))
        anns.append({
            "frame_dir": f"{prefix}{i:05d}", "label": int(i % num_classes), "total_frames": num_frames,
            "img_shape": img_shape, "original_shape": img_shape,
            "keypoint": (base + spread + walk).astype(np.float32),
            "keypoint_score": rng.uniform(0.3, 1.0, (num_persons, num_frames, num_joints)).astype(np.float32),
        })
    return anns


def _time_items(ds, seconds: float, warmup: int = 20) -> float:
    for i in range(min(warmup, len(ds))):
        ds[i]
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ds[n % len(ds)]
        n += 1
    return n / (time.perf_counter() - t0)


def pose_throughput(seconds: float = 3.0, frames: int = 16, num_frames: int = 100, train: bool = True,
                    workdir: str | None = None) -> float:
    """Pose-only items/s in this process (one core): NTU-like 2-person COCO-17 clips."""
    import deformact.data as dd

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ann = Path(tmp) / "pose.pkl"
        anns = random_annotations(512, num_frames, img_shape=(1080, 1920))
        save_pyskl({"split": {"train": [a["frame_dir"] for a in anns]}, "annotations": anns}, ann)
        ds = dd.build_dataset(type="pyskl", ann_file=str(ann), split="train", modality="pose", frames=frames,
                              train=train)
        return _time_items(ds, seconds)


def rgb_throughput(seconds: float = 10.0, workers: int = 2, frames: int = 16, image_size: int = 224,
                   batch_size: int = 8, num_videos: int = 8, num_items: int = 256, video_frames: int = 100,
                   video_size: tuple[int, int] = (456, 256), gop: int = 32, train: bool = True,
                   workdir: str | None = None) -> dict[str, float]:
    """RGB+pose clips/s through a DataLoader with ``workers`` processes (0 = in this process).

    ``num_videos`` H.264 files are encoded once and hard-linked to ``num_items`` distinct names, so
    every item opens, indexes and decodes a video (no per-file cache hits), as with a real dataset.
    """
    import torch

    import deformact.data as dd

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "videos"
        root.mkdir()
        w, h = video_size
        bases = [make_video(root / f"base{i}.mp4", video_frames, w, h, gop=gop, seed=i) for i in range(num_videos)]
        anns = random_annotations(num_items, video_frames, img_shape=(h, w))
        for i, a in enumerate(anns):
            dst = root / f"{a['frame_dir']}.mp4"
            try:
                os.link(bases[i % num_videos], dst)
            except OSError:
                dst.write_bytes(bases[i % num_videos].read_bytes())
        ann = Path(tmp) / "ann.pkl"
        save_pyskl({"split": {"train": [a["frame_dir"] for a in anns]}, "annotations": anns}, ann)
        ds = dd.build_dataset(type="pyskl", ann_file=str(ann), split="train", modality="rgb+pose", frames=frames,
                              image_size=image_size, video_root=str(root), train=train)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             persistent_workers=workers > 0, drop_last=True)
        n, t0, warm = 0, None, 2
        while t0 is None or time.perf_counter() - t0 < seconds:
            for batch in loader:
                if warm > 0:  # let the workers start
                    warm -= 1
                    if warm == 0:
                        t0 = time.perf_counter()
                    continue
                n += batch["rgb"].shape[0]
                if time.perf_counter() - t0 >= seconds:
                    break
        rate = n / (time.perf_counter() - t0)
        del loader
        return {"clips_per_s": rate, "workers": workers, "video": f"{w}x{h} H.264, {video_frames} frames, gop {gop}"}


def real_video_throughput(path: str | os.PathLike, seconds: float = 5.0, frames: int = 16,
                          image_size: int = 224) -> float:
    """16-frame clips/s decoded from one real video file in this process (e.g. 1080p NTU)."""
    from .sampling import segment_indices
    from .transforms import center_box, crop_frames, decode_plan, to_tensor
    from .video import count_frames, read_frames

    n_frames = count_frames(path)
    rng = np.random.default_rng(0)
    plan: dict[str, Any] = {}

    def size_fn(sw: int, sh: int) -> tuple[int, int]:
        dec, plan["pbox"], _ = decode_plan(center_box((0, 0, 1, 1), (sw, sh)), (sw, sh), image_size)
        return dec

    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        fr, _ = read_frames(path, segment_indices(n_frames, frames, 1, rng)[0], size_fn)
        to_tensor(crop_frames(fr, plan["pbox"], image_size))
        n += 1
    return n / (time.perf_counter() - t0)
