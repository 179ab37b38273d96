"""The channels-last 3DTS path (pooling by reshape, one depthwise conv for all offset groups, cached
reference grid) computes what the straightforward channels-first path computes, forward and backward."""

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from deformact.models import DeformableAttention3D
from deformact.models.deformable import cached_grid, cell_size, pool_axis, pool_cells, pool_to_grid, reference_grid


def _search_channels_first(search, query_volume: torch.Tensor, cm: torch.Tensor | None) -> torch.Tensor:
    """TokenSearch3D.forward as first written: channels-first, groups as batch, grid built per call."""
    b, _, *volume = query_volume.shape
    size, values = search.grid_size(tuple(volume)), search.value_volume(tuple(volume))
    dtype = torch.promote_types(query_volume.dtype, torch.float32)
    ref = reference_grid(size, values, query_volume.device, dtype).expand(b * search.groups, -1, -1)
    if search.offset_net is None:
        return ref
    q = rearrange(query_volume, "b (g c) t h w -> (b g) c t h w", g=search.groups)
    feat = search.dwconv(pool_to_grid(q, size))
    if getattr(search, "cm_proj", None) is not None and cm is not None:
        cond = rearrange(search.cm_proj(cm).sum(1), "b (g c) -> (b g) c", g=search.groups)
        where = search.ref_proj(ref[0].to(feat.dtype)).T.reshape(1, -1, *size)
        feat = feat + cond[:, :, None, None, None] + where
    offset = search.offset_net(feat).tanh()
    cell = cell_size(size, values, q.device, dtype)
    return ref + rearrange(offset, "s c t h w -> s (t h w) c") * (cell * search.offset_range)


def _attention_channels_first(attn: DeformableAttention3D, z, cm, volume):
    """DeformableAttention3D.forward as first written (deformable and grid modes)."""
    n = z.shape[1]
    zv = rearrange(z, "b (t h w) d -> b d t h w", t=volume[0], h=volume[1])
    points = _search_channels_first(attn.search, zv, cm)
    values = attn.search.value_volume(volume)
    zg = rearrange(pool_axis(zv, -3, values[0]), "b (g c) t h w -> (b g) c t h w", g=attn.groups)
    keys = rearrange(attn.read(zg, points), "(b g) c p -> b p (g c)", g=attn.groups)
    keys = keys + rearrange(attn.pos(points.to(keys.dtype)), "(b g) p c -> b p (g c)", g=attn.groups)
    out, _ = attn.attn(torch.cat([z, cm], 1), torch.cat([keys, cm], 1))
    return out[:, :n], out[:, n:], points


def _run(fn, attn, z, cm, volume):
    z, cm = z.clone().requires_grad_(), cm.clone().requires_grad_()
    dz, dcm, points = fn(attn, z, cm, volume)
    loss = (dz * torch.linspace(-1, 1, dz.numel()).view_as(dz)).sum() + dcm.square().sum() + points.sum()
    params = [p for p in attn.parameters()]
    grads = torch.autograd.grad(loss, [z, cm, *params], allow_unused=True)
    return [dz, dcm, points, *grads]


def _fast(attn, z, cm, volume):
    dz, dcm, maps = attn(z, cm, volume, return_maps=True)
    return dz, dcm, maps["sampling_locations"]


def _slow(attn, z, cm, volume):
    from deformact.models.deformable import to_clip_fraction

    dz, dcm, points = _attention_channels_first(attn, z, cm, volume)
    values = attn.search.value_volume(volume)
    return dz, dcm, rearrange(to_clip_fraction(points, values), "(b g) p c -> b g p c", g=attn.groups)


@pytest.mark.parametrize("volume", [(8, 14, 14), (16, 4, 4), (7, 5, 9), (32, 4, 6)])
@pytest.mark.parametrize("mode", ["deformable", "grid"])
def test_channels_last_path_equals_the_channels_first_path(volume, mode):
    """float64: the same numbers to 1e-10, forward and every gradient; float32 (the training
    precision): forward within 1e-6 of each output's scale, gradients within 1e-4 of theirs (float32
    sums over ~1,500 tokens in another order)."""
    for dtype, fwd_tol, grad_tol in ((torch.float64, 1e-10, 1e-10), (torch.float32, 1e-6, 1e-4)):
        torch.manual_seed(0)
        dim = 32
        attn = DeformableAttention3D(dim, 4, mode, groups=2, downsample=(2, 2, 2), max_frames=4,
                                     offset_range=2.0).to(dtype)
        if mode == "deformable":  # offsets away from zero: the reads move and the coordinates get gradients
            nn.init.normal_(attn.search.offset_net[-1].weight, std=0.3)
            nn.init.normal_(attn.search.offset_net[-1].bias, std=0.3)
        z = torch.randn(2, math.prod(volume), dim, dtype=dtype)
        cm = torch.randn(2, 2, dim, dtype=dtype)
        new, old = _run(_fast, attn, z, cm, volume), _run(_slow, attn, z, cm, volume)
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            assert (a is None) == (b is None)
            if a is not None:
                tol = (fwd_tol if i < 3 else grad_tol) * max(b.abs().max().item(), 1.0)
                torch.testing.assert_close(a, b, rtol=0, atol=tol)


def test_channels_last_path_equals_the_channels_first_path_in_float64_with_cm_conditioning():
    torch.manual_seed(1)
    dim, volume = 16, (8, 6, 6)
    try:
        attn = DeformableAttention3D(dim, 4, "deformable", groups=2, offset_condition="cm").double()
    except TypeError:  # a version without offset conditioning: the plain offset network
        attn = DeformableAttention3D(dim, 4, "deformable", groups=2).double()
    nn.init.normal_(attn.search.offset_net[-1].weight, std=0.3)
    z = torch.randn(3, math.prod(volume), dim, dtype=torch.float64)
    cm = torch.randn(3, 2, dim, dtype=torch.float64)
    new, old = _run(_fast, attn, z, cm, volume), _run(_slow, attn, z, cm, volume)
    for a, b in zip(new, old, strict=True):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,size", [((2, 8, 14, 14, 5), (4, 7, 7)), ((1, 7, 5, 9, 3), (4, 3, 5)),
                                        ((2, 16, 4, 4, 2), (4, 2, 2))])
def test_pool_cells_is_adaptive_average_pooling(shape, size):
    x = torch.randn(shape, dtype=torch.float64)
    expect = F.adaptive_avg_pool3d(x.permute(0, 4, 1, 2, 3), size).permute(0, 2, 3, 4, 1)
    torch.testing.assert_close(pool_cells(x, size), expect, rtol=0, atol=1e-12)


def test_cached_grid_is_computed_once_and_usable_by_training_after_inference_mode():
    with torch.inference_mode():
        ref, cell = cached_grid((3, 4, 5), (6, 8, 10), torch.device("cpu"), torch.float32)
    again, _ = cached_grid((3, 4, 5), (6, 8, 10), torch.device("cpu"), torch.float32)
    assert again is ref and not ref.is_inference()
    torch.testing.assert_close(ref, reference_grid((3, 4, 5), (6, 8, 10)), rtol=0, atol=0)
    w = torch.ones(3, requires_grad=True)
    (ref.expand(2, -1, -1) * cell * w).sum().backward()  # saved for backward: must not be an inference tensor
    assert w.grad is not None
