"""3D deformable attention (paper Sec. 3.2; docs/DESIGN.md, "3DTS").

3D token search (3DTS) lays a reference grid over the RGB feature volume, an offset network moves
each reference point, and the deformable tokens Z~ are read there by trilinear interpolation.
Queries are [Z; CM tokens], keys/values are [Z~; CM tokens].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from deformact.models.anchors import AnchorSearch
from deformact.models.layers import Attention


def trilinear_sample(volume: Tensor, coords: Tensor) -> Tensor:
    """Read ``volume`` (S x C x T x H x W) at ``coords`` (S x P x 3, (t, y, x) in [-1, 1] with
    align_corners=True: -1 and 1 are the centres of the first and last token; outside reads zeros)
    -> S x C x P.

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


def pool_axis(x: Tensor, axis: int, out: int) -> Tensor:
    """Adaptive average pooling of one axis to ``out`` bins (the bins of ``F.adaptive_avg_pool3d``:
    bin i covers [floor(i n / out), ceil((i + 1) n / out))), as a small matmul that exports to ONNX."""
    n = x.shape[axis]
    if out == n:
        return x
    weight = x.new_zeros(out, n)
    for i in range(out):
        lo, hi = i * n // out, -(-(i + 1) * n // out)
        weight[i, lo:hi] = 1.0 / (hi - lo)
    return (x.movedim(axis, -1) @ weight.T).movedim(-1, axis)


