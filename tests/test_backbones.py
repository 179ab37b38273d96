"""The RGB backbone family (stem, X3D-style), local backbone weights, and CM-conditioned offsets."""

from __future__ import annotations

import pickle

import pytest
import torch

import deformact
from deformact.errors import CheckpointError
from deformact.models import make_config
from deformact.models.backbones import X3DBackbone, backbone_figures, build_backbone, load_backbone_weights
from deformact.models.deformable import TokenSearch3D, reference_grid

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

TINY = dict(num_classes=5, frames=4, image_size=32, dim=32, heads=2, depth=2)


@pytest.mark.parametrize("backbone", ["stem", "r2plus1d", "x3d_tiny", "x3d_s"])
def test_every_backbone_gives_the_token_volume(backbone):
    cfg = make_config("demo", backbone=backbone, **TINY)
    net = build_backbone(cfg)
    out = net(torch.randn(2, 3, 4, 32, 32))
    assert out.shape == (2, 32, 2, 2, 2)  # D x T/2 x H/16 x W/16
    model = deformact.build_model("demo", backbone=backbone, **TINY)
    logits = model(rgb=torch.randn(2, 3, 4, 32, 32), pose=torch.rand(2, 2, 4, 17, 3))
    assert logits.shape == (2, 5)


def test_r2plus1d_halves_the_resolution_one_step_at_a_time():
    """The stem goes to /4 with one stride-4 conv; r2plus1d passes /2, /4, /8, /16 (docs/DESIGN.md)."""
    net = build_backbone(make_config("demo", backbone="r2plus1d", **{**TINY, "image_size": 64}))
    sizes = []
    for stage in (net.stem, net.stage0, net.stage1, net.stage2):
        stage.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[2:])))
    out = net(torch.randn(1, 3, 4, 64, 64))
    assert sizes == [(4, 32, 32), (4, 16, 16), (4, 8, 8), (2, 4, 4)] and out.shape == (1, 32, 2, 4, 4)
    stem = build_backbone(make_config("demo", **{**TINY, "image_size": 64}))
    assert stem.stem[0].stride == (1, 4, 4) and net.stem[0].stride == (1, 2, 2)


def test_x3d_sizes_follow_the_family():
    s, m = (sum(p.numel() for p in X3DBackbone(dim=64, variant=v).parameters()) for v in ("x3d_s", "x3d_m"))
    tiny = sum(p.numel() for p in X3DBackbone(dim=64, variant="x3d_tiny").parameters())
    assert tiny < s < m
    fig = backbone_figures(make_config("demo", backbone="x3d_tiny", **TINY), batch=2, repeats=1)
    assert fig["params"] == sum(p.numel() for p in build_backbone(
        make_config("demo", backbone="x3d_tiny", **TINY)).parameters())
    assert fig["gflops"] > 0 and fig["step_ms"] > 0 and fig["out"] == (32, 2, 2, 2)


@pytest.mark.parametrize("backbone", ["stem", "r2plus1d", "x3d_tiny"])
def test_local_weights_load_exactly(tmp_path, backbone):
    src = deformact.build_model("demo", backbone=backbone, **TINY)
    torch.nn.init.normal_(next(src.backbone.parameters()))
    path = tmp_path / "w.pt"
    torch.save(src.backbone.state_dict(), path)
    model = deformact.build_model("demo", backbone=backbone, backbone_weights=str(path), **TINY)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    torch.save({"state_dict": src.state_dict()}, tmp_path / "whole.pt")  # a whole model: "backbone." prefix
    other = deformact.build_model("demo", backbone=backbone, **TINY)
    load_backbone_weights(other.backbone, tmp_path / "whole.pt")
    assert all(torch.equal(other.backbone.state_dict()[k], v) for k, v in src.backbone.state_dict().items())


def test_local_weights_mismatch_names_the_keys(tmp_path):
    stem = deformact.build_model("demo", **TINY).backbone
    x3d = deformact.build_model("demo", backbone="x3d_tiny", **TINY).backbone
    torch.save(stem.state_dict(), tmp_path / "stem.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: .*stem\.0\.weight|unexpected keys: .*stage1"):
        load_backbone_weights(x3d, tmp_path / "stem.pt")
    state = dict(stem.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["proj.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: proj\.bias; unexpected keys: extra\.weight"):
        load_backbone_weights(stem, tmp_path / "bad.pt")
    state = dict(stem.state_dict())
    state["proj.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shapes differ.*proj\.bias \(3,\)"):
        load_backbone_weights(stem, tmp_path / "shape.pt")
    (tmp_path / "code.pt").write_bytes(pickle.dumps(print, protocol=2))  # anything but tensors is refused, never run
    with pytest.raises(CheckpointError, match="cannot be read as weights"):
        load_backbone_weights(stem, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(stem, tmp_path / "missing.pt")


def test_cm_conditioned_offsets_start_on_the_grid_and_see_the_cm_tokens():
    model = deformact.build_model("demo", offset_condition="cm", **TINY).eval()
    rgb, pose = torch.randn(2, 3, 4, 32, 32), torch.rand(2, 2, 4, 17, 3)
    _, maps = model(rgb=rgb, pose=pose, return_maps=True)
    _, again = model(rgb=-rgb, pose=pose.flip(0), return_maps=True)
    assert torch.equal(maps["sampling_locations"], again["sampling_locations"])  # the grid, whatever the input
    grid = deformact.build_model("demo", rgb_attention="grid", **TINY).eval()
    _, ref = grid(rgb=rgb, pose=pose, return_maps=True)
    torch.testing.assert_close(maps["sampling_locations"], ref["sampling_locations"])
    search = TokenSearch3D(32, 2, (2, 2, 2), 4, 2.0, condition="cm")
    plain = TokenSearch3D(32, 2, (2, 2, 2), 4, 2.0)
    for s in (search, plain):
        torch.nn.init.normal_(s.offset_net[-1].weight, std=0.5)
    zv = torch.randn(1, 32, 2, 4, 4)
    cm1, cm2 = torch.randn(1, 2, 32), torch.randn(1, 2, 32)
    assert not torch.allclose(search(zv, cm1), search(zv, cm2))  # the offsets follow the CM tokens ...
    assert torch.equal(plain(zv, cm1), plain(zv, cm2))  # ... only when conditioned
    ref = reference_grid(search.grid_size((2, 4, 4)), search.value_volume((2, 4, 4)))
    assert search(zv, cm1).shape == (2, ref.shape[0], 3)
