"""Pose embedding: B x M x T x V x C -> pose tokens B x T' x (M V) x D (docs/DESIGN.md).

Each person's joints are also expressed relative to that person (centre and spread over the clip,
weighted by score), so a motion reads the same wherever and however large the person is; the
frame-relative coordinates stay as extra inputs so position in the frame is not lost. Frames are
grouped into temporal patches so the pose stream shares the RGB stream's clock T'. Persons share
all weights and get no person embedding, so person order cannot matter.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


def person_relative(pose: Tensor) -> Tensor:
    """(x, y) of every joint relative to its person's score-weighted centre, over the person's
    spread, over the clip; missing joints (score 0) and absent people give zeros."""
    xy, score = pose[..., :2], pose[..., 2:3].clamp(min=0)
    total = score.sum((2, 3), keepdim=True).clamp(min=1e-6)  # B x M x 1 x 1 x 1
    centre = (xy * score).sum((2, 3), keepdim=True) / total
    spread = (((xy - centre) ** 2).sum(-1, keepdim=True) * score).sum((2, 3), keepdim=True) / total
    return (xy - centre) / spread.sqrt().clamp(min=1e-3) * (score > 0)


class PoseEmbedding(nn.Module):
    def __init__(self, dim: int, joints: int, token_frames: int, channels: int = 3, temporal_patch: int = 2):
        super().__init__()
        self.temporal_patch = temporal_patch
        features = (channels + 2) * temporal_patch  # person-relative (x, y) + the raw channels
        # the first layer is joint-specific: each joint type writes its coordinates into its own
        # directions, so even an average over joints (what the CM tokens start from) still tells
        # which joint moved; a shared first layer would average that away
        self.joint_weight = nn.Parameter(torch.empty(joints, features, dim))
        self.joint_bias = nn.Parameter(torch.zeros(joints, dim))
        self.proj = nn.Sequential(nn.GELU(), nn.Linear(dim, dim))
        self.joint_embed = nn.Parameter(torch.zeros(joints, dim))  # joint type
        self.time_embed = nn.Parameter(torch.zeros(token_frames, dim))
        nn.init.trunc_normal_(self.joint_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)

    def forward(self, pose: Tensor) -> Tensor:
        raw = torch.cat([pose[..., :2] - 0.5, pose[..., 2:]], -1)  # centre frame coordinates on 0
        x = torch.cat([person_relative(pose), raw], -1)
        x = rearrange(x, "b m (t p) v c -> b t m v (p c)", p=self.temporal_patch)
        x = torch.einsum("btmvf,vfd->btmvd", x, self.joint_weight) + self.joint_bias
        x = self.proj(x) + self.joint_embed  # V x D broadcasts over b, t, m
        x = x + self.time_embed[None, :, None, None]
        return rearrange(x, "b t m v d -> b t (m v) d")

    def reset_parameters(self) -> None:
        """PyTorch's default fan-in init for the input layers: the coordinates are O(1) and must
        not start drowned under the joint/time embeddings (a 0.02-std init did exactly that)."""
        bound = self.joint_weight.shape[1] ** -0.5
        nn.init.uniform_(self.joint_weight, -bound, bound)
        self.proj[1].reset_parameters()
