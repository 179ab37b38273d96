"""3D deformable attention (ARCHITECTURE.md, component 4a; paper Sec. 3.2).

3D token search (3DTS) lays a reference grid over the RGB feature volume, an offset network moves
each reference point, and the deformable tokens Z~ are read there by trilinear interpolation.
Queries are [Z; CM tokens], keys/values are [Z~; CM tokens].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from deformact.models.layers import Attention


def trilinear_sample(volume: Tensor, coords: Tensor) -> Tensor:
    """Read ``volume`` (S x C x T x H x W) at ``coords`` (S x P x 3, (t, y, x) in [-1, 1],
    align_corners=True; outside reads zeros) -> S x C x P.

    One batched ``grid_sample`` call; while exporting to ONNX a gather-based path is used instead
    (ONNX GridSample is 2D-only in most runtimes). Both give the same numbers.
    """
    if torch.onnx.is_in_onnx_export():
        return trilinear_sample_gather(volume, coords)
    grid = coords.flip(-1)[:, :, None, None, :]  # grid_sample wants (x, y, t)
    out = F.grid_sample(volume, grid.to(volume.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return out[:, :, :, 0, 0]


def trilinear_sample_gather(volume: Tensor, coords: Tensor) -> Tensor:
    """The same as :func:`trilinear_sample`, written with gathers (8 corners, zero padding)."""
    s, c, t, h, w = volume.shape
    size = coords.new_tensor([t, h, w])
    pos = (coords + 1) * 0.5 * (size - 1)  # continuous voxel index
    base = pos.floor()
    frac = pos - base
    base = base.long()
    flat = volume.reshape(s, c, t * h * w)
    out = volume.new_zeros(s, c, coords.shape[1])
    for corner in range(8):
        bits = torch.tensor([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], device=coords.device)
        idx = base + bits
        weight = torch.where(bits.bool(), frac, 1 - frac).prod(-1)  # S x P
        inside = ((idx >= 0) & (idx < size.long())).all(-1)
        lin = (idx[..., 0] * h + idx[..., 1]) * w + idx[..., 2]
        lin = torch.where(inside, lin, torch.zeros_like(lin))
        vals = flat.gather(2, lin[:, None, :].expand(s, c, -1))
        out = out + vals * (weight * inside)[:, None, :].to(volume.dtype)
    return out


def pool_to_grid(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Adaptive average pooling of the last three axes to ``size`` (the same bins as
    ``F.adaptive_avg_pool3d``), written as three small matmuls so that it exports to ONNX."""
    for axis, out in zip((-3, -2, -1), size):
        n = x.shape[axis]
        weight = x.new_zeros(out, n)
        for i in range(out):  # bin i covers [floor(i n / out), ceil((i + 1) n / out))
            lo, hi = i * n // out, -(-(i + 1) * n // out)
            weight[i, lo:hi] = 1.0 / (hi - lo)
        x = (x.movedim(axis, -1) @ weight.T).movedim(-1, axis)
    return x


