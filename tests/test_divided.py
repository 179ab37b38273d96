"""rgb_attention="divided": TimeSformer-style divided space-time attention over all RGB tokens. Shapes,
gradients, absent people, and the permutation properties that make it *divided*: the temporal step
only mixes tokens at the same (h, w), the spatial step only tokens of the same time step."""

import math

import pytest
import torch

import deformact
from deformact.models.divided import DividedSpaceTimeAttention, grouped_attention
from deformact.models.flops import example_inputs, model_report
from deformact.tools.ablation import ROW_NAMES, ROWS

VOLUME = (4, 3, 5)  # T' x H' x W'
S = VOLUME[1] * VOLUME[2]


def _module(dim: int = 16, seed: int = 0) -> DividedSpaceTimeAttention:
    torch.manual_seed(seed)
    return DividedSpaceTimeAttention(dim=dim, heads=2).eval()


def _tokens(b: int = 2, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(b, math.prod(VOLUME), dim), torch.randn(b, 2, dim)


@pytest.mark.parametrize("preset,modality", [("demo", "rgb+pose"), ("demo", "rgb"), ("paper", "rgb+pose")])
def test_shapes_and_maps(preset, modality):
    torch.manual_seed(0)
    model = deformact.build_model(preset, num_classes=7, modality=modality, rgb_attention="divided").eval()
    x = example_inputs(model.config, batch=2 if preset == "demo" else 1)
    with torch.no_grad():
        logits, maps = model(**x, return_maps=True)
    assert logits.shape == (x["rgb"].shape[0], 7) and torch.isfinite(logits).all()
    assert "sampling_locations" not in maps  # no sampling points: every token is a key
    assert ("joint_importance" in maps) == model.config.use_pose


@pytest.mark.parametrize("cross_modal_tokens", [True, False])
def test_every_parameter_gets_a_gradient(cross_modal_tokens):
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=5, rgb_attention="divided", cross_modal_tokens=cross_modal_tokens)
    model(**example_inputs(model.config, 2)).logsumexp(-1).sum().backward()
    for blk in model.blocks:
        for name, p in blk.rgb.attn.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_absent_people_cannot_change_the_logits():
    torch.manual_seed(0)
    model = deformact.build_model("demo", num_classes=6, rgb_attention="divided").eval()
    x = example_inputs(model.config, 3)
    x["person_mask"][:, 1] = False
    with torch.no_grad():
        ref = model(**x)
        for junk in (torch.randn_like(x["pose"][:, 1]) * 100, torch.full_like(x["pose"][:, 1], float("nan"))):
            x["pose"][:, 1] = junk
            torch.testing.assert_close(model(**x), ref, rtol=0, atol=0)


def _changed_tokens(step, z, cm, t0: int, s0: int) -> set[tuple[int, int]]:
    """(t, s) of the outputs of ``step`` that change when only the token at (t0, s0) changes."""
    z2 = z.clone()
    z2.view(z.shape[0], VOLUME[0], S, -1)[:, t0, s0] += torch.randn(z.shape[-1])
    with torch.no_grad():
        diff = (step(z2, cm, VOLUME)[0] - step(z, cm, VOLUME)[0]).abs().amax((0, 2)).view(VOLUME[0], S)
    return {(t, s) for t, s in (diff > 0).nonzero().tolist()}


def test_temporal_step_mixes_only_tokens_at_the_same_position_and_spatial_only_the_same_step():
    mod, (z, cm) = _module(), _tokens()
    t0, s0 = 2, 7
    assert _changed_tokens(mod.temporal, z, cm, t0, s0) == {(t, s0) for t in range(VOLUME[0])}
    assert _changed_tokens(mod.spatial, z, cm, t0, s0) == {(t0, s) for s in range(S)}
    # both steps together: one token reaches every token in one block
    assert _changed_tokens(mod, z, cm, t0, s0) == {(t, s) for t in range(VOLUME[0]) for s in range(S)}


