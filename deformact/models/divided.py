"""Divided space-time attention over all RGB tokens: the TimeSformer-style baseline for the RGB
stream (``rgb_attention="divided"``; docs/DESIGN.md, "ablations").

Each token first attends along time to the T' tokens at its own (h, w) position, then across space
to the H'W' tokens of its own time step. As in the other RGB modes the CM tokens join every group as
keys and as queries (paper Sec. 3.2: Q = [Z; CM], K, V = [keys; CM]); their update in each step is
the mean of their outputs over the groups, as in the stride attentions (paper Sec. 3.3). Cost per
block: T'H'W' x (T' + H'W') attention pairs instead of (T'H'W')^2 for full attention, but every
token is a query and a key of two attentions, where 3D deformable attention reads a fixed set of
sampled keys once.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deformact.models.layers import Attention


def grouped_attention(attn: Attention, groups: Tensor, cm: Tensor) -> tuple[Tensor, Tensor]:
    """Self-attention inside each group plus the CM tokens. groups: B x G x L x D, cm: B x K x D
    -> new tokens B x G x L x D and the CM update B x K x D (the mean over the G groups)."""
    b, g, n, d = groups.shape
    k = cm.shape[1]
    seq = torch.cat([groups, cm[:, None].expand(b, g, k, d)], 2).reshape(b * g, n + k, d)
    out = attn(seq)[0].view(b, g, n + k, d)
    return out[:, :, :n], out[:, :, n:].mean(1)


class DividedSpaceTimeAttention(nn.Module):
    """Temporal attention (tokens at the same (h, w)), then spatial attention (tokens of the same
    step), CM tokens joining both. Same call as :class:`DeformableAttention3D`: the residual
    updates of the RGB tokens and the CM tokens.

    The block's pre-norm (docs/DESIGN.md, "block") normalizes the input once; the spatial step sees
    the temporally updated tokens renormalized by its own LayerNorm, as TimeSformer's divided block
    does (x + T(x), then a LayerNorm before S), and the two updates are summed.
    """

    def __init__(self, *, dim: int, heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.temporal_attn = Attention(dim, heads, attn_drop)
        self.norm_space = nn.LayerNorm(dim)
        self.spatial_attn = Attention(dim, heads, attn_drop)

    def temporal(self, z: Tensor, cm: Tensor, volume: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        """The temporal step alone: z B x N x D (N = T'H'W', time-major), cm B x K x D -> updates."""
        b, n, d = z.shape
        groups = z.view(b, volume[0], -1, d).transpose(1, 2)  # B x H'W' x T' x D
        out, dcm = grouped_attention(self.temporal_attn, groups, cm)
        return out.transpose(1, 2).reshape(b, n, d), dcm

    def spatial(self, z: Tensor, cm: Tensor, volume: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        """The spatial step alone: z B x N x D, cm B x K x D -> updates."""
        b, n, d = z.shape
        out, dcm = grouped_attention(self.spatial_attn, z.view(b, volume[0], -1, d), cm)
        return out.reshape(b, n, d), dcm

    def forward(self, z: Tensor, cm: Tensor, volume: tuple[int, int, int], return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        """z: B x N x D RGB tokens (N = T'H'W'), cm: B x K x D -> (dz, dcm, maps); no maps (there
        are no sampling points)."""
        dz_t, dcm_t = self.temporal(z, cm, volume)
        dz_s, dcm_s = self.spatial(self.norm_space(z + dz_t), self.norm_space(cm + dcm_t), volume)
        return dz_t + dz_s, dcm_t + dcm_s, {}
