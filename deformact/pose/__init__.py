"""2D pose estimation for raw videos (``deformact extract-poses``, ``deformact predict``)."""

from .base import COCO17, PoseEstimator, available_estimators, build_estimator, register_estimator
from .mediapipe_pose import MEDIAPIPE_TO_COCO17, MediaPipePose
from .tracking import track_persons
from .video import VideoError, VideoInfo, iter_frames, list_videos, probe, read_frames

__all__ = [
    "COCO17", "MEDIAPIPE_TO_COCO17", "MediaPipePose", "PoseEstimator", "VideoError", "VideoInfo",
    "available_estimators", "build_estimator", "iter_frames", "list_videos", "probe", "read_frames",
    "register_estimator", "track_persons",
]  # fmt: skip
