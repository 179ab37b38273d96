"""Pose embedding: B x M x T x V x C -> pose tokens B x T' x (M V) x D (ARCHITECTURE.md, component 2).

Frames are grouped into temporal patches so the pose stream shares the RGB stream's clock T'.
Persons share all weights and get no person embedding, so person order cannot matter.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


class PoseEmbedding(nn.Module):
    def __init__(self, dim: int, joints: int, token_frames: int, channels: int = 3, temporal_patch: int = 2):
        super().__init__()
        self.temporal_patch = temporal_patch
        self.proj = nn.Sequential(nn.Linear(channels * temporal_patch, dim), nn.LayerNorm(dim))
        self.joint_embed = nn.Parameter(torch.zeros(joints, dim))  # joint type
        self.time_embed = nn.Parameter(torch.zeros(token_frames, dim))
        nn.init.trunc_normal_(self.joint_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def forward(self, pose: Tensor) -> Tensor:
        x = pose.clone()
        x[..., :2] = x[..., :2] - 0.5  # centre frame-relative coordinates on 0
        x = rearrange(x, "b m (t p) v c -> b t m v (p c)", p=self.temporal_patch)
        x = self.proj(x) + self.joint_embed  # V x D broadcasts over b, t, m
        x = x + self.time_embed[None, :, None, None]
        return rearrange(x, "b t m v d -> b t (m v) d")
