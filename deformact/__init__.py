"""deformact: the 3D deformable transformer for RGB + pose action recognition
(Kim, Ahn, Ko, "Cross-Modal Learning with 3D Deformable Attention for Action Recognition", ICCV 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deformact.models import DeformableTransformer, ModelConfig, build_model

__version__ = "0.1.0"


def load_checkpoint(path: str | Path, **kwargs: Any) -> DeformableTransformer:
    """A trained model in eval mode from a checkpoint (weights only; nothing in the file runs)."""
    from deformact.engine.checkpoint import load_checkpoint as _load

    return _load(path, **kwargs)


__all__ = ["DeformableTransformer", "ModelConfig", "__version__", "build_model", "load_checkpoint"]
