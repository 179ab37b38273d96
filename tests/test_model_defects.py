"""Model properties from docs/DESIGN.md that earlier versions got wrong: joint groups that change
across blocks, offsets that start at zero and reach exactly their range, temporal cells read over
their whole span, stochastic depth per residual, per-frame person masks, FLOPs of the trilinear
reads, and explanation maps without built-in bias."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deformact
from deformact.data.skeletons import SKELETONS
from deformact.models import DeformableAttention3D, TokenSearch3D
from deformact.models.deformable import reference_grid, to_clip_fraction
from deformact.models.flops import example_inputs, model_report, trilinear_read_flops
from deformact.models.transformer import SubLayer
from deformact.viz.explain import plot_temporal_attention, points_to_pixels

# ---- 1. joint groups vary across blocks ---------------------------------------------------------


@pytest.mark.parametrize("layout,stride", [("coco17", 2), ("ntu25", 2), ("penn13", 2), ("coco17", 3)])
def test_every_bone_and_flip_pair_shares_a_group_in_any_two_consecutive_blocks(layout, stride):
    skel = SKELETONS[layout]
    v = skel.num_joints
    model = deformact.build_model("demo", num_classes=3, modality="pose", num_joints=v, depth=4,
                                  joint_stride=stride)
    groups = model.joint_groups()
    assert groups.dtype == torch.long and groups.shape == (4, v)
    for a, b in list(skel.edges) + list(skel.flip_pairs):
        for i in range(3):
            assert groups[i, a] == groups[i, b] or groups[i + 1, a] == groups[i + 1, b], \
                (skel.joints[a], skel.joints[b], i)
    # the grouping really changes, and no group grows: the padded attention cost stays that of
    # the strided grouping (groups x largest group)
    assert not torch.equal(groups[0], groups[1])
    cap = math.ceil(v / stride)
    for row in groups:
        sizes = torch.bincount(row)
        assert len(sizes) == stride and sizes.max() <= cap and sizes.min() >= cap - 2
    # the blocks attend in exactly these groups (joint v of every person)
    m = model.config.num_persons
    for blk, row in zip(model.blocks, groups):
        idx, valid = blk.joint.attn.idx, blk.joint.attn.pad_valid
        for g in range(stride):
            got = sorted(idx[g][valid[g]].tolist())
            assert got == sorted(p * v + j for p in range(m) for j in range(v) if row[j] == g)


def test_layout_field_is_checked_and_unknown_joint_counts_alternate_contiguously():
    with pytest.raises(ValueError, match="layout"):
        deformact.build_model("demo", num_classes=3, layout="ntu25")  # 17 joints
    with pytest.raises(ValueError, match="layout"):
        deformact.build_model("demo", num_classes=3, layout="smpl")
    model = deformact.build_model("demo", num_classes=3, modality="pose", num_joints=6, depth=2)
    assert model.joint_groups().tolist() == [[0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1]]


# ---- 2. offsets start at zero -------------------------------------------------------------------


def test_new_deformable_model_samples_the_reference_grid_whatever_the_input():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=5).eval()
    vol = model.volume
    search = model.blocks[0].rgb.attn.search
    ref = to_clip_fraction(reference_grid(search.grid_size(vol), search.value_volume(vol)), vol)
    for seed in (0, 1):
        torch.manual_seed(seed)
        x = example_inputs(model.config, 2)
        x["rgb"] = torch.randn_like(x["rgb"]) * (1 + 4 * seed)
        with torch.no_grad():
            _, maps = model(**x, return_maps=True)
        loc = maps["sampling_locations"]  # B x L x G x P x 3
        assert torch.equal(loc, ref.expand_as(loc))
        assert ((loc >= 0) & (loc <= 1)).all()


def test_new_deformable_model_equals_the_grid_model_with_the_same_weights():
    torch.manual_seed(0)
    deform = deformact.build_model("demo", num_classes=5).eval()
    grid = deformact.build_model("demo", num_classes=5, rgb_attention="grid").eval()
    missing, unexpected = grid.load_state_dict(deform.state_dict(), strict=False)
    assert not missing and unexpected and all("dwconv" in k or "offset_net" in k for k in unexpected)
    x = example_inputs(deform.config, 3)
    with torch.no_grad():
        a, maps_a = deform(**x, return_maps=True)
        b, maps_b = grid(**x, return_maps=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(maps_a["sampling_locations"], maps_b["sampling_locations"], rtol=0, atol=0)


# ---- 3. offset scale and temporal cells ---------------------------------------------------------


@pytest.mark.parametrize("volume", [(8, 14, 14), (4, 4, 4), (16, 14, 14), (7, 5, 9)])
def test_largest_offset_is_exactly_offset_range_cells(volume):
    search = TokenSearch3D(16, 2, (2, 2, 2), max_frames=4, offset_range=2.0).double()
    size, values = search.grid_size(volume), search.value_volume(volume)
    ref = reference_grid(size, values, dtype=torch.float64)
    token = torch.tensor([2 / max(n - 1, 1) for n in values], dtype=torch.float64)  # one token, align_corners
    cell = torch.tensor([n / s for n, s in zip(values, size)], dtype=torch.float64)  # tokens per cell
    last = search.offset_net[-1]
    nn.init.zeros_(last.weight)
    for sign in (1.0, -1.0):
        nn.init.constant_(last.bias, 40.0 * sign)  # tanh = +-1 exactly
        points = search(torch.randn(1, 16, *volume, dtype=torch.float64))
        cells = (points - ref) / token / cell
        torch.testing.assert_close(cells, torch.full_like(cells, 2.0 * sign), rtol=0, atol=1e-12)


def _keys_of(attn: DeformableAttention3D, z: torch.Tensor, volume) -> torch.Tensor:
    """The deformable keys Z~ (without the position term) that ``attn`` reads from ``z``."""
    nn.init.zeros_(attn.pos.weight)
    nn.init.zeros_(attn.pos.bias)
    seen = {}

    def grab(mod, args, out) -> None:
        seen["ctx"] = args[1]

    hook = attn.attn.register_forward_hook(grab)
    attn(z, torch.zeros(z.shape[0], 2, z.shape[-1], dtype=z.dtype), volume)
    hook.remove()
    return seen["ctx"][:, :-2]


def test_a_temporal_cell_reads_every_frame_of_its_span():
    # T' = 16 with the grid capped at 4 steps: each cell spans 4 token frames (and 2 x 2 tokens)
    torch.manual_seed(0)
    volume, d = (16, 4, 4), 8
    attn = DeformableAttention3D(d, 2, "deformable", groups=2, downsample=(2, 2, 2), max_frames=4).double()
    z = torch.randn(1, math.prod(volume), d, dtype=torch.float64, requires_grad=True)
    keys = _keys_of(attn, z, volume)  # 1 x (4 x 2 x 2) x D
    assert keys.shape[1] == 16
    for cell_t in range(4):
        (grad,) = torch.autograd.grad(keys[0, cell_t * 4].sum(), z, retain_graph=True)
        frames = grad.reshape(*volume, d).abs().sum((1, 2, 3)).nonzero().flatten().tolist()
        assert frames == list(range(4 * cell_t, 4 * cell_t + 4))
    # at zero offset each key is exactly the mean of its 4 x 2 x 2 cell
    vol = z.detach().reshape(1, *volume, d).permute(0, 4, 1, 2, 3)
    pooled = F.avg_pool3d(vol, (4, 2, 2)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(keys.detach(), pooled, rtol=0, atol=1e-12)


# ---- 4. stochastic depth --------------------------------------------------------------------------


class _Fixed(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, cm, **kw):
        return torch.full_like(x, self.value), torch.full_like(cm, self.value), {}


@pytest.mark.parametrize("branch", ["attention", "mlp"])
def test_stochastic_depth_drops_a_whole_residual_branch_per_sample(branch):
    torch.manual_seed(0)
    d, b = 8, 200
    layer = SubLayer(d, _Fixed(1.0 if branch == "attention" else 0.0), 2.0, drop_path=0.5).train()
    nn.init.zeros_(layer.mlp.fc2.weight)
    nn.init.constant_(layer.mlp.fc2.bias, 1.0 if branch == "mlp" else 0.0)
    x, cm = torch.randn(b, 5, d), torch.randn(b, 2, d)
    x2, cm2, _ = layer(x, cm, slice(0, 2))
    dx, dcm = (x2 - x).reshape(b, -1), (cm2 - cm).reshape(b, -1)
    kept = dx[:, 0] > 1
    for delta in (dx, dcm):  # every element of a sample: 0 (dropped) or 1 / (1 - p) = 2 (kept)
        torch.testing.assert_close(delta, 2.0 * kept[:, None].float().expand_as(delta))
    assert 0.3 < kept.float().mean() < 0.7


# ---- 5. per-frame person mask -----------------------------------------------------------------------


def _frame_mask(cfg, b: int) -> torch.Tensor:
    mask = torch.ones(b, cfg.num_persons, cfg.frames, dtype=torch.bool)
    mask[0, 0, 2:4] = False  # a whole temporal patch of person 0
    mask[0, 1, 5] = False  # half a patch of person 1
    mask[1, 1, :] = False  # person 1 absent in sample 1
    mask[1, 0, ::3] = False
    return mask


@pytest.mark.parametrize("modality", ["rgb+pose", "pose"])
def test_garbage_in_undetected_frames_leaves_logits_and_maps_unchanged(modality):
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6, modality=modality).eval()
    x = example_inputs(model.config, 2)
    x["person_mask"] = _frame_mask(model.config, 2)
    hidden = ~x["person_mask"]
    with torch.no_grad():
        ref, ref_maps = model(**x, return_maps=True)
        for junk in (torch.randn_like(x["pose"]) * 100, torch.full_like(x["pose"], float("nan")),
                     torch.full_like(x["pose"], float("inf")), torch.full_like(x["pose"], 1e30)):
            pose = torch.where(hidden[..., None, None], junk, x["pose"])
            out, maps = model(**{**x, "pose": pose}, return_maps=True)
            torch.testing.assert_close(out, ref, rtol=0, atol=0)
            for k in ref_maps:
                torch.testing.assert_close(maps[k], ref_maps[k], rtol=0, atol=0)


def test_masked_tokens_are_left_out_of_attention_and_every_pooling():
    # garbage written into the tokens of fully masked patches after the embedding: only masking in
    # joint attention, temporal attention and the CM / importance pooling keeps the output
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6, modality="pose").eval()
    cfg = model.config
    x = example_inputs(cfg, 2)
    x["person_mask"] = _frame_mask(cfg, 2)
    patch_valid = x["person_mask"].reshape(2, cfg.num_persons, cfg.token_frames, -1).any(-1)  # B x M x T'
    token_hidden = (~patch_valid).transpose(1, 2)[..., None].expand(-1, -1, -1, cfg.num_joints).flatten(2)
    with torch.no_grad():
        ref, ref_maps = model(**x, return_maps=True)
        hook = model.pose_embed.register_forward_hook(
            lambda mod, args, out: torch.where(token_hidden[..., None], torch.randn_like(out) * 50, out))
        out, maps = model(**x, return_maps=True)
        hook.remove()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for k in ("joint_importance", "temporal_attention"):
        torch.testing.assert_close(maps[k], ref_maps[k], rtol=0, atol=1e-6)
    assert torch.equal(maps["temporal_reachable"], ref_maps["temporal_reachable"])


def test_a_per_clip_person_mask_is_the_same_as_every_frame():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6).eval()
    x = example_inputs(model.config, 2)
    x["person_mask"] = torch.ones(2, model.config.num_persons, dtype=torch.bool)  # B x M
    x["person_mask"][1, 1] = False
    per_frame = x["person_mask"][..., None].expand(-1, -1, model.config.frames)
    with torch.no_grad():
        a, maps_a = model(**x, return_maps=True)
        b, maps_b = model(**{**x, "person_mask": per_frame}, return_maps=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k in maps_a:
        torch.testing.assert_close(maps_a[k], maps_b[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="person_mask"):
        model(**{**x, "person_mask": per_frame[..., :3]})


# ---- 6. FLOPs of the trilinear reads -----------------------------------------------------------


@pytest.mark.parametrize("backward", [False, True])
def test_flop_report_counts_the_trilinear_reads(backward):
    model = deformact.build_model("demo", num_classes=5)
    cfg = model.config
    rep = model_report(model, batch=2, depth=5, backward=backward)
    c, points = cfg.dim // cfg.offset_groups, 2 * 2 * 2  # grid of (4/2, 4/2, 4/2) cells
    per_read = 2 * cfg.offset_groups * points * c * 8 * 2  # batch x groups x points x channels x 8 MACs
    assert trilinear_read_flops(c, points) * 2 * cfg.offset_groups == per_read
    if backward:  # + volume gradient (8 MACs) + coordinate gradient (8 corners x 3 axes MACs)
        per_read += 2 * cfg.offset_groups * points * c * (8 + 24) * 2
    for i in range(cfg.depth):
        assert rep["flops"][f"blocks.{i}.rgb.attn.read"] == per_read
    full = model_report(deformact.build_model("demo", num_classes=5, rgb_attention="full"), batch=2, depth=5)
    assert not any(k.endswith(".read") for k in full["flops"])


# ---- 7. explanations without built-in bias -----------------------------------------------------


def _uniform_joint_attention(model) -> None:
    for blk in model.blocks:  # zero queries: every valid key gets the same weight
        nn.init.zeros_(blk.joint.attn.attn.q.weight)
        nn.init.zeros_(blk.joint.attn.attn.q.bias)


@pytest.mark.parametrize("stride,per_frame", [(2, False), (3, False), (2, True)])
def test_uniform_attention_gives_uniform_joint_importance(stride, per_frame):
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=4, modality="pose", joint_stride=stride).eval()
    _uniform_joint_attention(model)
    x = example_inputs(model.config, 2)
    x["person_mask"][1, 1] = False
    if per_frame:
        x["person_mask"] = _frame_mask(model.config, 2)
        x["person_mask"][0, 1, :] = False
        x["person_mask"][0, 1, 6] = True  # person 1 of sample 0 seen in one frame only
    with torch.no_grad():
        _, maps = model(**x, return_maps=True)
    ji = maps["joint_importance"]
    present = x["person_mask"].reshape(2, model.config.num_persons, -1).any(-1)
    for b in range(2):
        n = present[b].sum() * model.config.num_joints
        expect = present[b][:, None].float().expand_as(ji[b]) / n
        torch.testing.assert_close(ji[b], expect, rtol=0, atol=1e-6)


def test_temporal_map_marks_pairs_that_never_share_a_group():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=4, modality="pose").eval()  # T' = 4, s_t = 2, L = 2
    x = example_inputs(model.config, 2)
    with torch.no_grad():
        _, maps = model(**x, return_maps=True)
    # block 0 strided {0, 2} {1, 3}, block 1 contiguous {0, 1} {2, 3}: (0, 3) and (1, 2) never meet
    apart = torch.zeros(4, 4, dtype=torch.bool)
    apart[0, 3] = apart[3, 0] = apart[1, 2] = apart[2, 1] = True
    reach = maps["temporal_reachable"]
    assert reach.shape == (2, 4, 4) and torch.equal(reach, ~apart.expand(2, 4, 4))
    att = maps["temporal_attention"]
    assert (att[~reach] == 0).all() and (att[reach] > 0).all()
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 4))
    # a step where nobody is seen cannot attend or be attended to
    x["person_mask"] = torch.ones(2, 2, 8, dtype=torch.bool)
    x["person_mask"][0, :, 4:6] = False  # step 2 of sample 0
    with torch.no_grad():
        _, maps = model(**x, return_maps=True)
    assert not maps["temporal_reachable"][0, 2].any() and not maps["temporal_reachable"][0, :, 2].any()
    assert torch.equal(maps["temporal_reachable"][1], ~apart)


def test_temporal_picture_draws_impossible_pairs_grey(tmp_path):
    from matplotlib.image import imread

    att = np.full((4, 4), 0.5)
    reach = np.ones((4, 4), bool)
    reach[0, 3] = reach[3, 0] = False
    steps = [[2 * k, 2 * k + 1] for k in range(4)]
    grey = lambda img: (np.abs(img[..., :3] - 208 / 255) < 0.02).all(-1).sum()
    plain = imread(plot_temporal_attention(att, steps, tmp_path / "a.png"))
    marked = imread(plot_temporal_attention(att, steps, tmp_path / "b.png", reach))
    assert grey(marked) > grey(plain) + 100


def test_sampling_points_land_on_their_token_centres():
    # known points: token centres of a 4 x 4 token grid over 64 x 64 pixel frames, 8 frames
    ij = torch.tensor([[0, 0], [1, 3], [3, 2]])
    t = torch.tensor([0, 1, 3])  # token frames of 2 video frames each
    loc = np.stack([(t.numpy() + 0.5) / 4, (ij[:, 0].numpy() + 0.5) / 4, (ij[:, 1].numpy() + 0.5) / 4], -1)
    frame, px, py = points_to_pixels(loc, 8, 64, 64)
    assert frame.tolist() == [1, 3, 7]  # the later frame of each token's pair (its centre is between)
    np.testing.assert_allclose(px, [8, 56, 40])
    np.testing.assert_allclose(py, [8, 24, 56])
    # a new model's points: the centres of its 2 x 2-token cells (pixels 16 and 48), in each cell's span
    model = deformact.build_model("demo", num_classes=4).eval()
    with torch.no_grad():
        _, maps = model(**example_inputs(model.config, 1), return_maps=True)
    frame, px, py = points_to_pixels(maps["sampling_locations"][0].numpy(), 8, 64, 64)
    assert set(np.round(px, 4).ravel()) == {16.0, 48.0} and set(np.round(py, 4).ravel()) == {16.0, 48.0}
    assert set(frame.ravel()) == {2, 6}  # cells span frames 0-3 and 4-7
