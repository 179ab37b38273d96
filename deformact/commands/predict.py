"""``deformact predict VIDEO --ckpt PATH``: top-5 actions for a raw video.

Poses come from ``--poses`` (a pyskl file) or are extracted on the fly (mediapipe), once; clips
are sampled and cropped as the checkpoint's config says; probabilities are averaged over its test
clips. ``--window W --stride S`` also answers for every window of W frames (one every S frames;
see :mod:`deformact.tools.windows`), ``--timeline`` plots them. ``--out`` writes the video with
the skeletons and the prediction (per window: the current label and a score bar) drawn on it.
Output paths are checked before any work and never overwrite an input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PROG = "deformact predict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file (any format PyAV reads)")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt) written by deformact train")
    parser.add_argument("--poses", help="pyskl pickle with this video's poses (default: extract with mediapipe)")
    parser.add_argument("--labels", help="label map (one class name per line) replacing the checkpoint's names")
    parser.add_argument("--json", action="store_true", help='print {"top5": [{"label", "score"}, ...]} as JSON')
    parser.add_argument("--out", help="write an annotated video (mp4) with skeletons and the prediction")
    parser.add_argument("--window", type=int, help="also predict every window of this many frames")
    parser.add_argument("--stride", type=int, help="frames between window starts (default: half the window)")
    parser.add_argument("--timeline", help="with --window: plot the top classes' scores over time (PNG)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per model call (default 16)")
    parser.add_argument("--num-clips", type=int, help="test clips to average (default: the checkpoint's)")
    parser.add_argument("--estimator", default="mediapipe", help="pose estimator when --poses is not given")
    parser.add_argument("--max-persons", type=int, help="people to extract (default: the checkpoint's M)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_args(args: argparse.Namespace) -> None:
    """Argument combinations and output paths, before any model or video is opened."""
    from deformact.errors import InferenceError
    from deformact.tools.outpaths import check_output_file

    if args.timeline and not args.window:
        raise InferenceError("--timeline needs --window")
    if args.stride is not None and not args.window:
        raise InferenceError("--stride needs --window")
    if args.window is not None:
        from deformact.tools.windows import check_window

        check_window(args.window, args.stride if args.stride is not None else 1)
    inputs = [args.video, args.ckpt, args.poses, args.labels]
    outs = [(o, w) for o, w in ((args.out, "annotated video"), (args.timeline, "timeline")) if o]
    for out, what in outs:
        check_output_file(out, inputs, what)
    if len(outs) == 2 and Path(args.out).resolve() == Path(args.timeline).resolve():
        raise InferenceError("--out and --timeline name the same file")


def main(args: argparse.Namespace) -> int:
    from deformact.tools.inference import load_model, load_poses, one_line_warnings, predict_video, write_annotated

    check_args(args)
    t0 = time.perf_counter()
    model = load_model(args.ckpt, args.labels, args.device)
    poses = load_poses(args.poses) if args.poses else None
    with one_line_warnings(PROG):
        pred = predict_video(model, args.video, poses, estimator=args.estimator, num_clips=args.num_clips,
                             progress=not args.no_progress, max_persons=args.max_persons)
    windows = None
    if args.window:
        from deformact.tools.windows import predict_windows

        t1 = time.perf_counter()
        windows = predict_windows(model, pred.annotation, pred.video, window=args.window,
                                  stride=args.stride or max(1, args.window // 2), fps=pred.fps,
                                  batch_size=args.batch_size)
        pred.timings["windows"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    if args.timeline:
        from deformact.viz.timeline import plot_timeline

        plot_timeline(windows, args.timeline, title=f"{pred.video.name}: top classes per window")
    if args.out:
        written = write_annotated(pred, args.out, windows=windows)
    top5 = pred.top(5)
    found = pred.persons_found
    if args.json:
        from deformact.io.jsonout import dumps

        out = {"top5": top5, "persons_found": found}
        if windows is not None:
            out["windows"] = windows
        print(dumps(out, what="predict --json"))
    else:
        print_text(pred, top5, found, windows, total)
    log = sys.stderr if args.json else sys.stdout
    if args.timeline:
        print(f"wrote {args.timeline}", file=log)
    if args.out:
        print(f"wrote {args.out} ({written} frames)", file=log)
    return 0


def print_text(pred, top5: list[dict], found: int, windows: list[dict] | None, total: float) -> None:
    width = max(len(t["label"]) for t in top5)
    print(f"{pred.video.name}: top-5 of {len(pred.class_names)} classes "
          f"({pred.clip_probs.shape[0]} clip(s) of {pred.frame_indices.shape[-1]} frames)")
    if found == 0:
        print("  no person found in the video: the poses are empty and this answer rests on no pose")
    for k, t in enumerate(top5, 1):
        print(f"  {k}. {t['label']:<{width}}  {t['score']:.4f}")
    for w in windows or []:
        best = w["top5"][0]
        print(f"  window {w['start_s']:7.2f}-{w['end_s']:7.2f} s (frames {w['start_frame']}-{w['end_frame'] - 1}): "
              f"{best['label']} {best['score']:.3f}")
    tm, n = pred.timings, pred.clip_probs.shape[0]
    extra = f", {len(windows)} windows {tm['windows']:.2f} s" if windows else ""
    print(f"time: {total:.2f} s (poses {tm['poses']:.2f} s, clips {tm['clips']:.2f} s, "
          f"model {tm['model']:.2f} s for {n} clip(s) = {tm['model_per_clip'] * 1000:.0f} ms per clip{extra})")
