"""NTU-scale data benchmark (``deformact bench --data-only --ntu-scale``): a pyskl file the size of
NTU-60 (56,880 clips, 1-2 people, 30-300 frames, COCO-17, float16 like pyskl's HRNet files) is
generated once, then timed: ``build_dataset``, pose clips/s through a DataLoader with 2 worker
processes, and the memory of the main process and its workers as PSS (proportional set size:
pages shared between processes counted once overall, so the sum is what the machine holds).

Goals (docs/PERFORMANCE.md, "NTU-scale data"): build <= 30 s, >= 3,000 clips/s with 2 workers,
PSS (main + workers) <= 2 x the keypoint bytes + 2 GiB.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NTU60_CLIPS = 56_880
GIB = 1024**3


def write_ntu_scale_file(path: str | os.PathLike, num_clips: int = NTU60_CLIPS, seed: int = 0) -> dict[str, Any]:
    """Write an NTU-60-sized pyskl file (splits ``train`` = 2/3, ``val`` = 1/3; 60 classes);
    returns ``{"path", "num_clips", "keypoint_bytes", "file_bytes"}``."""
    from deformact.io.pyskl import save_pyskl
    from deformact.tools.data_bench import random_annotations

    anns = random_annotations(num_clips, num_frames=(30, 300), num_persons=(1, 2), num_joints=17,
                              img_shape=(1080, 1920), num_classes=60, seed=seed, prefix="S001C001P001R001A",
                              dtype=np.float16)
    kp_bytes = sum(a["keypoint"].nbytes + a["keypoint_score"].nbytes for a in anns)
    names = [a["frame_dir"] for a in anns]
    cut = 2 * len(names) // 3
    save_pyskl({"split": {"train": names[:cut], "val": names[cut:]}, "annotations": anns}, path)
    return {"path": str(path), "num_clips": num_clips, "keypoint_bytes": int(kp_bytes),
            "file_bytes": Path(path).stat().st_size}


def write_in_child(path: str | os.PathLike, num_clips: int = NTU60_CLIPS, seed: int = 0) -> dict[str, Any]:
    """:func:`write_ntu_scale_file` in a fresh process, so that the generator's garbage does not
    count in the memory measured here."""
    code = ("import json, sys\nfrom deformact.tools.data_scale import write_ntu_scale_file\n"
            "print(json.dumps(write_ntu_scale_file(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])), allow_nan=False))")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(num_clips), str(seed)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_bytes(pid: int) -> dict[str, int]:
    """``Pss`` and ``Private`` (clean + dirty: pages this process alone holds, e.g. copied on
    write) of one process from ``/proc/PID/smaps_rollup``, in bytes; zeros when unreadable."""
    out = {"pss": 0, "private": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "Pss":
                    out["pss"] = int(rest.split()[0]) * 1024
                elif key in ("Private_Clean", "Private_Dirty"):
                    out["private"] += int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def loader_figures(ds: Any, workers: int = 2, batch_size: int = 32, epochs: float = 1.0) -> dict[str, Any]:
    """One shuffled pass (``epochs``) through a DataLoader with ``workers`` processes: clips per
    wall second, clips per CPU second of all its processes (what idle cores would sustain; the
    wall figure suffers when other work shares the cores), and the memory of the main process
    and the workers, largest sum seen (PSS) and each worker's private pages at the end."""
    import torch

    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    it = iter(loader)
    n, warm = 0, 4
    for _ in range(warm):  # let the workers start
        n += int(next(it)["label"].shape[0])
    pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
    cpu0 = [cpu_seconds(p) for p in pids]
    peak, per = 0, []
    total = int(epochs * len(ds))
    t0, last, counted = time.perf_counter(), 0.0, 0
    while n < total:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        counted += int(batch["label"].shape[0])
        n += int(batch["label"].shape[0])
        now = time.perf_counter()
        if now - last > 1.0:
            last = now
            sizes = [memory_bytes(p)["pss"] for p in pids]
            if sum(sizes) > peak:
                peak, per = sum(sizes), sizes
    wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(p) - c for p, c in zip(pids, cpu0))
    private = [memory_bytes(p)["private"] for p in pids[1:]]
    del it, loader
    return {"clips_per_s": counted / wall, "clips_per_cpu_s": counted / max(cpu, 1e-9), "workers": workers,
            "batch_size": batch_size, "pss_bytes": peak, "pss_main_bytes": per[0] if per else 0,
            "pss_workers_bytes": per[1:], "private_workers_bytes": private, "clips": counted}


def ntu_scale_bench(workdir: str | os.PathLike | None = None, num_clips: int = NTU60_CLIPS, workers: int = 2,
                    epochs: float = 1.0, frames: int = 16, keep: bool = True) -> dict[str, Any]:
    """The NTU-scale figures: the file is written (once; kept in ``workdir`` when ``keep``), then
    the dataset of its ``train`` split (pose, training pipeline) is built and read in this process."""
    import deformact.data as dd

    workdir = Path(workdir or os.environ.get("TMPDIR", "/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"ntu_scale_{num_clips}.pkl"
    meta = path.with_suffix(".meta.npy")
    if path.is_file() and meta.is_file():
        info = {"path": str(path), "num_clips": num_clips, "keypoint_bytes": int(np.load(meta)),
                "file_bytes": path.stat().st_size}
    else:
        t0 = time.perf_counter()
        info = write_in_child(path, num_clips)
        np.save(meta, np.int64(info["keypoint_bytes"]))
        info["write_s"] = round(time.perf_counter() - t0, 1)
    gc.collect()
    pss0 = memory_bytes(os.getpid())["pss"]
    t0, c0 = time.perf_counter(), time.process_time()
    ds = dd.build_dataset(type="pyskl", ann_file=str(path), split="train", modality="pose", frames=frames,
                          train=True)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    pss_built = memory_bytes(os.getpid())["pss"]
    loader = loader_figures(ds, workers=workers, epochs=epochs)
    kp = info["keypoint_bytes"]
    out = {
        "num_clips": num_clips, "train_clips": len(ds), "file_gib": round(info["file_bytes"] / GIB, 3),
        "keypoint_gib": round(kp / GIB, 3), "build_s": round(build_s, 2),
        "build_cpu_s": round(build_cpu_s, 2),
        "clips_per_s": round(loader["clips_per_s"], 1), "workers": workers,
        "clips_per_s_cpu_bound": round(loader["clips_per_cpu_s"] * min(workers, os.cpu_count() or 1), 1),
        "pss_before_build_gib": round(pss0 / GIB, 3), "pss_after_build_gib": round(pss_built / GIB, 3),
        "pss_total_gib": round(loader["pss_bytes"] / GIB, 3),
        "pss_main_gib": round(loader["pss_main_bytes"] / GIB, 3),
        "pss_workers_gib": [round(b / GIB, 3) for b in loader["pss_workers_bytes"]],
        "private_workers_gib": [round(b / GIB, 3) for b in loader["private_workers_bytes"]],
        "pss_limit_gib": round((2 * kp + 2 * GIB) / GIB, 3),
        "goals": {"build_s": 30, "clips_per_s": 3000, "pss": "<= 2 x keypoint bytes + 2 GiB"},
        "load_average": round(os.getloadavg()[0], 2),
    }
    if "write_s" in info:
        out["write_s"] = info["write_s"]
    if not keep:
        path.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
    return out