def reference_grid(size: tuple[int, int, int], volume: tuple[int, int, int], device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres of a uniform grid of ``size`` cells over a ``volume`` of tokens, as (t, y, x) in
    [-1, 1] align_corners coordinates -> (t h w) x 3. With a volume divisible by the grid, the
    trilinear read at a centre equals average-pooling the cell."""
    axes = []
    for n, full in zip(size, volume):
        centres = (torch.arange(n, device=device, dtype=dtype) + 0.5) * (full / n) - 0.5
        axes.append(centres / max(full - 1, 1) * 2 - 1 if full > 1 else torch.zeros(n, device=device, dtype=dtype))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


class TokenSearch3D(nn.Module):
    """3DTS: a reference grid downsampled from T' x H' x W' plus learned, bounded 3D offsets.

    ``deformable=False`` keeps the uniform grid (the "grid" ablation): no offset network at all.
    """

    def __init__(self, dim: int, groups: int, downsample: tuple[int, int, int], max_frames: int,
                 offset_range: float, kernel: int = 3, deformable: bool = True) -> None:
        super().__init__()
        self.groups, self.downsample, self.max_frames = groups, downsample, max_frames
        self.offset_range = offset_range
        self.offset_net = None
        if deformable:
            c = dim // groups  # shared across groups, each group sees its own channel slice
            self.dwconv = nn.Conv3d(c, c, kernel, padding=kernel // 2, groups=c)
            self.offset_net = nn.Sequential(nn.GELU(), nn.Conv3d(c, 3, 1))

    def grid_size(self, volume: tuple[int, int, int]) -> tuple[int, int, int]:
        t, h, w = (math.ceil(n / r) for n, r in zip(volume, self.downsample))
        return min(t, self.max_frames), h, w

    def forward(self, query_volume: Tensor) -> Tensor:
        """query_volume: B x D x T' x H' x W' -> sampling points B*G x P x 3 in [-1, 1]."""
        b, _, *volume = query_volume.shape
        size = self.grid_size(tuple(volume))
        ref = reference_grid(size, tuple(volume), query_volume.device)
        ref = ref.expand(b * self.groups, -1, -1)
        if self.offset_net is None:
            return ref
        q = rearrange(query_volume, "b (g c) t h w -> (b g) c t h w", g=self.groups)
        feat = self.dwconv(pool_to_grid(q, size))  # pooled to one feature per reference cell
        offset = self.offset_net(feat).tanh()  # (b g) x 3 x t h w, bounded
        cell = 2.0 / torch.tensor([max(n, 1) for n in size], device=q.device, dtype=offset.dtype)
        offset = rearrange(offset, "s c t h w -> s (t h w) c") * cell * self.offset_range
        return ref + offset


class DeformableAttention3D(nn.Module):
    """Attention of [Z; CM] queries over [Z~; CM] keys, Z~ found by :class:`TokenSearch3D`.

    ``mode="full"`` makes every RGB token a key (the paper's Fig. 1 baseline).
    """

    def __init__(self, dim: int, heads: int, mode: str = "deformable", groups: int = 2,
                 downsample: tuple[int, int, int] = (2, 2, 2), max_frames: int = 4,
                 offset_range: float = 2.0, kernel: int = 3, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.mode, self.groups = mode, groups
        self.search = None if mode == "full" else TokenSearch3D(
            dim, groups, downsample, max_frames, offset_range, kernel, deformable=mode == "deformable")
        self.pos = nn.Linear(3, dim // groups)  # per-group position signal of the key locations
        self.attn = Attention(dim, heads, attn_drop)

    def forward(self, z: Tensor, cm: Tensor, volume: tuple[int, int, int], return_maps: bool = False
                ) -> tuple[Tensor, Tensor, dict]:
        """z: B x N x D RGB tokens (N = T'H'W'), cm: B x K x D modal tokens."""
        b, n, d = z.shape
        maps: dict = {}
        if self.search is None:
            keys = z
            points = reference_grid(volume, volume, z.device).expand(b * self.groups, -1, -1)
        else:
            zv = rearrange(z, "b (t h w) d -> b d t h w", t=volume[0], h=volume[1])
            points = self.search(zv)  # (b g) x P x 3
            zg = rearrange(zv, "b (g c) t h w -> (b g) c t h w", g=self.groups)
            keys = rearrange(trilinear_sample(zg, points), "(b g) c p -> b p (g c)", g=self.groups)
            if return_maps:
                maps["sampling_locations"] = rearrange(points, "(b g) p c -> b g p c", g=self.groups)
        keys = keys + rearrange(self.pos(points.to(keys.dtype)), "(b g) p c -> b p (g c)", g=self.groups)
        x = torch.cat([z, cm], 1)
        out, _ = self.attn(x, torch.cat([keys, cm], 1))
        return out[:, :n], out[:, n:], maps
