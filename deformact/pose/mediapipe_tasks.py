"""Many people per frame with mediapipe 0.10.14's Tasks ``PoseLandmarker`` (``num_poses`` > 1).

The Tasks API needs a ``.task`` bundle; none ships in the wheel, and nothing is downloaded: the
bundle is built once into a cache folder from the wheel's own two BlazePose models
(``pose_detection.tflite``, ``pose_landmark_full.tflite``), after giving them the image
normalisation metadata the Tasks graph reads (mediapipe's own metadata writers: detector inputs
(x - 127.5) / 127.5, landmark model inputs x / 255), zipped as ``pose_detector.tflite`` +
``pose_landmarks_detector.tflite``.

The landmarker runs in IMAGE mode (the detector on every frame): VIDEO mode's tracking keeps only
the first person once it has one. :func:`deformact.pose.tracking.track_persons` then gives the
people stable ids across frames.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .._native import quiet_native_stderr
from .base import PoseEstimator, register_estimator
from .mediapipe_pose import MEDIAPIPE_TO_COCO17, _import_mediapipe


def cache_dir() -> Path:
    """``$DEFORMACT_CACHE`` or ``$XDG_CACHE_HOME/deformact`` (``~/.cache/deformact``)."""
    if os.environ.get("DEFORMACT_CACHE"):
        return Path(os.environ["DEFORMACT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deformact"


def _with_image_metadata(path: Path, mean: float, std: float, name: str) -> bytes:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, writer_utils

    buf = bytearray(path.read_bytes())
    writer = metadata_writer.MetadataWriter.create(buf).add_general_info(name).add_image_input([mean], [std])
    for _ in writer_utils.get_output_tensor_types(buf):
        writer.add_feature_output()
    return bytes(writer.populate()[0])


def pose_task_bundle() -> Path:
    """The ``.task`` bundle built from the installed wheel's models (once; keyed by their hash)."""
    import mediapipe
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    root = Path(mediapipe.__file__).parent / "modules"
    det, lmk = root / "pose_detection" / "pose_detection.tflite", root / "pose_landmark" / "pose_landmark_full.tflite"
    key = hashlib.sha256(det.read_bytes() + lmk.read_bytes()).hexdigest()[:16]
    out = cache_dir() / f"pose_landmarker_{key}.task"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        models = {"pose_detector.tflite": _with_image_metadata(det, 127.5, 127.5, "pose_detector"),
                  "pose_landmarks_detector.tflite": _with_image_metadata(lmk, 0.0, 255.0, "pose_landmarks_detector")}
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        model_asset_bundle_utils.create_model_asset_bundle(models, str(tmp))
        os.replace(tmp, out)
    return out


@register_estimator("mediapipe-multi")
class MediaPipeMultiPose(PoseEstimator):
    """BlazePose through the Tasks PoseLandmarker, up to ``max_persons`` people per frame (IMAGE mode).

    Args:
        max_persons: ``num_poses`` of the landmarker.
        min_score: a person is kept when the mean visibility of its 17 COCO joints reaches this.
        min_detection_confidence: the person detector's threshold.
    """

    def __init__(self, *, max_persons: int = 4, min_score: float = 0.3, min_detection_confidence: float = 0.5) -> None:
        _import_mediapipe()
        self.max_persons, self.min_score = int(max_persons), float(min_score)
        self.min_detection_confidence = float(min_detection_confidence)
        self._landmarker = None

    def _build(self):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        opts = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(pose_task_bundle())), running_mode=vision.RunningMode.IMAGE,
            num_poses=self.max_persons, min_pose_detection_confidence=self.min_detection_confidence)
        self._mp = mp
        return vision.PoseLandmarker.create_from_options(opts)

    def close(self) -> None:
        if self._landmarker is not None:
            with quiet_native_stderr():
                self._landmarker.close()
            self._landmarker = None

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        h, w = frame.shape[:2]
        with quiet_native_stderr():
            if self._landmarker is None:
                self._landmarker = self._build()
            image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
            result = self._landmarker.detect(image)
        people = []
        for landmarks in result.pose_landmarks:
            lm = np.array([(p.x * w, p.y * h, p.visibility) for p in landmarks], np.float32)
            coco = lm[list(MEDIAPIPE_TO_COCO17)]
            if coco[:, 2].mean() < self.min_score:
                continue
            coco[:, 0] = coco[:, 0].clip(0, w - 1)
            coco[:, 1] = coco[:, 1].clip(0, h - 1)
            people.append(coco)
        return people
