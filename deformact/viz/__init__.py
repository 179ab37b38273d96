"""Visualization and inference on raw videos: skeleton drawing, annotated mp4, explainability
pictures (``deformact predict`` / ``deformact explain``)."""

from .draw import PERSON_COLORS, draw_label, draw_poses, draw_skeleton, skeleton_edges
from .video import write_video

__all__ = ["PERSON_COLORS", "draw_label", "draw_poses", "draw_skeleton", "skeleton_edges", "write_video"]
