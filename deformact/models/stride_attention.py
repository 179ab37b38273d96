"""Local joint stride attention and temporal stride attention (paper Sec. 3.3; docs/DESIGN.md).

Both split a token axis into groups, let every group attend within itself plus the cross-modal
(CM) tokens, and update the CM tokens with the mean of their outputs over the groups that hold
valid tokens. Validity is per token and time step (a person may be missing in some frames).
Which tokens share a group is decided per block by :mod:`deformact.models.grouping`; stride 1 is
full attention along the axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from deformact.models.grouping import members, strided_assignment, time_groups
from deformact.models.layers import Attention


def _index_groups(groups: list[list[int]], n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pad member lists to G x L with index n (a zero pad token); also the inverse map from each
    item to its slot in the flattened G*L layout."""
    length = max(len(m) for m in groups)
    idx = torch.full((len(groups), length), n, dtype=torch.long)
    inv = torch.empty(n, dtype=torch.long)
    for g, m in enumerate(groups):
        idx[g, : len(m)] = torch.tensor(m, dtype=torch.long)
        inv[torch.tensor(m, dtype=torch.long)] = g * length + torch.arange(len(m))
    return idx, idx < n, inv


class GroupedAttention(nn.Module):
    """Self-attention inside fixed groups of a token axis, with the CM tokens joining every group."""

    def __init__(self, dim: int, heads: int, groups: list[list[int]], n: int, attn_drop: float = 0.0):
        super().__init__()
        self.attn = Attention(dim, heads, attn_drop)
        idx, pad_valid, inv = _index_groups(groups, n)
        self.register_buffer("idx", idx, persistent=False)
        self.register_buffer("pad_valid", pad_valid, persistent=False)
        self.register_buffer("inv", inv, persistent=False)

    def attend(self, x: Tensor, valid: Tensor, cm: Tensor, weights_of: str | None = None
               ) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        """x: S x n x D (S = B * R sequences), valid: S x n, cm: B x K x D.

        Returns new x (S x n x D), the CM update (B x K x D), on request the attention weights of
        the CM queries ("cm") or of the item queries ("items"), shaped (S*G) x rows x (L + K), and
        the number of valid items in each group ((S*G)).
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
        real = vg.reshape(b, -1, length).any(-1).to(out.dtype)  # groups that hold valid tokens
        cm_update = (cm_out * real[..., None, None]).sum(1) / real.sum(1).clamp(min=1)[:, None, None]
        return x_new, cm_update, weights, vg.reshape(s * groups, length).sum(-1)


class JointStrideAttention(GroupedAttention):
    """Within each time step, the M*V joint tokens of all people in groups of joint types: joint v
    of every person joins group ``assignment[v]`` (default v mod ``stride``)."""

    def __init__(self, dim: int, heads: int, persons: int, joints: int, stride: int, attn_drop: float = 0.0,
                 assignment: Sequence[int] | None = None):
        assignment = list(strided_assignment(joints, stride) if assignment is None else assignment)
        super().__init__(dim, heads, members(persons, joints, assignment), persons * joints, attn_drop)
        self.persons, self.joints = persons, joints

    def forward(self, p: Tensor, token_valid: Tensor, cm: Tensor, return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        """p: B x T' x J x D pose tokens, token_valid: B x T' x J (or B x J: every step), cm: B x K x D."""
        b, t, j, d = p.shape
        token_valid = _per_step(token_valid, t)
        x, dcm, w, count = self.attend(p.reshape(b * t, j, d), token_valid.reshape(b * t, j), cm,
                                       "cm" if return_maps else None)
        maps = {}
        if w is not None:
            maps["joint_importance"] = self._importance(w, count, token_valid, cm.shape[1])
        return x.reshape(b, t, j, d), dcm, maps

    def _importance(self, w: Tensor, count: Tensor, token_valid: Tensor, k: int) -> Tensor:
        """CM -> joint attention as a lift over uniform attention: a joint's weight times the number
        of keys its group offered (valid joints + CM tokens), so uniform attention gives every
        joint 1 whatever its group's size. Mean over CM queries and the steps where the joint is
        valid, then normalized over the valid joints (sums to 1). B x M x V."""
        b, t, j = token_valid.shape
        length = self.idx.shape[1]
        lift = w[:, :, :length].mean(1) * (count + k).to(w.dtype)[:, None]  # (B T' G) x L
        lift = lift.reshape(b * t, -1)[:, self.inv].reshape(b, t, j)
        valid = token_valid.to(lift.dtype)
        imp = (lift * valid).sum(1) / valid.sum(1).clamp(min=1)
        imp = imp / imp.sum(-1, keepdim=True).clamp(min=1e-12)
        return imp.reshape(b, self.persons, self.joints)


class TemporalStrideAttention(GroupedAttention):
    """Along time for each joint token, the T' steps in s_t strided (or contiguous) groups."""

    def __init__(self, dim: int, heads: int, steps: int, stride: int, contiguous: bool = False,
                 attn_drop: float = 0.0):
        super().__init__(dim, heads, time_groups(steps, stride, contiguous), steps, attn_drop)
        self.steps = steps
        same = torch.zeros(steps + 1, steps + 1, dtype=torch.bool)  # row/col ``steps`` is the pad slot
        for g in range(self.idx.shape[0]):
            same[self.idx[g][:, None], self.idx[g][None, :]] = True
        self.register_buffer("same_group", same[:steps, :steps], persistent=False)

    def forward(self, p: Tensor, token_valid: Tensor, cm: Tensor, return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        """p: B x T' x J x D, token_valid: B x T' x J (or B x J), cm: B x K x D."""
        b, t, j, d = p.shape
        token_valid = _per_step(token_valid, t)
        x = rearrange(p, "b t j d -> (b j) t d")
        valid = rearrange(token_valid, "b t j -> (b j) t")
        x, dcm, w, _ = self.attend(x, valid, cm, "items" if return_maps else None)
        maps = {}
        if w is not None:
            maps.update(self._maps(w, valid.reshape(b, j, t)))
        return rearrange(x, "(b j) t d -> b t j d", b=b), dcm, maps

    def _maps(self, w: Tensor, valid: Tensor) -> dict[str, Tensor]:
        """Step -> step attention among valid steps (CM keys left out, rows renormalized), mean over
        the joint tokens valid at the query step; ``temporal_reachable`` marks the pairs this block's
        grouping and the valid tokens allow at all (the rest are not "no attention": they cannot
        meet here)."""
        b, j, t = valid.shape
        groups, length = self.idx.shape
        w = w[:, :, :length]
        w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
        full = w.new_zeros(b * j, t + 1, t + 1)  # row/col t is the pad slot
        w = w.reshape(b * j, groups, length, length)
        for g in range(groups):
            full[:, self.idx[g][:, None], self.idx[g][None, :]] = w[:, g]
        full = full[:, :t, :t].reshape(b, j, t, t)
        rows = valid.to(full.dtype)[..., None]  # B x J x T' x 1
        att = (full * rows).sum(1) / rows.sum(1).clamp(min=1)
        both = (valid[..., :, None] & valid[..., None, :]).any(1)  # a token valid at both steps
        return {"temporal_attention": att, "temporal_reachable": both & self.same_group}


def _per_step(token_valid: Tensor, steps: int) -> Tensor:
    """B x J (valid at every step) or B x T' x J -> B x T' x J."""
    if token_valid.dim() == 2:
        return token_valid[:, None].expand(-1, steps, -1)
    return token_valid
