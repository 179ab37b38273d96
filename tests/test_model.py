"""The model does what the paper and docs/DESIGN.md say: shapes, exact equivalences, invariances."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import deformact
from deformact.models import DeformableAttention3D, JointStrideAttention, TemporalStrideAttention
from deformact.models.deformable import reference_grid, to_clip_fraction, trilinear_sample, trilinear_sample_gather
from deformact.models.flops import example_inputs, model_report

ABLATIONS = {
    "deformable": {},
    "grid": {"rgb_attention": "grid"},
    "full": {"rgb_attention": "full"},
    "stride1": {"joint_stride": 1, "temporal_stride": 1},
    "no_cm": {"cross_modal_tokens": False},
}


@pytest.mark.parametrize("preset,modality,ablation",
                         list(itertools.product(["demo", "paper"], ["rgb+pose", "rgb", "pose"], ABLATIONS)))
def test_shapes_every_combination(preset, modality, ablation):
    torch.manual_seed(0)
    model = deformact.build_model(preset, num_classes=7, modality=modality, **ABLATIONS[ablation]).eval()
    cfg = model.config
    x = example_inputs(cfg, batch=2 if preset == "demo" else 1)
    b = next(iter(x.values())).shape[0]
    with torch.no_grad():
        logits, maps = model(**x, return_maps=True)
    assert logits.shape == (b, 7) and torch.isfinite(logits).all()
    t = cfg.token_frames
    if cfg.use_pose:
        assert maps["joint_importance"].shape == (b, cfg.num_persons, cfg.num_joints)
        assert maps["temporal_attention"].shape == (b, t, t)
    if cfg.use_rgb and cfg.rgb_attention != "full":
        loc = maps["sampling_locations"]
        assert loc.shape[:3] == (b, cfg.depth, cfg.offset_groups) and loc.shape[-1] == 3
    assert ("sampling_locations" in maps) == (cfg.use_rgb and cfg.rgb_attention != "full")


def test_build_model_api():
    m = deformact.build_model(preset="demo", num_classes=12, modality="pose", joint_stride=1)
    assert m.config.num_classes == 12 and m.config.joint_stride == 1 and m.config.modality == "pose"
    again = deformact.build_model(config=m.config.to_dict())
    assert again.config == m.config
    with pytest.raises(ValueError, match="unknown field"):
        deformact.build_model("demo", not_a_field=1)
    with pytest.raises(ValueError, match="modality"):
        deformact.build_model("demo", modality="depth")
    with pytest.raises(ValueError, match="rgb must be"):
        deformact.build_model("demo", modality="rgb")(rgb=torch.zeros(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="pose must be"):
        deformact.build_model("demo", modality="pose")(pose=torch.zeros(1, 2, 8, 13, 3))


# ---- 3D token search and trilinear sampling -------------------------------------------------

def _reference_trilinear(vol, t, y, x):
    """Hand-written trilinear read of a C x T x H x W volume at voxel position (t, y, x), zeros outside."""
    c, T, H, W = vol.shape
    out = torch.zeros(c, dtype=vol.dtype)
    t0, y0, x0 = math.floor(t), math.floor(y), math.floor(x)
    for dt, dy, dx in itertools.product((0, 1), repeat=3):
        ti, yi, xi = t0 + dt, y0 + dy, x0 + dx
        w = (1 - abs(t - ti)) * (1 - abs(y - yi)) * (1 - abs(x - xi))
        if 0 <= ti < T and 0 <= yi < H and 0 <= xi < W:
            out += w * vol[:, ti, yi, xi]
    return out


def _to_norm(pos, size):
    return [p / (n - 1) * 2 - 1 for p, n in zip(pos, size)]


def test_trilinear_integer_positions_return_the_feature():
    torch.manual_seed(0)
    vol = torch.randn(2, 5, 4, 6, 7, dtype=torch.float64)
    pos = [(0, 0, 0), (3, 5, 6), (1, 2, 3), (2, 4, 0)]
    coords = torch.tensor([_to_norm(p, (4, 6, 7)) for p in pos], dtype=torch.float64)[None].expand(2, -1, -1)
    for sample in (trilinear_sample, trilinear_sample_gather):
        out = sample(vol, coords)
        for i, (t, y, x) in enumerate(pos):
            torch.testing.assert_close(out[:, :, i], vol[:, :, t, y, x], rtol=0, atol=1e-12)


def test_trilinear_matches_hand_reference_inside_and_outside():
    torch.manual_seed(1)
    vol = torch.randn(1, 3, 4, 5, 6, dtype=torch.float64)
    coords = torch.rand(1, 40, 3, dtype=torch.float64) * 2.6 - 1.3  # some points fall outside
    expect = torch.stack([
        _reference_trilinear(vol[0], *[(c + 1) / 2 * (n - 1) for c, n in zip(p.tolist(), (4, 5, 6))])
        for p in coords[0]], -1)
    torch.testing.assert_close(trilinear_sample(vol, coords)[0], expect, rtol=0, atol=1e-10)
    torch.testing.assert_close(trilinear_sample_gather(vol, coords)[0], expect, rtol=0, atol=1e-10)


def _zero_offsets(attn: DeformableAttention3D) -> None:
    conv = attn.search.offset_net[-1]
    torch.nn.init.zeros_(conv.weight)
    torch.nn.init.zeros_(conv.bias)


def test_zero_offsets_reproduce_uniform_grid_sampling():
    torch.manual_seed(0)
    dim, volume = 32, (8, 14, 14)
    deform = DeformableAttention3D(dim, 4, "deformable", groups=2, downsample=(2, 2, 2), max_frames=4)
    grid = DeformableAttention3D(dim, 4, "grid", groups=2, downsample=(2, 2, 2), max_frames=4)
    _zero_offsets(deform)
    missing, unexpected = grid.load_state_dict(deform.state_dict(), strict=False)
    assert not missing and all("dwconv" in k or "offset_net" in k for k in unexpected)
    z, cm = torch.randn(2, math.prod(volume), dim), torch.randn(2, 2, dim)
    out_d = deform(z, cm, volume, return_maps=True)
    out_g = grid(z, cm, volume)
    torch.testing.assert_close(out_d[0], out_g[0], rtol=0, atol=0)
    torch.testing.assert_close(out_d[1], out_g[1], rtol=0, atol=0)
    # the uniform grid's trilinear reads are exactly 2x2x2 average pooling of the token volume
    points = out_d[2]["sampling_locations"].flatten(0, 1)  # (B G) x P x 3
    ref = to_clip_fraction(reference_grid((4, 7, 7), volume), volume).expand_as(points)  # maps: clip fractions
    torch.testing.assert_close(points, ref)
    vol = torch.randn(4, 16, *volume, dtype=torch.float64)
    pooled = F.avg_pool3d(vol, 2).flatten(2)
    ref64 = reference_grid((4, 7, 7), volume, dtype=torch.float64).expand(4, -1, -1)
    torch.testing.assert_close(trilinear_sample(vol, ref64), pooled, rtol=0, atol=1e-12)


def test_reference_grid_caps_frames_so_keys_stay_fixed_as_time_grows():
    for t in (8, 16, 32):
        attn = DeformableAttention3D(32, 4, groups=2, downsample=(2, 2, 2), max_frames=4)
        assert attn.search.grid_size((t, 14, 14)) == (4, 7, 7)


def test_offset_network_receives_gradients():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=5)
    x = example_inputs(model.config, 2)
    # the offsets' last layer starts at zero (docs/DESIGN.md), so at the first step only it learns;
    # after one step the whole offset network does
    model(**x).logsumexp(-1).sum().backward()
    for blk in model.blocks:
        last = blk.rgb.attn.search.offset_net[-1]
        assert last.weight.grad.abs().sum() > 0 and last.bias.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    model(**x).logsumexp(-1).sum().backward()
    for blk in model.blocks:
        search = blk.rgb.attn.search
        for p in list(search.dwconv.parameters()) + list(search.offset_net.parameters()):
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_offsets_pushing_points_outside_the_volume_stay_finite():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=5, offset_range=50.0)
    for blk in model.blocks:
        torch.nn.init.constant_(blk.rgb.attn.search.offset_net[-1].bias, 5.0)  # tanh -> ~1: far outside
    x = example_inputs(model.config, 2)
    logits, maps = model(**x, return_maps=True)
    loc = maps["sampling_locations"]
    assert (loc > 1).any() and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---- stride attentions: stride 1 is full attention ----------------------------------------------

def _full_attention(attn, x, key_mask):
    """Plain multi-head attention with an explicit softmax, using ``attn``'s weights."""
    h = attn.heads
    q = attn.q(x)
    k, v = attn.kv(x).chunk(2, -1)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    logits = q @ k.transpose(-2, -1) * attn.scale
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
    return attn.proj(out)


