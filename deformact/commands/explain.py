"""``deformact explain VIDEO --ckpt PATH --out DIR``: the paper's explainability pictures.

Writes joint_importance.png, temporal_attention.png, sampling_points.png, top5.png (those the
model's modality has) and explain.json with the numbers behind them, for the checkpoint's
centre test clip. An existing output in DIR is replaced only when an earlier ``deformact explain``
wrote it there; an input never is (docs/FAILURES.md, "Which files an output may replace").
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


OUTPUTS = ("joint_importance.png", "temporal_attention.png", "sampling_points.png", "top5.png", "explain.json")


def main(args: argparse.Namespace) -> int:
    from deformact.tools.inference import load_model, load_poses, one_line_warnings, predict_video
    from deformact.tools.outpaths import check_output_dir, claim_outputs
    from deformact.viz.explain import explain

    check_output_dir(args.out, OUTPUTS, [args.video, args.ckpt, args.poses, args.labels], kind="explain")
    model = load_model(args.ckpt, args.labels, args.device)
    poses = load_poses(args.poses) if args.poses else None
    with one_line_warnings(PROG):
        pred = predict_video(model, args.video, poses, estimator=args.estimator, return_maps=True, num_clips=1,
                             progress=not args.no_progress)
    claim_outputs(args.out, OUTPUTS, "explain")
    info = explain(pred, args.out, checkpoint=str(args.ckpt))
    info["persons_found"] = pred.persons_found
    _add_persons_found(args.out, pred.persons_found)
    best = info["top5"][0]
    print(f"{pred.video.name}: {best['label']} ({best['score']:.3f})")
    if pred.persons_found == 0:
        print("  no person found in the video: the poses are empty and this answer rests on no pose")
    for name in [*info["pictures"], "explain.json"]:
        print(f"wrote {args.out.rstrip('/')}/{name}")
    return 0


def _add_persons_found(out: str, found: int) -> None:
    """Record the number of people seen in explain.json (rewritten atomically)."""
    from pathlib import Path

    from deformact.io import jsonout
    from deformact.tools.outpaths import atomic_output
    from deformact.viz.explain import NAN_MEANS_UNDEFINED

    path = Path(out) / "explain.json"
    data = jsonout.loads(path.read_text())
    data["persons_found"] = found
    with atomic_output(path, "explain.json") as tmp:
        tmp.write_text(jsonout.dumps(data, what=str(path), indent=1, null_under=NAN_MEANS_UNDEFINED))
