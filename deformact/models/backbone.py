"""RGB backbone: frames -> feature volume B x D x T' x H/16 x W/16 (docs/DESIGN.md, "RGB backbone").

``model.backbone="stem"`` and ``"r2plus1d"`` (the other members of the family:
:mod:`deformact.models.backbones`).
A compact ResNet3D-style stem trained from scratch (the paper's "no pre-training"). Blocks are
(2+1)D — a 1x3x3 spatial conv then a 3x1x1 temporal conv — which costs far less than full 3x3x3
kernels at the same receptive field.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn(cin: int, cout: int, kernel: tuple, stride: tuple, relu: bool = True) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    layers = [nn.Conv3d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm3d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class ResBlock2Plus1D(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        st, sh, sw = stride
        self.spatial = _conv_bn(cin, cout, (1, 3, 3), (1, sh, sw))
        self.temporal = _conv_bn(cout, cout, (3, 1, 1), (st, 1, 1), relu=False)
        self.shortcut = (
            nn.Identity() if cin == cout and stride == (1, 1, 1)
            else _conv_bn(cin, cout, (1, 1, 1), stride, relu=False)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.temporal(self.spatial(x)) + self.shortcut(x))


class RGBBackbone(nn.Module):
    """Stem to /4 spatially, then stages at /8 and /16 (the latter also /temporal_patch in time), then
    1x1x1 to D.

    ``gradual=False`` (``model.backbone="stem"``): one strided 5x5 conv to /4. ``gradual=True``
    (``"r2plus1d"``): a 1x3x3 conv to /2, then a (2+1)D residual block to /4 (width c0), so a block
    works at /4 before anything is thrown away; that is what lets thin limbs survive (docs/RESULTS.md,
    "the RGB stream alone": on the demo set the RGB-only model tells arm from leg in 90 % of clips
    against the stem's 65 %, at 2.2-2.3x the stem's CPU time)."""

    def __init__(self, dim: int, channels: tuple[int, ...] = (32, 64, 128), temporal_patch: int = 2,
                 *, gradual: bool = False) -> None:
        super().__init__()
        c0, c1, c2 = channels
        if gradual:
            self.stem = _conv_bn(3, c0, (1, 3, 3), (1, 2, 2))
            self.stage0: nn.Module = ResBlock2Plus1D(c0, c0, (1, 2, 2))
        else:  # no max-pool: 3D pooling is slow on CPU and adds little here
            self.stem = _conv_bn(3, c0, (1, 5, 5), (1, 4, 4))
            self.stage0 = nn.Identity()
        self.stage1 = ResBlock2Plus1D(c0, c1, (1, 2, 2))
        self.stage2 = ResBlock2Plus1D(c1, c2, (temporal_patch, 2, 2))
        self.proj = nn.Conv3d(c2, dim, 1)

    def forward(self, rgb: Tensor) -> Tensor:
        # channels-last 3D lets oneDNN (CPU) and cuDNN (GPU) pick their fast convolution kernels
        x = rgb.contiguous(memory_format=torch.channels_last_3d)
        return self.proj(self.stage2(self.stage1(self.stage0(self.stem(x))))).contiguous()


class PositionEmbedding3D(nn.Module):
    """Factorized learned 3D position embedding: pos_t + pos_h + pos_w."""

    def __init__(self, dim: int, t: int, h: int, w: int) -> None:
        super().__init__()
        self.t = nn.Parameter(torch.zeros(t, 1, 1, dim))
        self.h = nn.Parameter(torch.zeros(1, h, 1, dim))
        self.w = nn.Parameter(torch.zeros(1, 1, w, dim))
        for p in (self.t, self.h, self.w):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self) -> Tensor:
        return (self.t + self.h + self.w).flatten(0, 2)  # (t h w) x D