def test_joint_stride_1_equals_full_attention():
    torch.manual_seed(0)
    b, t, m, v, d = 2, 3, 2, 5, 16
    mod = JointStrideAttention(d, 4, m, v, stride=1).double()
    p, cm = torch.randn(b, t, m * v, d, dtype=torch.float64), torch.randn(b, 2, d, dtype=torch.float64)
    valid = torch.tensor([[True] * v + [False] * v, [True] * (m * v)])
    out, dcm, _ = mod(p, valid, cm)
    seq = torch.cat([p, cm[:, None].expand(b, t, 2, d)], 2).reshape(b * t, m * v + 2, d)
    mask = torch.cat([valid[:, None].expand(b, t, m * v), torch.ones(b, t, 2, dtype=torch.bool)], 2)
    ref = _full_attention(mod.attn, seq, mask.reshape(b * t, -1)).reshape(b, t, m * v + 2, d)
    torch.testing.assert_close(out, ref[:, :, : m * v])
    torch.testing.assert_close(dcm, ref[:, :, m * v:].mean(1))


def test_temporal_stride_1_equals_full_attention():
    torch.manual_seed(0)
    b, t, j, d = 2, 6, 4, 16
    for contiguous in (False, True):
        mod = TemporalStrideAttention(d, 4, t, stride=1, contiguous=contiguous).double()
        p, cm = torch.randn(b, t, j, d, dtype=torch.float64), torch.randn(b, 2, d, dtype=torch.float64)
        valid = torch.ones(b, j, dtype=torch.bool)
        out, dcm, _ = mod(p, valid, cm)
        seq = torch.cat([p.transpose(1, 2), cm[:, None].expand(b, j, 2, d)], 2).reshape(b * j, t + 2, d)
        ref = _full_attention(mod.attn, seq, torch.ones(b * j, t + 2, dtype=torch.bool)).reshape(b, j, t + 2, d)
        torch.testing.assert_close(out, ref[:, :, :t].transpose(1, 2))
        torch.testing.assert_close(dcm, ref[:, :, t:].mean(1))


