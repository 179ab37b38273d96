"""Joint anchors for 3DTS: extra reference points where the people are (ours; docs/DESIGN.md,
"joint anchors").

The paper's 3D token search starts from a uniform reference grid. RGB and pose share no
coordinate frame inside the model, so a grid point can only learn to move to a hand by learning
where hands are from the labels alone. With ``search_anchors="joints"`` the search also starts
one point at every seen joint of every person in every token frame (the pose input says where),
the offset network moves those points from their joint's pose token, and each key read there
carries its joint's pose token, so the CM tokens can pick "the moving hand" by what the pose
stream knows about it. Anchors of joints not seen in a token frame are masked out of attention.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn


def joint_anchors(pose: Tensor, frame_mask: Tensor, temporal_patch: int) -> tuple[Tensor, Tensor]:
    """Reference points at the joints: ``pose`` B x M x T x V x C ((x, y) frame fractions, score),
    ``frame_mask`` B x M x T -> (points B x (T' M V) x 3 as (t, y, x) fractions of the clip's
    extent, valid B x (T' M V)), in the order of the pose tokens. A point is its joint's mean
    position over the frames of the temporal patch where the joint is seen (score > 0 in a
    detected frame), at the patch's centre time; a joint seen in none of them is not valid."""
    b, m, t, v = pose.shape[:4]
    tp = t // temporal_patch
    seen = ((pose[..., 2] > 0) & frame_mask[..., None]).to(pose.dtype)  # B x M x T x V
    xy = torch.where(seen[..., None] > 0, pose[..., :2], 0.0)
    xy = rearrange(xy, "b m (t p) v c -> b t m v p c", p=temporal_patch)
    w = rearrange(seen, "b m (t p) v -> b t m v p", p=temporal_patch)
    count = w.sum(-1)
    mean = xy.sum(-2) / count.clamp(min=1)[..., None]  # B x T' x M x V x 2
    valid = count > 0
    when = ((torch.arange(tp, device=pose.device, dtype=pose.dtype) + 0.5) / tp)[None, :, None, None, None]
    points = torch.cat([when.expand(b, tp, m, v, 1), mean.flip(-1)], -1)  # (t, y, x)
    points = torch.where(valid[..., None], points, 0.5)  # a fixed, harmless place; masked anyway
    return points.reshape(b, -1, 3), valid.reshape(b, -1)


def from_clip_fraction(points: Tensor, volume: tuple[int, int, int]) -> Tensor:
    """Fractions of the clip's extent -> align_corners coordinates over a token ``volume`` (the
    inverse of :func:`deformact.models.deformable.to_clip_fraction`)."""
    n = points.new_tensor(volume)
    return torch.where(n > 1, (points * n - 0.5) / (n - 1).clamp(min=1) * 2 - 1, torch.zeros_like(points))


class AnchorSearch(nn.Module):
    """The anchors' part of 3DTS: bounded offsets from each anchor's pose token (zero-initialized,
    so a new model reads exactly at the joints; none with ``deformable=False``) and the pose
    token's share of each anchor key."""

    def __init__(self, dim: int, groups: int, offset_range: float, deformable: bool = True) -> None:
        super().__init__()
        self.groups, self.offset_range = groups, offset_range
        self.key = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))  # which joint, how it moves
        self.offset_net = None
        if deformable:
            self.offset_net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
            self.offset_out = nn.Linear(dim // groups, 3)
            self.offset_out.zero_init = True  # kept at zero by the model's weight init too
            nn.init.zeros_(self.offset_out.weight)
            nn.init.zeros_(self.offset_out.bias)

    def points(self, anchors: Tensor, tokens: Tensor, cell: Tensor, values: tuple[int, int, int]) -> Tensor:
        """anchors B x Q x 3 clip fractions, tokens B x Q x D -> B*G x Q x 3 sampling points in the
        align_corners coordinates of the value volume, moved at most ``offset_range`` cells."""
        ref = from_clip_fraction(anchors, values)
        ref = ref[:, None].expand(-1, self.groups, -1, -1).flatten(0, 1)
        if self.offset_net is None:
            return ref
        feat = rearrange(self.offset_net(tokens), "b q (g c) -> (b g) q c", g=self.groups)
        return torch.addcmul(ref, self.offset_out(feat).tanh(), cell.to(ref.dtype) * self.offset_range)


class JointRGB(nn.Module):
    """The RGB read at each joint's anchor, added to that joint's pose token (``joint_rgb``; ours,
    docs/DESIGN.md, "joint RGB"): the pose stream, which knows which hand moves, also sees what is
    under it. Zero-initialized, so a new model is the anchored model without it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.proj = nn.LayerNorm(dim), nn.Linear(dim, dim)
        self.proj.zero_init = True  # kept at zero by the model's weight init too
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, p: Tensor, reads: Tensor, valid: Tensor) -> Tensor:
        """p: pose tokens B x T' x (M V) x D, reads B x (T' M V) x D, valid B x (T' M V) -> p plus
        the projected reads of the joints seen (an unseen joint's anchor reads nothing useful)."""
        add = self.proj(self.norm(reads)) * valid[..., None].to(reads.dtype)
        return p + add.view_as(p)
