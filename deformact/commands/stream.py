"""``deformact stream SOURCE --ckpt PATH``: one JSON line per window of a live source.

SOURCE is a video file (read as if live), a V4L2 camera (``/dev/video0``) or a URL FFmpeg opens
(rtsp, http). Each line: ``{"start_frame", "end_frame", "t_s", "label", "score", "top5",
"latency_ms", "persons", "dropped"}``; a summary (frames, windows, dropped frames, real-time
factor) goes to stderr at the end. Ctrl-C stops cleanly; a source that cannot be opened or dies
is one error line on stderr, and the lines printed before it stay valid JSON.
"""

from __future__ import annotations

import argparse
import sys

PROG = "deformact stream"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="video file, /dev/videoN or rtsp://, http:// ... URL")
    parser.add_argument("--ckpt", required=True, help="checkpoint (.pt) written by deformact train")
    parser.add_argument("--labels", help="label map replacing the checkpoint's class names")
    parser.add_argument("--window", type=int, default=48, help="frames per window (default 48)")
    parser.add_argument("--stride", type=int, help="frames between windows (default: half the window)")
    parser.add_argument("--max-windows", type=int, help="stop after this many windows")
    parser.add_argument("--realtime", action="store_true",
                        help="keep up with the source: pace files at their frame rate, drop late frames")
    parser.add_argument("--pose-frames", choices=["all", "sampled"], default="all",
                        help="estimate poses on every frame (all, the default) or only on the frames the "
                             "model samples from some window (sampled: about clip_len / stride of them)")
    parser.add_argument("--poses", help="replay this pyskl file's poses for SOURCE instead of estimating them")
    parser.add_argument("--estimator", default="mediapipe", help="pose estimator (default mediapipe)")
    parser.add_argument("--max-persons", type=int, help="people to track (default: the checkpoint's M)")
    parser.add_argument("--max-side", type=int, default=640, help="decode frames at most this long (default 640)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a network source")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N")


def main(args: argparse.Namespace) -> int:
    from deformact.errors import InferenceError
    from deformact.io import jsonout
    from deformact.tools.inference import load_model, one_line_warnings
    from deformact.tools.poses import make_estimator
    from deformact.tools.stream import ReplayEstimator, open_source, replay_annotation, run_stream

    if args.max_windows is not None and args.max_windows < 1:
        raise InferenceError("--max-windows must be >= 1")
    model = load_model(args.ckpt, args.labels, args.device)
    open_source(args.source, args.timeout).close()  # fail on a dead source before loading the estimator
    if args.poses:
        est = ReplayEstimator(annotation=replay_annotation(args.poses, args.source))
    else:
        est = make_estimator(args.estimator, args.max_persons or model.config.num_persons)

    def emit(line: dict) -> None:
        sys.stdout.write(jsonout.dumps(line, what="stream JSON line") + "\n")
        sys.stdout.flush()

    try:
        with one_line_warnings(PROG):
            stats = run_stream(model, args.source, est, emit, window=args.window,
                               stride=args.stride or max(1, args.window // 2), max_windows=args.max_windows,
                               realtime=args.realtime, max_persons=args.max_persons, max_side=args.max_side,
                               timeout_s=args.timeout, pose_frames=args.pose_frames)
    finally:
        est.close()
    print(f"{PROG}: {stats.summary()}", file=sys.stderr)
    return 130 if stats.interrupted else 0
