"""MediaPipe 0.10.14 legacy pose (BlazePose, bundled model, offline) mapped to COCO-17.

The legacy ``mediapipe.solutions.pose`` API finds one person per image. To get several people we
run a *cascade*: tracker k sees the frame with persons 1..k-1 (found by the earlier trackers in
this frame) painted out, so its detector locks onto somebody else. Each tracker keeps mediapipe's
own ROI tracking between frames; :func:`deformact.pose.tracking.track_persons` then gives people
stable ids across frames.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from functools import partial

import numpy as np

from .._native import quiet_native_stderr
from .base import PoseEstimator, register_estimator
from .tracking import box_iou, person_box

# BlazePose's 33 landmarks -> COCO-17 (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
MEDIAPIPE_TO_COCO17 = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# limbs of the 33-landmark body used to paint a found person out of the frame
_BODY_LIMBS = ((11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28),
               (15, 19), (16, 20), (27, 31), (28, 32), (11, 12), (23, 24))  # fmt: skip

INSTALL_HINT = (
    "mediapipe is not installed; add it with: .venv/bin/pip install --no-deps mediapipe==0.10.14 "
    "&& .venv/bin/pip install absl-py attrs flatbuffers 'protobuf<5' opencv-contrib-python "
    "(or `make install`). --no-deps avoids pulling jax."
)


def _import_mediapipe():
    # protobuf 4 warns on every graph run about an API mediapipe 0.10.14 still uses
    warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")
    try:
        from mediapipe.python.solutions import pose as mp_pose
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} [{e}]") from None
    return mp_pose


def default_threads(max_persons: int) -> int:
    """XNNPACK threads per tracker: the cores shared by the cascade's trackers (which run side by
    side in :meth:`MediaPipePose.stream`), 1 to 4 (the landmark model is small)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // max(1, max_persons)))


def threaded_pose_class(mp_pose, threads: int) -> type:
    """``mp_pose.Pose`` whose two TFLite models (person detector, landmarks) run on ``threads``
    XNNPACK threads: the legacy graph's InferenceCalculator defaults to one on desktop, and the
    solution API has no setting for it, so the option is written into the graph config when the
    graph is built (same model, same numbers; 40 -> 21 ms a frame with 2 threads here)."""
    from mediapipe.calculators.tensor import inference_calculator_pb2 as icpb

    class ThreadedPose(mp_pose.Pose):
        def _modify_calculator_options(self, config, calculator_params):  # called while the graph is built
            for node in config.node:
                if node.calculator.startswith("InferenceCalculator") and not node.node_options:
                    node.options.Extensions[icpb.InferenceCalculatorOptions.ext].delegate.xnnpack.num_threads = threads
            super()._modify_calculator_options(config, calculator_params)

    return ThreadedPose


def paint_out(frame: np.ndarray, landmarks: np.ndarray, fill: tuple[int, int, int], pad: float = 0.08
              ) -> None:
    """Paint one person (33 x 3 landmarks in pixels) out of ``frame`` in place.

    A plain rectangle over head, trunk and legs: a person-shaped silhouette would still fire the
    detector. Hands are left out so that a neighbour reaching across is not erased.
    """
    # head, shoulders, elbows, hips, knees, ankles
    pts = np.concatenate([landmarks[:15, :2], landmarks[23:29, :2]])
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    px, py = pad * (x1 - x0 + 1), pad * (y1 - y0 + 1)
    h, w = frame.shape[:2]
    xa, xb = int(max(x0 - px, 0)), int(min(x1 + px, w - 1)) + 1
    ya, yb = int(max(y0 - py, 0)), int(min(y1 + py, h - 1)) + 1
    frame[ya:yb, xa:xb] = fill


