"""The RGB backbone family (docs/DESIGN.md, "RGB backbone"): the compact stem and X3D-style networks.

Every backbone maps B x 3 x T x H x W frames to a B x D x T/temporal_patch x H/16 x W/16 feature
volume (the token volume of the 3D deformable attention, paper Sec. 3.1), trains from scratch, and
can start from user-supplied local weights (:func:`load_backbone_weights`: read with
``weights_only=True``, keys checked strictly; nothing is ever downloaded).

X3D (Feichtenhofer, CVPR 2020): a 1x3x3 stem conv plus a depthwise 5x1x1 temporal conv, then four
stages of bottlenecks (1x1x1 expand by 2.25 -> depthwise 3x3x3 -> squeeze-excitation in every
other block -> swish -> 1x1x1 project) at widths 24, 48, 96, 192, and a 1x1x1 conv to the output.
X3D-XS and X3D-S share that network (depths 1, 2, 5, 3; they differ in input frames and size) and
X3D-M deepens it (3, 5, 11, 7). Ours differ from the paper's in where they stride: total spatial
stride 16 instead of 32 (the last stage keeps its resolution, as the token grid needs H/16), and
the last stage strides time by ``temporal_patch`` (X3D never strides time). ``x3d_tiny`` is ours:
half the widths and fewer blocks (1, 1, 3, 2), sized for the CPU demo.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deformact.errors import CheckpointError

# name -> (stage widths, blocks per stage, expansion); the stem has the first stage's width
X3D_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], float]] = {
    "x3d_tiny": ((12, 24, 48, 96), (1, 1, 3, 2), 2.25),
    "x3d_s": ((24, 48, 96, 192), (1, 2, 5, 3), 2.25),
    "x3d_m": ((24, 48, 96, 192), (3, 5, 11, 7), 2.25),
}


def _conv_bn(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1),
             groups: int = 1) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, pad, groups=groups, bias=False), nn.BatchNorm3d(cout))


class SqueezeExcite(nn.Module):
    """Channel gating by a bottleneck MLP over the globally pooled volume (X3D: ratio 1/16)."""

    def __init__(self, *, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        hidden = max(8, int(round(channels * ratio)))
        self.fc1, self.fc2 = nn.Conv3d(channels, hidden, 1), nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc2(self.fc1(x.mean((2, 3, 4), keepdim=True)).relu()).sigmoid()


class X3DBlock(nn.Module):
    """X3D bottleneck: 1x1x1 expand -> depthwise 3x3x3 (strided) -> [SE] -> swish -> 1x1x1 project,
    plus the (projected) shortcut."""

    def __init__(self, *, cin: int, cout: int, inner: int, stride: tuple[int, int, int], se: bool) -> None:
        super().__init__()
        self.expand = nn.Sequential(_conv_bn(cin, inner, (1, 1, 1)), nn.ReLU(inplace=True))
        self.depthwise = _conv_bn(inner, inner, (3, 3, 3), stride, groups=inner)
        self.se = SqueezeExcite(channels=inner) if se else nn.Identity()
        self.project = _conv_bn(inner, cout, (1, 1, 1))
        self.shortcut = (nn.Identity() if cin == cout and stride == (1, 1, 1)
                         else _conv_bn(cin, cout, (1, 1, 1), stride))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = nn.functional.silu(self.se(self.depthwise(self.expand(x))))
        return self.act(self.project(y) + self.shortcut(x))


class X3DBackbone(nn.Module):
    """An X3D-style network at total stride ``temporal_patch`` x 16 x 16, then 1x1x1 to ``dim``."""

    def __init__(self, *, dim: int, variant: str = "x3d_s", temporal_patch: int = 2) -> None:
        super().__init__()
        widths, depths, expansion = X3D_VARIANTS[variant]
        self.variant = variant
        w0 = widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, w0, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
            _conv_bn(w0, w0, (5, 1, 1), groups=w0), nn.ReLU(inplace=True))
        blocks, cin = [], w0
        spatial = (2, 2, 2, 1)  # stem /2, then /4, /8, /16; the last stage keeps the token grid
        for s, (width, depth) in enumerate(zip(widths, depths)):
            for i in range(depth):
                st = (temporal_patch if s == len(widths) - 1 else 1, spatial[s], spatial[s]) if i == 0 else (1, 1, 1)
                blocks.append(X3DBlock(cin=cin, cout=width, inner=int(round(width * expansion)), stride=st,
                                       se=i % 2 == 0))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Conv3d(cin, dim, 1)

    def forward(self, rgb: Tensor) -> Tensor:
        x = rgb.contiguous(memory_format=torch.channels_last_3d)
        return self.proj(self.blocks(self.stem(x))).contiguous()


def build_backbone(cfg: Any) -> nn.Module:
    """The backbone a :class:`~deformact.models.config.ModelConfig` names (``cfg.backbone``), with
    ``cfg.backbone_weights`` loaded when set."""
    from deformact.models.backbone import RGBBackbone

    if cfg.backbone in ("stem", "r2plus1d"):
        net: nn.Module = RGBBackbone(cfg.dim, cfg.backbone_channels, cfg.temporal_patch,
                                     gradual=cfg.backbone == "r2plus1d")
    else:
        net = X3DBackbone(dim=cfg.dim, variant=cfg.backbone, temporal_patch=cfg.temporal_patch)
    if cfg.backbone_weights:
        load_backbone_weights(net, cfg.backbone_weights)
    return net


def _as_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):  # a training checkpoint's usual wrappers
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"backbone weights {path}: not a state dict (names -> tensors)")
    state = dict(obj)
    inner = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return inner or state  # a whole deformact model's state dict: its backbone part


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Load a user-supplied local state dict into ``module`` (never downloads, never runs code:
    ``torch.load(weights_only=True)``). Keys must match exactly: CheckpointError names the missing
    and unexpected keys, or the tensors whose shapes differ."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, foreign or code-carrying files all land here
        raise CheckpointError(f"backbone weights {path}: cannot be read as weights "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    state = _as_state_dict(obj, path)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))

    def names(keys: list[str]) -> str:
        return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

    if missing or unexpected:
        parts = [f"missing keys: {names(missing)}" if missing else "",
                 f"unexpected keys: {names(unexpected)}" if unexpected else ""]
        raise CheckpointError(f"backbone weights {path} do not fit the {type(module).__name__}: "
                              + "; ".join(p for p in parts if p))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if shapes:
        raise CheckpointError(f"backbone weights {path}: shapes differ (file vs model): {names(shapes)}")
    module.load_state_dict(state, strict=True)


def backbone_figures(cfg: Any, *, batch: int = 8, repeats: int = 3) -> dict[str, Any]:
    """Params, forward GFLOPs (one clip) and the forward + backward time of one batch (ms, best of
    ``repeats`` after a warm-up, on the CPU with torch's current threads) of ``cfg``'s backbone."""
    import time

    from torch.utils.flop_counter import FlopCounterMode

    net = build_backbone(cfg).train()
    x = torch.randn(batch, 3, cfg.frames, cfg.image_size, cfg.image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x[:1])
    flops = counter.get_total_flops()
    times = []
    for i in range(1 + repeats):
        tic = time.perf_counter()
        net(x).square().mean().backward()
        if i:
            times.append(time.perf_counter() - tic)
    return {"backbone": cfg.backbone, "params": sum(p.numel() for p in net.parameters()),
            "gflops": flops / 1e9, "step_ms": 1e3 * min(times), "batch": batch,
            "out": tuple(net(x[:1]).shape[1:])}
