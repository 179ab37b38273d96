"""Local joint stride attention and temporal stride attention (ARCHITECTURE.md 4b, 4c; paper Sec. 3.3).

Both split a token axis into strided groups, let every group attend within itself plus the
cross-modal (CM) tokens, and update the CM tokens with the mean of their outputs over the groups
that hold real tokens. Stride 1 is full attention along the axis.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from deformact.models.layers import Attention


def _index_groups(members: list[list[int]], n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pad member lists to G x L with index n (a zero pad token); also the inverse map from each
    item to its slot in the flattened G*L layout."""
    length = max(len(m) for m in members)
    idx = torch.full((len(members), length), n, dtype=torch.long)
    inv = torch.empty(n, dtype=torch.long)
    for g, m in enumerate(members):
        idx[g, : len(m)] = torch.tensor(m, dtype=torch.long)
        inv[torch.tensor(m, dtype=torch.long)] = g * length + torch.arange(len(m))
    return idx, idx < n, inv


def joint_groups(persons: int, joints: int, stride: int) -> list[list[int]]:
    """Joint v of every person joins group v mod stride (tokens are person-major: m*V + v)."""
    return [[m * joints + v for m in range(persons) for v in range(g, joints, stride)] for g in range(stride)]


def time_groups(steps: int, stride: int, contiguous: bool) -> list[list[int]]:
    """Strided: t joins group t mod stride. Contiguous: consecutive runs of steps/stride."""
    if contiguous:
        size = math.ceil(steps / stride)
        return [list(range(g * size, min((g + 1) * size, steps))) for g in range(stride)]
    return [list(range(g, steps, stride)) for g in range(stride)]


class GroupedAttention(nn.Module):
    """Self-attention inside fixed groups of a token axis, with the CM tokens joining every group."""

    def __init__(self, dim: int, heads: int, members: list[list[int]], n: int, attn_drop: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, heads, attn_drop)
        idx, pad_valid, inv = _index_groups(members, n)
        self.register_buffer("idx", idx, persistent=False)
        self.register_buffer("pad_valid", pad_valid, persistent=False)
        self.register_buffer("inv", inv, persistent=False)

    def attend(self, x: Tensor, valid: Tensor, cm: Tensor, weights_of: str | None = None
               ) -> tuple[Tensor, Tensor, Tensor | None]:
        """x: S x n x D (S = B * R sequences), valid: S x n, cm: B x K x D.

        Returns new x (S x n x D), the CM update (B x K x D) and, on request, attention weights of
        the CM queries ("cm") or of the item queries ("items"), shaped (S*G) x rows x (L + K).
        """
        s, n, d = x.shape
        b, k, _ = cm.shape
        groups, length = self.idx.shape
        xg = torch.cat([x, x.new_zeros(s, 1, d)], 1)[:, self.idx]  # S x G x L x D
        vg = torch.cat([valid, valid.new_zeros(s, 1)], 1)[:, self.idx] & self.pad_valid
        cmx = cm[:, None].expand(b, s // b * groups, k, d).reshape(s * groups, k, d)
        seq = torch.cat([xg.reshape(s * groups, length, d), cmx], 1)
        mask = torch.cat([vg.reshape(s * groups, length), vg.new_ones(s * groups, k)], 1)
        rows = {"cm": slice(length, length + k), "items": slice(0, length), None: None}[weights_of]
        out, weights = self.attn(seq, key_mask=mask, weights_for=rows)
        x_new = out[:, :length].reshape(s, groups * length, d)[:, self.inv]
        cm_out = out[:, length:].reshape(b, -1, k, d)
        real = vg.reshape(b, -1, length).any(-1).to(out.dtype)  # groups that hold real tokens
        cm_update = (cm_out * real[..., None, None]).sum(1) / real.sum(1).clamp(min=1)[:, None, None]
        return x_new, cm_update, weights


class JointStrideAttention(GroupedAttention):
    """Within each time step, the M*V joint tokens of all people in s_j strided groups."""

    def __init__(self, dim: int, heads: int, persons: int, joints: int, stride: int, attn_drop: float = 0.0):
        super().__init__(dim, heads, joint_groups(persons, joints, stride), persons * joints, attn_drop)
        self.persons, self.joints = persons, joints

    def forward(self, p: Tensor, token_valid: Tensor, cm: Tensor, return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        """p: B x T' x J x D pose tokens, token_valid: B x J, cm: B x K x D."""
        b, t, j, d = p.shape
        valid = token_valid[:, None].expand(b, t, j).reshape(b * t, j)
        x, dcm, w = self.attend(p.reshape(b * t, j, d), valid, cm, "cm" if return_maps else None)
        maps = {}
        if w is not None:  # CM -> joint attention, mean over CM queries, scattered back to joints
            length = self.idx.shape[1]
            w = w[:, :, :length].mean(1).reshape(b * t, -1)[:, self.inv]  # (B T') x J
            imp = w.reshape(b, t, j).mean(1) * token_valid
            imp = imp / imp.sum(-1, keepdim=True).clamp(min=1e-12)
            maps["joint_importance"] = imp.reshape(b, self.persons, self.joints)
        return x.reshape(b, t, j, d), dcm, maps


class TemporalStrideAttention(GroupedAttention):
    """Along time for each joint token, the T' steps in s_t strided (or contiguous) groups."""

    def __init__(self, dim: int, heads: int, steps: int, stride: int, contiguous: bool = False,
                 attn_drop: float = 0.0):
        super().__init__(dim, heads, time_groups(steps, stride, contiguous), steps, attn_drop)
        self.steps = steps

    def forward(self, p: Tensor, token_valid: Tensor, cm: Tensor, return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        b, t, j, d = p.shape
        x = rearrange(p, "b t j d -> (b j) t d")
        valid = token_valid.reshape(b * j, 1).expand(b * j, t)
        x, dcm, w = self.attend(x, valid, cm, "items" if return_maps else None)
        maps = {}
        if w is not None:  # time -> time among real steps, rows renormalized without the CM keys
            groups, length = self.idx.shape
            w = w[:, :, :length]
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
            full = w.new_zeros(b * j, t + 1, t + 1)  # row/col t is the pad slot
            w = w.reshape(b * j, groups, length, length)
            for g in range(groups):
                full[:, self.idx[g][:, None], self.idx[g][None, :]] = w[:, g]
            full = full[:, :t, :t].reshape(b, j, t, t)
            weight = token_valid.to(full.dtype)
            maps["temporal_attention"] = (full * weight[..., None, None]).sum(1) / weight.sum(1).clamp(
                min=1)[:, None, None]
        return rearrange(x, "(b j) t d -> b t j d", b=b), dcm, maps