def test_temporal_step_is_equivariant_to_a_different_time_order_at_every_position():
    """Each (h, w) position's steps form one set: shuffling time independently per position
    shuffles the outputs the same way and leaves the CM update unchanged (so no step mixes
    positions). The spatial step has the mirror property: space shuffled independently per step."""
    mod, (z, cm) = _module(), _tokens()
    b, d = z.shape[0], z.shape[-1]
    grid = z.view(b, VOLUME[0], S, d)
    perm_t = torch.stack([torch.randperm(VOLUME[0]) for _ in range(S)], 1)  # T' x S: per position
    perm_s = torch.stack([torch.randperm(S) for _ in range(VOLUME[0])])  # T' x S: per step
    s_idx = torch.arange(S)[None].expand(VOLUME[0], S)
    t_idx = torch.arange(VOLUME[0])[:, None].expand(VOLUME[0], S)
    with torch.no_grad():
        for step, (ti, si) in ((mod.temporal, (perm_t, s_idx)), (mod.spatial, (t_idx, perm_s))):
            out, dcm = step(z, cm, VOLUME)
            shuffled = grid[:, ti, si].reshape(b, -1, d)
            out2, dcm2 = step(shuffled, cm, VOLUME)
            torch.testing.assert_close(out2, out.view(b, VOLUME[0], S, d)[:, ti, si].reshape(b, -1, d),
                                       rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(dcm2, dcm, rtol=1e-5, atol=1e-6)
        # a shuffle of the wrong kind is not an equivariance: the divided structure is visible
        out, _ = mod.temporal(z, cm, VOLUME)
        out2, _ = mod.temporal(grid[:, t_idx, perm_s].reshape(b, -1, d), cm, VOLUME)
        assert not torch.allclose(out2, out.view(b, VOLUME[0], S, d)[:, t_idx, perm_s].reshape(b, -1, d), atol=1e-4)


def test_each_step_is_attention_within_its_groups_plus_the_cm_tokens():
    """Against a loop over groups: group tokens + CM tokens attend; CM update = mean over groups."""
    mod, (z, cm) = _module(), _tokens()
    b, d = z.shape[0], z.shape[-1]
    grid = z.view(b, VOLUME[0], S, d)
    with torch.no_grad():
        for step, attn, groups in ((mod.temporal, mod.temporal_attn, [grid[:, :, s] for s in range(S)]),
                                   (mod.spatial, mod.spatial_attn, [grid[:, t] for t in range(VOLUME[0])])):
            outs = [attn(torch.cat([g, cm], 1))[0] for g in groups]
            n = groups[0].shape[1]
            out, dcm = step(z, cm, VOLUME)
            expect_cm = torch.stack([o[:, n:] for o in outs]).mean(0)
            torch.testing.assert_close(dcm, expect_cm, rtol=1e-5, atol=1e-6)
            if step == mod.temporal:
                expect = torch.stack([o[:, :n] for o in outs], 2)  # B x T' x S x D
            else:
                expect = torch.stack([o[:, :n] for o in outs], 1)
            torch.testing.assert_close(out, expect.reshape(b, -1, d), rtol=1e-5, atol=1e-6)
        # the helper on its own: one group equals plain attention over [group; CM]
        one, dcm = grouped_attention(mod.spatial_attn, grid[:, :1], cm)
        torch.testing.assert_close(one[:, 0], mod.spatial_attn(torch.cat([grid[:, 0], cm], 1))[0][:, :S])


def test_is_an_ablation_row_and_costs_between_deformable_and_full():
    assert "divided" in ROW_NAMES
    row = next(r for r in ROWS if r.name == "divided")
    assert row.overrides == ("model.rgb_attention=divided",)
    # at the paper's scale (8 x 14 x 14 tokens; at the demo's 8 x 4 x 4, full attention is cheaper than
    # divided, whose every token is a query and a key of two attentions)
    flops = {m: model_report(deformact.build_model("paper", num_classes=5, rgb_attention=m))["flops"]["blocks"]
             for m in ("deformable", "divided", "full")}
    assert flops["deformable"] < flops["divided"] < flops["full"]
