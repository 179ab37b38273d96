"""``deformact explain VIDEO --ckpt PATH --out DIR``: the paper's explainability pictures.

Writes joint_importance.png, temporal_attention.png, sampling_points.png, top5.png (those the
model's modality has) and explain.json with the numbers behind them, for the checkpoint's
centre test clip.
"""

from __future__ import annotations

import argparse

PROG = "deformact explain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="video file")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt)")
    parser.add_argument("--out", required=True, help="output folder for the PNGs and explain.json")
    parser.add_argument("--poses", help="pyskl pickle with this video's poses (default: extract with mediapipe)")
    parser.add_argument("--labels", help="label map replacing the checkpoint's class names")
    parser.add_argument("--estimator", default="mediapipe", help="pose estimator when --poses is not given")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from deformact.io import load_pyskl
    from deformact.tools.inference import load_model, one_line_warnings, predict_video
    from deformact.viz.explain import explain

    model = load_model(args.ckpt, args.labels, args.device)
    poses = load_pyskl(args.poses) if args.poses else None
    with one_line_warnings(PROG):
        pred = predict_video(model, args.video, poses, estimator=args.estimator, return_maps=True, num_clips=1,
                             progress=not args.no_progress)
    info = explain(pred, args.out, checkpoint=str(args.ckpt))
    best = info["top5"][0]
    print(f"{pred.video.name}: {best['label']} ({best['score']:.3f})")
    for name in [*info["pictures"], "explain.json"]:
        print(f"wrote {args.out.rstrip('/')}/{name}")
    return 0