def test_strided_groups_attend_only_within_themselves():
    torch.manual_seed(0)
    b, t, j, d = 1, 8, 3, 16
    mod = TemporalStrideAttention(d, 4, t, stride=2).eval()
    p, cm = torch.randn(b, t, j, d), torch.randn(b, 2, d)
    valid = torch.ones(b, j, dtype=torch.bool)
    out, _, _ = mod(p, valid, cm)
    p2 = p.clone()
    p2[:, 1::2] += 10.0  # change only the odd steps: the even group's outputs must not move
    out2, _, _ = mod(p2, valid, cm)
    torch.testing.assert_close(out[:, 0::2], out2[:, 0::2])
    assert not torch.allclose(out[:, 1::2], out2[:, 1::2])


# ---- people: absence and order --------------------------------------------------------------

@pytest.mark.parametrize("modality", ["rgb+pose", "pose"])
def test_absent_people_cannot_change_the_logits(modality):
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6, modality=modality).eval()
    x = example_inputs(model.config, 3)
    x["person_mask"][:, 1] = False
    with torch.no_grad():
        ref = model(**x)
        for junk in (torch.randn_like(x["pose"][:, 1]) * 100, torch.full_like(x["pose"][:, 1], float("nan")),
                     torch.full_like(x["pose"][:, 1], float("inf"))):
            x["pose"][:, 1] = junk
            torch.testing.assert_close(model(**x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("joint_stride", [1, 2, 3])
def test_person_order_does_not_matter(joint_stride):
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6, num_persons=3, joint_stride=joint_stride).eval()
    x = example_inputs(model.config, 2)
    x["person_mask"][0, 2] = False
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a, maps_a = model(**x, return_maps=True)
        b, maps_b = model(rgb=x["rgb"], pose=x["pose"][:, perm], person_mask=x["person_mask"][:, perm],
                          return_maps=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(maps_a["joint_importance"][:, perm], maps_b["joint_importance"], rtol=1e-5, atol=1e-6)


def test_zero_people_still_gives_finite_logits():
    model = deformact.build_model("demo", num_classes=4, modality="pose").eval()
    x = example_inputs(model.config, 2)
    x["person_mask"][:] = False
    assert torch.isfinite(model(**x)).all()


# ---- maps --------------------------------------------------------------------------------------

def test_maps_are_distributions():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6).eval()
    x = example_inputs(model.config, 2)
    x["person_mask"][1, 1] = False
    with torch.no_grad():
        _, maps = model(**x, return_maps=True)
    ta = maps["temporal_attention"]
    torch.testing.assert_close(ta.sum(-1), torch.ones(ta.shape[:2]))
    ji = maps["joint_importance"]
    torch.testing.assert_close(ji.sum((1, 2)), torch.ones(2))
    assert (ji[1, 1] == 0).all() and (ji >= 0).all()
    loc = maps["sampling_locations"]
    assert ((loc > -0.5) & (loc < 1.5)).all()


def test_attention_weight_rows_sum_to_one():
    from deformact.models.layers import Attention
    attn = Attention(16, 4)
    x = torch.randn(3, 7, 16)
    mask = torch.rand(3, 7) > 0.3
    mask[:, 0] = True
    _, w = attn(x, key_mask=mask, weights_for=slice(0, 7))
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 7))
    assert (w[~mask[:, None, :].expand_as(w)] == 0).all()


# ---- learning --------------------------------------------------------------------------------

def test_tiny_model_overfits_eight_random_samples():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=4, dim=32, heads=2, drop_path=0.0, head_dropout=0.0)
    x = example_inputs(model.config, 8)
    x["rgb"] = torch.randn_like(x["rgb"])
    x["pose"] = torch.rand_like(x["pose"])
    y = torch.arange(8) % 4
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(**x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(**x).argmax(-1) == y).all()
    assert loss.item() < 0.1


def test_model_report_counts_params_and_flops():
    model = deformact.build_model("demo", num_classes=5)
    rep = model_report(model)
    assert rep["total_params"] == sum(p.numel() for p in model.parameters())
    assert rep["params"]["backbone"] + rep["params"]["blocks"] < rep["total_params"]
    assert rep["flops"]["backbone"] > 0 and rep["flops"]["blocks"] > 0
    assert rep["total_flops"] >= rep["flops"]["backbone"] + rep["flops"]["blocks"]
    # full attention over all RGB tokens costs more than the deformable search
    full = model_report(deformact.build_model("demo", num_classes=5, rgb_attention="full"))
    assert full["flops"]["blocks"] > rep["flops"]["blocks"]
