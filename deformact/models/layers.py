"""Small transformer pieces shared by every attention (timm-style)."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth per sample (dim 0 is the batch). One residual branch that updates several
    tensors (tokens and CM tokens) draws one mask per sample with :meth:`draw` and applies it to
    each with :meth:`scaled`, so a sample's branch is dropped or kept as a whole."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def draw(self, like: Tensor) -> Tensor | None:
        """Per-sample scale (B: 0 or 1 / (1 - p)), or None when nothing is dropped."""
        if self.p == 0.0 or not self.training:
            return None
        return like.new_empty(like.shape[0]).bernoulli_(1 - self.p) / (1 - self.p)

    @staticmethod
    def scaled(x: Tensor, scale: Tensor | None) -> Tensor:
        return x if scale is None else x * scale.view((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.scaled(x, self.draw(x))


class Attention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention`` with a key mask.

    ``x`` gives the queries and ``context`` (default ``x``) the keys and values, so the same module
    serves self-attention and the deformable cross-attention (queries Z, keys Z~).
    """

    def __init__(self, dim: int, heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_mask: Tensor | None = None,
        weights_for: slice | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: S x Nq x D; context: S x Nk x D; key_mask: S x Nk bool (True = attend).

        Returns the output and, when ``weights_for`` selects query rows, their attention
        weights averaged over heads (S x n x Nk) for the explainability maps.
        """
        context = x if context is None else context
        q = rearrange(self.q(x), "s n (h d) -> s h n d", h=self.heads)
        k, v = rearrange(self.kv(context), "s n (two h d) -> two s h n d", two=2, h=self.heads)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        out = self.proj(rearrange(out, "s h n d -> s n (h d)"))
        weights = None
        if weights_for is not None:  # only the rows we explain: no full matrix is kept
            logits = (q[:, :, weights_for] * self.scale) @ k.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            weights = logits.softmax(-1).mean(1)
        return out, weights
