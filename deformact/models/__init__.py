"""Model: the 3D deformable transformer and its parts, named after the paper."""

from __future__ import annotations

from typing import Any

from deformact.models.backbone import PositionEmbedding3D, RGBBackbone
from deformact.models.config import (
    DEFAULT_PRESET,
    PRESETS,
    ModelConfig,
    list_presets,
    make_config,
    preset_fields,
    register_preset,
)
from deformact.models.deformable import DeformableAttention3D, TokenSearch3D, trilinear_sample
from deformact.models.pose_embed import PoseEmbedding
from deformact.models.stride_attention import JointStrideAttention, TemporalStrideAttention
from deformact.models.transformer import CrossModalTokens, DeformableTransformer, DeformableTransformerBlock


def build_model(preset: str = DEFAULT_PRESET, config: ModelConfig | dict | None = None, **overrides: Any
                ) -> DeformableTransformer:
    """``build_model(preset="paper", num_classes=60)``; any ModelConfig field can be overridden
    (``preset`` defaults to :data:`DEFAULT_PRESET`; :func:`list_presets` names them all).
    ``config=`` (a ModelConfig or its dict) rebuilds a model exactly, e.g. from a checkpoint."""
    if config is not None:
        cfg = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(dict(config))
        if overrides:
            cfg = ModelConfig.from_dict({**cfg.to_dict(), **overrides})
    else:
        cfg = make_config(preset, **overrides)
    return DeformableTransformer(cfg)


__all__ = [
    "DEFAULT_PRESET", "PRESETS", "CrossModalTokens", "DeformableAttention3D", "DeformableTransformer",
    "DeformableTransformerBlock", "JointStrideAttention", "ModelConfig", "PoseEmbedding",
    "PositionEmbedding3D", "RGBBackbone", "TemporalStrideAttention", "TokenSearch3D", "build_model",
    "list_presets", "make_config", "preset_fields", "register_preset", "trilinear_sample",
]
