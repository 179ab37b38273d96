"""``deformact predict VIDEO --ckpt PATH``: top-5 actions for a raw video.

Poses come from ``--poses`` (a pyskl file) or are extracted on the fly (mediapipe); clips are
sampled and cropped as the checkpoint's config says; probabilities are averaged over its test
clips. ``--out`` writes the video with the skeletons and the predicted label drawn on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

PROG = "deformact predict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file (any format PyAV reads)")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt) written by deformact train")
    parser.add_argument("--poses", help="pyskl pickle with this video's poses (default: extract with mediapipe)")
    parser.add_argument("--labels", help="label map (one class name per line) replacing the checkpoint's names")
    parser.add_argument("--json", action="store_true", help='print {"top5": [{"label", "score"}, ...]} as JSON')
    parser.add_argument("--out", help="write an annotated video (mp4) with skeletons and the prediction")
    parser.add_argument("--num-clips", type=int, help="test clips to average (default: the checkpoint's)")
    parser.add_argument("--estimator", default="mediapipe", help="pose estimator when --poses is not given")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from deformact.io import load_pyskl
    from deformact.tools.inference import load_model, one_line_warnings, predict_video, write_annotated

    t0 = time.perf_counter()
    model = load_model(args.ckpt, args.labels, args.device)
    poses = load_pyskl(args.poses) if args.poses else None
    with one_line_warnings(PROG):
        pred = predict_video(model, args.video, poses, estimator=args.estimator, num_clips=args.num_clips,
                             progress=not args.no_progress)
    total = time.perf_counter() - t0
    if args.out:
        written = write_annotated(pred, args.out)
    top5 = pred.top(5)
    if args.json:
        print(json.dumps({"top5": top5}))
    else:
        width = max(len(t["label"]) for t in top5)
        print(f"{pred.video.name}: top-5 of {len(pred.class_names)} classes "
              f"({pred.clip_probs.shape[0]} clip(s) of {pred.frame_indices.shape[-1]} frames)")
        for k, t in enumerate(top5, 1):
            print(f"  {k}. {t['label']:<{width}}  {t['score']:.4f}")
        tm, n = pred.timings, pred.clip_probs.shape[0]
        print(f"time: {total:.2f} s (poses {tm['poses']:.2f} s, clips {tm['clips']:.2f} s, "
              f"model {tm['model']:.2f} s for {n} clip(s) = {tm['model_per_clip'] * 1000:.0f} ms per clip)")
    if args.out:
        print(f"wrote {args.out} ({written} frames)", file=sys.stderr if args.json else sys.stdout)
    return 0
