"""3DTS joint anchors (docs/DESIGN.md, "joint anchors"): where they start, what they read, masking."""

import pytest
import torch

import deformact
from deformact.errors import ConfigError
from deformact.models.anchors import from_clip_fraction, joint_anchors
from deformact.models.deformable import to_clip_fraction, trilinear_sample
from deformact.models.flops import example_inputs


def _anchored(mode: str = "deformable", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return deformact.build_model("demo", num_classes=6, search_anchors="joints", rgb_attention=mode, **kw).eval()


def test_anchor_points_are_the_seen_joints_at_the_patch_centre():
    pose = torch.zeros(1, 2, 4, 3, 3)  # B M T V C, temporal patch 2 -> T' = 2
    pose[0, 0, 0, 0] = torch.tensor([0.25, 0.75, 1.0])
    pose[0, 0, 1, 0] = torch.tensor([0.35, 0.65, 0.5])  # both frames seen: the mean
    pose[0, 0, 2, 1] = torch.tensor([0.9, 0.1, 0.8])  # seen in one frame of the patch: that frame
    pose[0, 0, 3, 1] = torch.tensor([0.0, 0.0, 0.0])
    pose[0, 1, 2, 2] = torch.tensor([0.4, 0.4, 0.9])  # seen, but the frame is masked
    mask = torch.ones(1, 2, 4, dtype=torch.bool)
    mask[0, 1, 2] = False
    points, valid = joint_anchors(pose, mask, temporal_patch=2)
    points, valid = points.view(2, 2, 3, 3), valid.view(2, 2, 3)  # T' M V (the pose tokens' order)
    torch.testing.assert_close(points[0, 0, 0], torch.tensor([0.25, 0.70, 0.30]))
    torch.testing.assert_close(points[1, 0, 1], torch.tensor([0.75, 0.1, 0.9]))
    assert valid.sum() == 2 and valid[0, 0, 0] and valid[1, 0, 1]


def test_clip_fractions_round_trip():
    pts = torch.rand(5, 7, 3)
    for volume in ((8, 7, 7), (4, 14, 14), (1, 7, 7)):
        back = to_clip_fraction(from_clip_fraction(pts, volume), volume)
        keep = torch.tensor([n > 1 for n in volume])
        torch.testing.assert_close(back[..., keep], pts[..., keep])


def test_a_new_anchored_model_reads_exactly_at_the_joints():
    for mode in ("deformable", "grid"):
        model = _anchored(mode)
        x = example_inputs(model.config, 2)
        x["person_mask"][1, 1, 4:] = False
        where, valid = joint_anchors(x["pose"], x["person_mask"], model.config.temporal_patch)
        with torch.no_grad():
            _, maps = model(**x, return_maps=True)
        loc = maps["sampling_locations"]  # B x L x G x P x 3
        grid = loc.shape[3] - where.shape[1]
        for block in range(loc.shape[1]):
            for g in range(loc.shape[2]):
                anchors = loc[:, block, g, grid:]
                torch.testing.assert_close(anchors[valid], where[valid], rtol=0, atol=1e-5)
                assert anchors[~valid].isnan().all() and loc[:, block, g, :grid].isfinite().all()


def test_an_anchor_read_is_the_token_under_the_joint():
    volume = torch.randn(1, 4, 4, 7, 7)  # S C T H W
    frac = torch.tensor([[[(2 + 0.5) / 4, (5 + 0.5) / 7, (1 + 0.5) / 7]]])  # centre of token (2, 5, 1)
    read = trilinear_sample(volume, from_clip_fraction(frac, (4, 7, 7)))
    torch.testing.assert_close(read[0, :, 0], volume[0, :, 2, 5, 1])


def check_undetected_frames_are_inert(model: torch.nn.Module) -> None:
    """Garbage (huge values, NaN) in frames where a person was not detected leaves the logits
    bit-identical."""
    x = example_inputs(model.config, 2)
    x["person_mask"][0, 1, 2:6] = False
    x["person_mask"][1, 0, ::3] = False
    hidden = ~x["person_mask"]
    with torch.no_grad():
        ref = model(**x)
        for junk in (torch.randn_like(x["pose"]) * 100, torch.full_like(x["pose"], float("nan"))):
            out = model(**{**x, "pose": torch.where(hidden[..., None, None], junk, x["pose"])})
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["deformable", "grid"])
def test_garbage_in_undetected_frames_cannot_reach_the_anchored_logits(mode):
    check_undetected_frames_are_inert(_anchored(mode))


def test_person_order_does_not_matter_with_anchors():
    model = _anchored(num_persons=3)
    x = example_inputs(model.config, 2)
    x["person_mask"][0, 2] = False
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a = model(**x)
        b = model(rgb=x["rgb"], pose=x["pose"][:, perm], person_mask=x["person_mask"][:, perm])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_anchor_offsets_and_keys_learn():
    model = _anchored().train()
    x = example_inputs(model.config, 2)
    model(**x).logsumexp(-1).sum().backward()
    for blk in model.blocks:
        anchor = blk.rgb.attn.anchor
        assert anchor.offset_out.weight.grad.abs().sum() > 0  # zero-initialized, but not stuck
        assert anchor.key[1].weight.grad.abs().sum() > 0


def test_anchors_need_a_known_value_and_are_inert_without_pose_or_points():
    with pytest.raises(ConfigError, match="search_anchors"):
        deformact.build_model("demo", num_classes=6, search_anchors="hands")
    for kw in ({"modality": "rgb"}, {"rgb_attention": "full"}):
        torch.manual_seed(0)
        plain = deformact.build_model("demo", num_classes=6, **kw).eval()
        torch.manual_seed(0)
        anchored = deformact.build_model("demo", num_classes=6, search_anchors="joints", **kw).eval()
        x = example_inputs(plain.config, 2)
        with torch.no_grad():
            torch.testing.assert_close(anchored(**x), plain(**x), rtol=0, atol=0)


def test_sampling_weights_are_the_cm_attention_and_skip_masked_anchors():
    model = _anchored()
    x = example_inputs(model.config, 2)
    x["person_mask"][1, 1] = False
    with torch.no_grad():
        _, maps = model(**x, return_maps=True)
    w, loc = maps["sampling_weights"], maps["sampling_locations"]  # B x L x P, B x L x G x P x 3
    assert w.shape == loc.shape[:2] + loc.shape[3:4]
    masked = loc[:, :, 0].isnan().any(-1)
    assert masked.any() and (w[masked] == 0).all() and (w >= 0).all()
    total = w.sum(-1)  # the rest goes to the CM tokens themselves
    assert ((total > 0.5) & (total <= 1 + 1e-6)).all()


def test_an_anchored_model_exports_to_onnx_with_the_same_numbers(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is installed by `make install`")
    from deformact.tools.export import check_onnx, export_onnx

    model = _anchored()
    export_onnx(model, tmp_path / "anchored.onnx")
    assert check_onnx(model, tmp_path / "anchored.onnx") < 1e-4  # masked frames and absent people included
