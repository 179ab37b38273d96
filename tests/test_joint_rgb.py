"""Joint RGB (docs/DESIGN.md, "joint RGB"): each pose token receives the RGB read at its anchor."""

import pytest
import torch
from test_anchors import check_undetected_frames_are_inert

import deformact
from deformact.errors import ConfigError
from deformact.models.anchors import from_clip_fraction
from deformact.models.deformable import trilinear_sample
from deformact.models.flops import example_inputs


def _model(joint_rgb: bool = True, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return deformact.build_model("demo", num_classes=6, search_anchors="joints", joint_rgb=joint_rgb, **kw).eval()


def _wake(model: torch.nn.Module) -> None:
    """Give the zero-initialized projections (and anchor offsets) non-zero weights."""
    torch.manual_seed(1)
    for blk in model.blocks:
        torch.nn.init.normal_(blk.joint_rgb.proj.weight, std=0.2)
        torch.nn.init.normal_(blk.rgb.attn.anchor.offset_out.weight, std=0.2)


def test_a_new_joint_rgb_model_is_the_anchored_model():
    plain, fed = _model(False), _model(True)
    fed.load_state_dict({**fed.state_dict(), **plain.state_dict()})
    x = example_inputs(plain.config, 2)
    with torch.no_grad():
        torch.testing.assert_close(fed(**x), plain(**x), rtol=0, atol=0)


def test_each_pose_token_gets_the_read_at_its_own_joint():
    model = _model(modality="rgb+pose")
    blk = model.blocks[0]
    torch.nn.init.normal_(blk.joint_rgb.proj.weight, std=0.2)
    x = example_inputs(model.config, 1)
    x["person_mask"][0, 1, 2:] = False
    cfg = model.config
    seen = {}

    def grab(module, args):
        seen.setdefault("p", args[0])

    blk.joint.register_forward_pre_hook(grab)
    with torch.no_grad():
        model(**x)
        z = model._embed_rgb(x["rgb"])
        p, _, (points, valid) = model._embed_pose(x["pose"], x["person_mask"])
        zn = blk.rgb.norm1(z)
        t, s = cfg.token_frames, cfg.token_size
        vol = blk.rgb.attn.search.value_volume((t, s, s))
        zt = zn.unflatten(1, (t, s, s)).permute(0, 4, 1, 2, 3)  # no time pooling at the demo's size
        assert tuple(zt.shape[2:]) == vol
        g = cfg.offset_groups
        at = from_clip_fraction(points, vol)  # zero offsets: the reads are at the joints
        reads = torch.cat([trilinear_sample(part, at) for part in zt.chunk(g, 1)], 1).transpose(1, 2)
        # the pose tokens after the RGB sub-layer (which leaves them alone) plus the projected reads
        want = p + blk.joint_rgb.proj(blk.joint_rgb.norm(reads)).mul(valid[..., None]).view_as(p)
    torch.testing.assert_close(seen["p"], want, rtol=1e-5, atol=1e-5)
    assert not valid.all()  # the masked frames' anchors added nothing


def test_garbage_in_undetected_frames_cannot_reach_the_logits():
    model = _model()
    _wake(model)
    check_undetected_frames_are_inert(model)


def test_the_zero_initialized_projection_learns():
    model = _model().train()
    x = example_inputs(model.config, 2)
    model(**x).logsumexp(-1).sum().backward()
    for blk in model.blocks:
        assert blk.joint_rgb.proj.weight.grad.abs().sum() > 0  # zero-initialized, but not stuck


def test_joint_rgb_needs_anchors():
    with pytest.raises(ConfigError, match="joint_rgb needs search_anchors=joints"):
        deformact.build_model("demo", num_classes=6, joint_rgb=True)


def test_a_joint_rgb_model_exports_to_onnx_with_the_same_numbers(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is installed by `make install`")
    from deformact.tools.export import check_onnx, export_onnx

    model = _model()
    _wake(model)
    export_onnx(model, tmp_path / "joint_rgb.onnx")
    assert check_onnx(model, tmp_path / "joint_rgb.onnx") < 1e-4
