"""Data-loader throughput (``deformact bench``) and the video/annotation fixtures it and the
tests use: pose-only items/s on one core and RGB+pose clips/s from H.264 video.

Targets: >= 2,000 pose items/s per core; >= 20 clips/s of 16 frames at 224 x 224 on 2 cores.
"""

from __future__ import annotations

import functools
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deformact.io.pyskl import save_pyskl
from deformact.io.video_write import write_video


def make_video(path: str | os.PathLike, num_frames: int = 100, width: int = 456, height: int = 256,
               fps: int = 30, gop: int = 32, seed: int = 0, preset: str = "veryfast") -> Path:
    """Write an H.264 test video (yuv420p) with moving textured content."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3)).astype(np.uint8)
    tex = np.kron(tex, np.ones((8, 8, 1), np.uint8))
    frames = np.stack([tex[(i * 2) % 16:(i * 2) % 16 + height, (i * 3) % 16:(i * 3) % 16 + width]
                       for i in range(num_frames)])
    write_video(path, frames, fps, codec="libx264", gop=gop, preset=preset)
    return Path(path)


def random_annotations(n: int, num_frames: int | tuple[int, int] = 100, num_persons: int | tuple[int, int] = 2,
                       num_joints: int = 17, img_shape: tuple[int, int] = (256, 456), num_classes: int = 10,
                       seed: int = 0, prefix: str = "clip", dtype: Any = np.float32) -> list[dict[str, Any]]:
    """pyskl annotations with plausible random walks of joints (for benchmarks and tests).

    ``num_frames`` / ``num_persons`` may be (low, high) ranges (inclusive), drawn per clip, e.g.
    NTU-60's 30..300 frames and 1..2 people; ``dtype`` of keypoint and keypoint_score (pyskl's
    HRNet files use float16)."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    ranged = not isinstance(num_frames, int) or not isinstance(num_persons, int)
    anns = []
    for i in range(n):
        t, m = num_frames, num_persons
        if ranged:
            t = int(rng.integers(t[0], t[1] + 1)) if not isinstance(t, int) else t
            m = int(rng.integers(m[0], m[1] + 1)) if not isinstance(m, int) else m
        base = rng.uniform([0.3 * w, 0.3 * h], [0.7 * w, 0.7 * h], (m, 1, 1, 2))
        walk = np.cumsum(rng.normal(0, 2.0, (m, t, num_joints, 2)), axis=1)
        spread = rng.normal(0, 0.08 * h, (m, 1, num_joints, 2))
        anns.append({
            "frame_dir": f"{prefix}{i:05d}", "label": int(i % num_classes), "total_frames": t,
            "img_shape": img_shape, "original_shape": img_shape,
            "keypoint": (base + spread + walk).astype(dtype),
            "keypoint_score": rng.uniform(0.3, 1.0, (m, t, num_joints)).astype(dtype),
        })
    return anns


def _time_items(ds, seconds: float, warmup: int = 20) -> tuple[float, float]:
    """(items per wall second, items per CPU second) of ``ds[i]`` in this process."""
    for i in range(min(warmup, len(ds))):
        ds[i]
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        ds[n % len(ds)]
        n += 1
    return n / (time.perf_counter() - t0), n / max(time.process_time() - c0, 1e-9)


def pose_throughput(seconds: float = 3.0, frames: int = 16, num_frames: int = 100, train: bool = True,
                    workdir: str | None = None) -> tuple[float, float]:
    """Pose-only (items per wall second, items per CPU second) in this process (one core):
    NTU-like 2-person COCO-17 clips of ``num_frames`` frames, ``frames`` sampled, training augmentation."""
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
                                             drop_last=True)
        ru0, cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
        it, n, warm = iter(loader), 0, 2
        for _ in range(warm):  # let the workers start
            next(it)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                continue
            n += batch["rgb"].shape[0]
        wall = time.perf_counter() - t0
        del it  # joins the workers, so their CPU time is counted below
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (time.process_time() - cpu0 + ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime)
        cpu_per_clip = cpu / (n + warm * batch_size)
        return {"clips_per_s": n / wall, "cpu_s_per_clip": cpu_per_clip, "workers": workers,
                "video": f"{w}x{h} H.264, {video_frames} frames, gop {gop}"}


def real_video_throughput(path: str | os.PathLike, seconds: float = 5.0, frames: int = 16,
                          image_size: int = 224) -> float:
    """16-frame clips/s decoded from one real video file in this process (e.g. 1080p NTU)."""
    from deformact.data.sampling import segment_indices
    from deformact.data.transforms import center_box, crop_frames, decode_plan, decode_size, to_tensor
    from deformact.io.video import count_frames, probe
    from deformact.io.video_read import read_clip

    n_frames = count_frames(path)
    info = probe(path)
    box = center_box((0, 0, 1, 1), (info.width, info.height))
    size_fn = functools.partial(decode_size, box, image_size)
    rng = np.random.default_rng(0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        fr, src = read_clip(path, segment_indices(n_frames, frames, 1, rng)[0], size_fn)
        to_tensor(crop_frames(fr, decode_plan(box, src, image_size)[1], image_size))
        n += 1
    return n / (time.perf_counter() - t0)


def loader_throughput(quick: bool = False, workers: int = 2) -> dict[str, Any]:
    """The data-path figures for ``deformact bench``.

    ``pose_items_per_s_per_core``: pose-only items per CPU second (target >= 2,000);
    ``rgb_clips_per_s``: 16-frame 224^2 RGB+pose training clips per second through a DataLoader
    with ``workers`` processes (target >= 20 on 2 cores); ``rgb_clips_per_s_2cores_cpu_bound``:
    2 / CPU seconds per clip, what two otherwise idle cores sustain.
    """
    pose_wall, pose_cpu = pose_throughput(1.0 if quick else 3.0)
    rgb = rgb_throughput(3.0 if quick else 10.0, workers=workers, num_items=128 if quick else 256)
    return {
        "pose_items_per_s_per_core": round(pose_cpu, 1), "pose_items_per_s_wall": round(pose_wall, 1),
        "rgb_clips_per_s": round(rgb["clips_per_s"], 2), "rgb_workers": workers,
        "rgb_clips_per_s_2cores_cpu_bound": round(2.0 / rgb["cpu_s_per_clip"], 2),
        "rgb_video": rgb["video"], "targets": {"pose_items_per_s_per_core": 2000, "rgb_clips_per_s_2cores": 20},
    }