@register_estimator("mediapipe")
class MediaPipePose(PoseEstimator):
    """BlazePose (mediapipe 0.10.14 legacy API) for up to ``max_persons`` people per frame.

    Args:
        max_persons: how many cascade trackers to run (cost grows linearly).
        model_complexity: 0 lite, 1 full (bundled with the wheel), 2 heavy (needs a download; avoid).
        min_score: a person is kept when the mean visibility of its 17 COCO joints reaches this.
        threads: XNNPACK threads per tracker (default :func:`default_threads`).
    """

    def __init__(self, max_persons: int = 2, model_complexity: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, min_score: float = 0.3, smooth_landmarks: bool = True,
                 threads: int | None = None):
        self.max_persons = max_persons
        self.threads = int(threads or default_threads(max_persons))
        self.min_score = min_score
        self._kwargs = dict(static_image_mode=False, model_complexity=model_complexity,
                            smooth_landmarks=smooth_landmarks, enable_segmentation=False,
                            min_detection_confidence=min_detection_confidence,
                            min_tracking_confidence=min_tracking_confidence)
        self._pose = threaded_pose_class(_import_mediapipe(), self.threads)
        self._trackers: list = []

    def reset(self) -> None:
        self.close()  # graphs are (re)built on the next frame

    def close(self) -> None:
        with quiet_native_stderr():
            for t in self._trackers:
                t.close()
        self._trackers = []

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        # mediapipe's C++ side logs its graph and delegate set-up on fd 2, asynchronously
        with quiet_native_stderr():
            if not self._trackers:
                self._trackers = [self._pose(**self._kwargs) for _ in range(self.max_persons)]
            return self._process(frame)

    def _process(self, frame: np.ndarray) -> list[np.ndarray]:
        state = self._start(frame)
        for k in range(len(self._trackers)):
            state = self._stage(k, state)
        return state[3]

    @staticmethod
    def _start(frame: np.ndarray | None) -> tuple | None:
        # (frame, the image tracker k sees, the paint, the people found so far); None: not estimated
        if frame is None:
            return None
        return frame, frame, tuple(int(v) for v in frame.reshape(-1, 3).mean(0)), []

    def _stage(self, k: int, state: tuple | None) -> tuple | None:
        """Tracker k of the cascade on one frame: it sees the frame with the people found by
        trackers 0..k-1 painted out, and paints its own person out for tracker k + 1."""
        if state is None:
            return None
        frame, image, fill, people = state
        h, w = frame.shape[:2]
        res = self._trackers[k].process(image)
        if res.pose_landmarks is None:
            return state
        lm = np.array([(p.x * w, p.y * h, p.visibility) for p in res.pose_landmarks.landmark], np.float32)
        coco = lm[list(MEDIAPIPE_TO_COCO17)]
        if coco[:, 2].mean() < self.min_score:
            return state
        coco[:, 0] = coco[:, 0].clip(0, w - 1)
        coco[:, 1] = coco[:, 1].clip(0, h - 1)
        # a tracker whose ROI still sits on somebody found earlier in this frame: drop it
        if people:
            iou = box_iou(person_box(coco)[None], np.stack([person_box(p) for p in people]))
            if iou.max() > 0.5:
                return state
        people.append(coco)
        if k + 1 < len(self._trackers):
            image = image.copy() if image is frame else image
            paint_out(image, lm, fill)
        return frame, image, fill, people

    def stream(self, frames: Iterable[np.ndarray | None]) -> Iterator[list[np.ndarray] | None]:
        """As ``[self(f) for f in frames]``, the same people, with the decoder and every tracker of
        the cascade in a thread of its own: tracker k works on frame t while tracker k - 1 works
        on frame t + 1 (each tracker still sees its frames in order, so its tracking is unchanged)."""
        from deformact.io.staged import staged

        frames = iter(frames)
        for first in frames:  # frames not to estimate (None) before the first one give None
            if first is not None:
                break
            yield None
        else:
            return
        yield self(first)  # builds the graphs, whose start-up chatter is silenced, on the first frame
        stages = [partial(self._stage, k) for k in range(len(self._trackers))]
        try:
            yield from (None if state is None else state[3]
                        for state in staged(map(self._start, frames), *stages))
        finally:  # every thread has stopped here: the decoder can be closed from this one
            close = getattr(frames, "close", None)
            if close is not None:
                close()
