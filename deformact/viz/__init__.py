"""Visualization: skeletons and labels drawn on frames (``deformact predict --out``) and the
explainability pictures of the paper (``deformact explain``, :mod:`deformact.viz.explain`)."""

from .draw import PERSON_COLORS, draw_label, draw_poses, draw_skeleton, skeleton_edges

__all__ = ["PERSON_COLORS", "draw_label", "draw_poses", "draw_skeleton", "skeleton_edges"]