def pool_to_grid(x: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Adaptive average pooling of the last three axes to ``size``."""
    for axis, out in zip((-3, -2, -1), size):
        x = pool_axis(x, axis, out)
    return x


def pool_cells(x: Tensor, size: Sequence[int]) -> Tensor:
    """Adaptive average pooling of the middle axes of a channels-last B x (axes) x C tensor to
    ``size`` (the bins of :func:`pool_axis`). An axis that divides evenly is summed in contiguous
    blocks (a reshape and one reduction: no copy, no matmul); any other goes through
    :func:`pool_axis`. The same numbers as :func:`pool_to_grid` on the channels-first layout."""
    scale = 1.0
    for axis, out in enumerate(size, start=1):
        n = x.shape[axis]
        if n == out:
            continue
        if n % out == 0:
            x = x.unflatten(axis, (out, n // out)).sum(axis + 1)
            scale *= out / n
        else:
            x = pool_axis(x, axis, out)
    return x if scale == 1.0 else x * scale


def reference_grid(size: tuple[int, int, int], volume: tuple[int, int, int], device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """Centres of a uniform grid of ``size`` cells over a ``volume`` of tokens, as (t, y, x) in
    [-1, 1] align_corners coordinates -> (t h w) x 3. With a volume divisible by the grid into
    cells of 2 (or 1) tokens per axis, the trilinear read at a centre equals average-pooling the cell."""
    axes = []
    for n, full in zip(size, volume):
        centres = (torch.arange(n, device=device, dtype=dtype) + 0.5) * (full / n) - 0.5
        axes.append(centres / max(full - 1, 1) * 2 - 1 if full > 1 else torch.zeros(n, device=device, dtype=dtype))
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def cell_size(size: tuple[int, int, int], volume: tuple[int, int, int], device=None,
              dtype: torch.dtype = torch.float32) -> Tensor:
    """One grid cell per axis in align_corners coordinates: volume/size tokens, and one token is
    2 / (n - 1) there (not 2 / n)."""
    return torch.tensor([(full / n) * 2 / max(full - 1, 1) for n, full in zip(size, volume)],
                        device=device, dtype=dtype)


_GRIDS: dict[tuple, tuple[Tensor, Tensor]] = {}


def cached_grid(size: tuple[int, int, int], volume: tuple[int, int, int], device: torch.device,
                dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(:func:`reference_grid`, :func:`cell_size`) of a shape: constants of the shapes, so they are
    computed once per (shape, device, dtype) and shared by every block and step (fresh ones while
    compiling or exporting, where they become constants of the graph)."""
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return reference_grid(size, volume, device, dtype), cell_size(size, volume, device, dtype)
    key = (tuple(size), tuple(volume), torch.device(device), dtype)
    hit = _GRIDS.get(key)
    if hit is None:
        with torch.inference_mode(False), torch.no_grad():  # usable later by training steps too
            hit = reference_grid(size, volume, device, dtype), cell_size(size, volume, device, dtype)
        _GRIDS[key] = hit
    return hit


def to_clip_fraction(points: Tensor, volume: tuple[int, int, int]) -> Tensor:
    """align_corners coordinates over a token ``volume`` -> fractions of the clip's extent (0 = the
    first frame's start / the image's top or left edge, 1 = the end / bottom or right edge): token i
    of n is centred at (i + 0.5) / n."""
    n = points.new_tensor(volume)
    return ((points + 1) / 2 * (n - 1) + 0.5) / n


class TokenSearch3D(nn.Module):
    """3DTS: a reference grid downsampled from T' x H' x W' plus learned, bounded 3D offsets.

    The reads come from the *value volume*: the token volume, average-pooled in time to
    ``grid_t * r_t`` frames when the temporal cap (``max_frames``) makes a cell span more than
    ``r_t`` frames. A cell then spans ``r_t`` value frames, and with factors r <= 2 its read at zero
    offset is the mean of every token frame and of the (2 x 2) tokens of its span (a trilinear read
    spans at most 2 entries per axis). Offsets are ``tanh`` bounded to
    ``offset_range`` cells per axis, exactly, and start at zero (the last layer is zero-initialized),
    so a new model reads the uniform grid. The offset network (docs/DESIGN.md): the query volume is
    average-pooled to one feature per cell, then depthwise 3D conv -> GELU -> 1x1x1 conv -> tanh.
    ``deformable=False`` keeps the uniform grid (the "grid" ablation): no offset network at all.
    ``condition="cm"`` lets the offsets see the people (docs/DESIGN.md, "offset conditioning"): a
    projection of the CM tokens (which carry the pose, paper Sec. 3.2) and of each cell's reference
    position is added to the offset features before the last layer.
    """

    def __init__(self, dim: int, groups: int, downsample: tuple[int, int, int], max_frames: int,
                 offset_range: float, kernel: int = 3, deformable: bool = True, condition: str = "none") -> None:
        super().__init__()
        self.groups, self.downsample, self.max_frames = groups, downsample, max_frames
        self.offset_range = offset_range
        self.offset_net = None
        if deformable:
            c = dim // groups  # shared across groups, each group sees its own channel slice
            self.dwconv = nn.Conv3d(c, c, kernel, padding=kernel // 2, groups=c)
            self.offset_net = nn.Sequential(nn.GELU(), nn.Conv3d(c, 3, 1))
            nn.init.zeros_(self.offset_net[-1].weight)  # start on the reference grid
            nn.init.zeros_(self.offset_net[-1].bias)
            self.cm_proj = self.ref_proj = None
            if condition == "cm":
                self.cm_proj = nn.Linear(dim, dim)  # each group gets its own c-channel slice
                self.ref_proj = nn.Linear(3, c)

    def grid_size(self, volume: tuple[int, int, int]) -> tuple[int, int, int]:
        t, h, w = (math.ceil(n / r) for n, r in zip(volume, self.downsample))
        return min(t, self.max_frames), h, w

    def value_volume(self, volume: tuple[int, int, int]) -> tuple[int, int, int]:
        """The size of the volume the reads come from (see the class docstring)."""
        t = self.grid_size(volume)[0]
        return min(volume[0], t * self.downsample[0]), volume[1], volume[2]

    def forward(self, query_volume: Tensor, cm: Tensor | None = None) -> Tensor:
        """query_volume: B x D x T' x H' x W', cm: B x K x D CM tokens (used with ``condition="cm"``)
        -> sampling points B*G x P x 3, (t, y, x) in the align_corners coordinates of the value
        volume (:meth:`value_volume`)."""
        b, _, *volume = query_volume.shape
        size, values = self.grid_size(tuple(volume)), self.value_volume(tuple(volume))
        dtype = torch.promote_types(query_volume.dtype, torch.float32)  # coordinates: at least fp32
        ref, cell = cached_grid(size, values, query_volume.device, dtype)
        if self.offset_net is None:
            return ref.expand(b * self.groups, -1, -1)
        # channels-last throughout (B x t x h x w x G x C): from the token sequence the permute below
        # is free, and every step is a reduction, a depthwise conv or a linear layer on the last axis
        feat = pool_cells(query_volume.permute(0, 2, 3, 4, 1), size)  # one feature per reference cell
        feat = self._depthwise(feat).unflatten(-1, (self.groups, -1))
        if self.cm_proj is not None and cm is not None:
            cond = self.cm_proj(cm).sum(1).unflatten(-1, (self.groups, -1))  # B x G x C
            where = self.ref_proj(ref.to(feat.dtype)).unflatten(0, size)  # t x h x w x C
            feat = feat + cond[:, None, None, None] + where[:, :, :, None]
        act, last = self.offset_net  # GELU, then the 1x1x1 conv as a linear layer on the channels
        offset = F.linear(act(feat), last.weight.flatten(1), last.bias).tanh()  # B x t x h x w x G x 3
        offset = offset.permute(0, 4, 1, 2, 3, 5).reshape(b * self.groups, -1, 3)
        return torch.addcmul(ref, offset, cell * self.offset_range)  # bounded to offset_range cells

    def _depthwise(self, feat: Tensor) -> Tensor:
        """``dwconv`` on every group's channel slice at once (B x t x h x w x G*C, channels-last):
        one depthwise conv over the G*C channels with the weights repeated per group, so the
        groups need no regrouping copy."""
        conv, g = self.dwconv, self.groups
        out = F.conv3d(feat.permute(0, 4, 1, 2, 3), conv.weight.repeat(g, 1, 1, 1, 1), conv.bias.repeat(g),
                       padding=conv.padding, groups=conv.groups * g)
        return out.permute(0, 2, 3, 4, 1)


class TrilinearRead(nn.Module):
    """:func:`trilinear_sample` as a module, so per-module FLOP reports show the reads."""

    def forward(self, volume: Tensor, coords: Tensor) -> Tensor:
        return trilinear_sample(volume, coords)


class DeformableAttention3D(nn.Module):
    """Attention of [Z; CM] queries over [Z~; CM] keys, Z~ found by :class:`TokenSearch3D`.

    ``mode="full"`` makes every RGB token a key (the paper's Fig. 1 baseline). With
    ``anchors="joints"`` (deformable and grid modes) the search also reads at the people's joints
    (:mod:`deformact.models.anchors`).
    """

    def __init__(self, dim: int, heads: int, mode: str = "deformable", groups: int = 2,
                 downsample: tuple[int, int, int] = (2, 2, 2), max_frames: int = 4,
                 offset_range: float = 2.0, kernel: int = 3, attn_drop: float = 0.0, *,
                 offset_condition: str = "none", anchors: str = "none") -> None:
        super().__init__()
        self.mode, self.groups = mode, groups
        self.search = None if mode == "full" else TokenSearch3D(
            dim, groups, downsample, max_frames, offset_range, kernel, deformable=mode == "deformable",
            condition=offset_condition)
        self.anchor = None
        if anchors == "joints" and self.search is not None:
            self.anchor = AnchorSearch(dim, groups, offset_range, deformable=mode == "deformable")
        self.pos = nn.Linear(3, dim // groups)  # per-group position signal of the key locations
        self.attn = Attention(dim, heads, attn_drop)
        self.read = TrilinearRead()

    def forward(self, z: Tensor, cm: Tensor, volume: tuple[int, int, int], return_maps: bool = False,
                anchors: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, dict]:
        """z: B x N x D RGB tokens (N = T'H'W'), cm: B x K x D modal tokens, anchors: (points
        B x Q x 3 clip fractions, valid B x Q, pose tokens B x Q x D) of
        :func:`deformact.models.anchors.joint_anchors` (used with ``anchors="joints"``).

        ``maps["sampling_locations"]``: B x G x P x 3, (t, y, x) as fractions of the clip's extent
        (:func:`to_clip_fraction`); the grid's points first, then the anchors' (NaN where masked).
        ``maps["sampling_weights"]``: B x P, the attention the CM queries give each sampled key
        (mean over heads and CM tokens; keys of masked anchors 0): which of the points are used."""
        b, n, d = z.shape
        maps: dict = {}
        key_mask = anchor_keys = None
        if self.search is None:
            keys = z
            points = cached_grid(volume, volume, z.device, torch.float32)[0].expand(b * self.groups, -1, -1)
        else:
            zv = rearrange(z, "b (t h w) d -> b d t h w", t=volume[0], h=volume[1])
            points = self.search(zv, cm)  # (b g) x P x 3
            values = self.search.value_volume(volume)
            if self.anchor is not None and anchors is not None:
                at, valid, tokens = anchors
                cell = cached_grid(self.search.grid_size(volume), values, z.device, points.dtype)[1]
                grid_keys = points.shape[1]
                points = torch.cat([points, self.anchor.points(at, tokens, cell, values)], 1)
                key_mask = torch.cat([valid.new_ones(b, grid_keys), valid, valid.new_ones(b, cm.shape[1])], 1)
                anchor_keys = self.anchor.key(tokens)  # added to the anchors' keys: which joint, how it moves
            # the value volume: time-pooled on the token sequence (contiguous), then one read for all groups
            zt = pool_cells(z.unflatten(1, (volume[0], -1)), values[:1]).unflatten(2, values[1:])
            zg = rearrange(zt, "b t h w (g c) -> (b g) c t h w", g=self.groups)
            keys = rearrange(self.read(zg, points), "(b g) c p -> b p (g c)", g=self.groups)
            if anchor_keys is not None:
                maps["anchor_reads"] = keys[:, grid_keys:]  # the RGB at each joint (``joint_rgb``)
            if return_maps:
                where = rearrange(to_clip_fraction(points, values), "(b g) p c -> b g p c", g=self.groups)
                if key_mask is not None:
                    where = where.masked_fill(~key_mask[:, None, :where.shape[2], None], float("nan"))
                maps["sampling_locations"] = where
        keys = keys + rearrange(self.pos(points.to(keys.dtype)), "(b g) p c -> b p (g c)", g=self.groups)
        if anchor_keys is not None:
            keys = torch.cat([keys[:, :grid_keys], keys[:, grid_keys:] + anchor_keys], 1)
        x = torch.cat([z, cm], 1)
        explain = return_maps and "sampling_locations" in maps
        out, weights = self.attn(x, torch.cat([keys, cm], 1), key_mask=key_mask,
                                 weights_for=slice(n, n + cm.shape[1]) if explain else None)
        if explain:
            maps["sampling_weights"] = weights[:, :, : keys.shape[1]].mean(1)
        return out[:, :n], out[:, n:], maps
