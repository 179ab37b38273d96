"""2D pose estimation for raw videos (``deformact extract-poses``, ``deformact predict``).

Videos are read by :mod:`deformact.io` (``VideoError``, ``VideoInfo``, ``iter_frames``,
``list_videos``, ``probe`` and ``read_frames`` are re-exported here for existing callers).
"""

from deformact.data.skeletons import COCO17
from deformact.errors import VideoError
from deformact.io.video import VideoInfo, iter_frames, list_videos, probe, read_frames

from .base import PoseEstimator, available_estimators, build_estimator, register_estimator
from .mediapipe_pose import MEDIAPIPE_TO_COCO17, MediaPipePose
from .mediapipe_tasks import MediaPipeMultiPose
from .tracking import track_persons

__all__ = [
    "COCO17", "MEDIAPIPE_TO_COCO17", "MediaPipeMultiPose", "MediaPipePose", "PoseEstimator", "VideoError", "VideoInfo",
    "available_estimators", "build_estimator", "iter_frames", "list_videos", "probe", "read_frames",
    "register_estimator", "track_persons",
]  # fmt: skip
