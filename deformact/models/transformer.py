"""The 3D deformable transformer (paper Sec. 3; docs/DESIGN.md)."""

from __future__ import annotations

from functools import partial

import torch
from einops import rearrange
from torch import Tensor, nn

from deformact.models.anchors import JointRGB, joint_anchors
from deformact.models.backbone import PositionEmbedding3D
from deformact.models.backbones import build_backbone
from deformact.models.config import ModelConfig
from deformact.models.deformable import DeformableAttention3D
from deformact.models.divided import DividedSpaceTimeAttention
from deformact.models.grouping import joint_assignments
from deformact.models.layers import DropPath, Mlp
from deformact.models.pose_embed import PoseEmbedding
from deformact.models.stride_attention import JointStrideAttention, TemporalStrideAttention


class CrossModalTokens(nn.Module):
    """Two learned tokens c_rgb, c_pose. With ``cross_modal=False`` they act as per-stream CLS tokens:
    c_rgb only meets the RGB stream, c_pose only the pose stream."""

    def __init__(self, dim: int, cross_modal: bool = True) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(2, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02)
        self.cross_modal = cross_modal

    def forward(self, batch: int) -> Tensor:
        return self.tokens[None].expand(batch, -1, -1)

    def select(self, stream: str) -> slice:
        """Which of the two tokens take part in a stream's attention."""
        if self.cross_modal:
            return slice(0, 2)
        return slice(0, 1) if stream == "rgb" else slice(1, 2)


class SubLayer(nn.Module):
    """Pre-norm residual attention followed by a pre-norm residual MLP, over tokens and CM tokens.
    Stochastic depth draws one mask per sample per residual branch, shared by tokens and CM tokens."""

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), attn, nn.LayerNorm(dim)
        self.mlp, self.drop_path = Mlp(dim, mlp_ratio), DropPath(drop_path)

    def forward(self, x: Tensor, cm: Tensor, sel: slice, **kwargs) -> tuple[Tensor, Tensor, dict]:
        dx, dcm, maps = self.attn(self.norm1(x), cm=self.norm1(cm[:, sel]), **kwargs)
        keep = self.drop_path.draw(x)
        x = x + self.drop_path.scaled(dx, keep)
        cm = torch.cat([cm[:, : sel.start], cm[:, sel] + self.drop_path.scaled(dcm, keep), cm[:, sel.stop:]], 1)
        keep = self.drop_path.draw(x)
        x = x + self.drop_path.scaled(self.mlp(self.norm2(x)), keep)
        cm = cm + self.drop_path.scaled(self.mlp(self.norm2(cm)), keep)
        return x, cm, maps


class DeformableTransformerBlock(nn.Module):
    """3D deformable attention (RGB), then local joint stride and temporal stride attention (pose)."""

    def __init__(self, cfg: ModelConfig, index: int, drop_path: float, joint_assignment: list[int]) -> None:
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.rgb = self.joint = self.time = None
        if cfg.use_rgb and cfg.rgb_attention == "divided":  # TimeSformer-style baseline over all RGB tokens
            self.rgb = SubLayer(d, DividedSpaceTimeAttention(dim=d, heads=h, attn_drop=cfg.attn_drop),
                                cfg.mlp_ratio, drop_path)
        elif cfg.use_rgb:
            self.rgb = SubLayer(d, DeformableAttention3D(
                d, h, cfg.rgb_attention, cfg.offset_groups, cfg.ref_downsample, cfg.ref_max_frames,
                cfg.offset_range, cfg.offset_kernel, cfg.attn_drop, offset_condition=cfg.offset_condition,
                anchors=cfg.search_anchors if cfg.use_pose else "none"),
                cfg.mlp_ratio, drop_path)
        self.joint_rgb = JointRGB(d) if cfg.joint_rgb and cfg.use_rgb and cfg.use_pose else None
        if cfg.use_pose:
            self.joint = SubLayer(d, JointStrideAttention(
                d, h, cfg.num_persons, cfg.num_joints, cfg.joint_stride, cfg.attn_drop, joint_assignment),
                cfg.mlp_ratio, drop_path)
            # strided and contiguous grouping alternate so every pair of steps can meet within L blocks
            self.time = SubLayer(d, TemporalStrideAttention(
                d, h, cfg.token_frames, cfg.temporal_stride, index % 2 == 1, cfg.attn_drop),
                cfg.mlp_ratio, drop_path)

    def forward(self, z: Tensor | None, p: Tensor | None, cm: Tensor, tokens: CrossModalTokens,
                volume: tuple[int, int, int], token_valid: Tensor | None, return_maps: bool,
                anchors: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor | None, Tensor | None, Tensor, dict]:
        maps: dict = {}
        if self.rgb is not None:
            extra = {} if anchors is None or p is None else {"anchors": (*anchors, p.flatten(1, 2))}
            z, cm, m = self.rgb(z, cm, tokens.select("rgb"), volume=volume, return_maps=return_maps, **extra)
            reads = m.pop("anchor_reads", None)
            if self.joint_rgb is not None and reads is not None:
                p = self.joint_rgb(p, reads, anchors[1])
            maps.update(m)
        if self.joint is not None:
            sel = tokens.select("pose")
            p, cm, m = self.joint(p, cm, sel, token_valid=token_valid, return_maps=return_maps)
            maps.update(m)
            p, cm, m = self.time(p, cm, sel, token_valid=token_valid, return_maps=return_maps)
            maps.update(m)
        return z, p, cm, maps


class DeformableTransformer(nn.Module):
    """RGB + pose action recognizer: backbone and pose embedding, L blocks, head on the CM tokens."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        t, s = cfg.token_frames, cfg.token_size
        self.volume = (t, s, s)
        if cfg.use_rgb:
            self.backbone = build_backbone(cfg)  # loads cfg.backbone_weights when set
            self.pos_embed = PositionEmbedding3D(cfg.dim, t, s, s)
        if cfg.use_pose:
            self.pose_embed = PoseEmbedding(cfg.dim, cfg.num_joints, t, cfg.pose_channels, cfg.temporal_patch)
        self.tokens = CrossModalTokens(cfg.dim, cfg.cross_modal_tokens)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        groups = joint_assignments(cfg.depth, cfg.num_joints, cfg.joint_stride, cfg.layout)
        self.blocks = nn.ModuleList(DeformableTransformerBlock(cfg, i, r, groups[i]) for i, r in enumerate(rates))
        self.norm = nn.LayerNorm(2 * cfg.dim)
        self.head = nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(2 * cfg.dim, cfg.num_classes))
        self.apply(partial(init_weights, mode=cfg.weight_init))
        if cfg.use_pose:
            self.pose_embed.reset_parameters()

    def joint_groups(self) -> Tensor:
        """Group of each joint type in each block's joint stride attention: LongTensor L x V
        (strided in even blocks, skeleton groups in odd blocks; :mod:`deformact.models.grouping`)."""
        cfg = self.config
        return torch.tensor(joint_assignments(cfg.depth, cfg.num_joints, cfg.joint_stride, cfg.layout))

    def forward(self, rgb: Tensor | None = None, pose: Tensor | None = None, person_mask: Tensor | None = None,
                return_maps: bool = False) -> Tensor | tuple[Tensor, dict]:
        """rgb: B x 3 x T x H x W; pose: B x M x T x V x C; person_mask: B x M (person present in the
        clip) or B x M x T (present and detected in that frame), True = use. Masked frames are
        zeroed at the input and masked in joint and temporal attention and in every pooling, so
        nothing in them can change the output."""
        cfg = self.config
        z, (p, token_valid, anchors) = self._embed_rgb(rgb), self._embed_pose(pose, person_mask)
        batch = (z if z is not None else p).shape[0]
        cm = self.tokens(batch)
        per_block: list[dict] = []
        for blk in self.blocks:
            z, p, cm, maps = blk(z, p, cm, self.tokens, self.volume, token_valid, return_maps, anchors)
            per_block.append(maps)
        logits = self.head(self.norm(cm.flatten(1)))
        if not return_maps:
            return logits
        out: dict[str, Tensor] = {}
        if cfg.use_pose:
            out["joint_importance"] = torch.stack([m["joint_importance"] for m in per_block]).mean(0)
            out["temporal_attention"] = torch.stack([m["temporal_attention"] for m in per_block]).mean(0)
            # pairs of steps that share a group in at least one block (others cannot attend at all)
            out["temporal_reachable"] = torch.stack([m["temporal_reachable"] for m in per_block]).any(0)
        if cfg.use_rgb and cfg.rgb_attention in ("deformable", "grid"):  # (t, y, x) clip fractions, B x L x G x P x 3
            out["sampling_locations"] = torch.stack([m["sampling_locations"] for m in per_block], 1)
            out["sampling_weights"] = torch.stack([m["sampling_weights"] for m in per_block], 1)  # B x L x P
        return logits, out

    def _embed_rgb(self, rgb: Tensor | None) -> Tensor | None:
        cfg = self.config
        if not cfg.use_rgb:
            return None
        expected = (3, cfg.frames, cfg.image_size, cfg.image_size)
        if rgb is None or tuple(rgb.shape[1:]) != expected:
            got = None if rgb is None else tuple(rgb.shape)
            raise ValueError(f"rgb must be B x {' x '.join(map(str, expected))} for this model, got {got}")
        z = self.backbone(rgb)
        return rearrange(z, "b d t h w -> b (t h w) d") + self.pos_embed()

    def _embed_pose(self, pose: Tensor | None, person_mask: Tensor | None
                    ) -> tuple[Tensor | None, Tensor | None, tuple[Tensor, Tensor] | None]:
        """-> pose tokens, their validity, and the 3DTS joint anchors (with ``search_anchors``)."""
        cfg = self.config
        if not cfg.use_pose:
            return None, None, None
        expected = (cfg.num_persons, cfg.frames, cfg.num_joints, cfg.pose_channels)
        if pose is None or tuple(pose.shape[1:]) != expected:
            got = None if pose is None else tuple(pose.shape)
            raise ValueError(f"pose must be B x {' x '.join(map(str, expected))} (M T V C) for this model, got {got}")
        b, m, t = pose.shape[:3]
        if person_mask is None:
            person_mask = torch.ones(b, m, dtype=torch.bool, device=pose.device)
        if tuple(person_mask.shape) not in ((b, m), (b, m, t)):
            raise ValueError(f"person_mask must be B x M or B x M x T ({b} x {m} [x {t}]), got "
                             f"{tuple(person_mask.shape)}")
        frame_mask = person_mask.bool()
        if frame_mask.dim() == 2:
            frame_mask = frame_mask[:, :, None].expand(b, m, t)
        # masked frames are zeroed (not only masked) so even NaN/inf there cannot leak into any sum
        pose = torch.where(frame_mask[..., None, None], torch.nan_to_num(pose, 0.0, 0.0, 0.0), 0.0)
        # a token (a temporal patch of one joint) is valid when its person is detected in any of its frames
        valid = frame_mask.reshape(b, m, cfg.token_frames, cfg.temporal_patch).any(-1)  # B x M x T'
        token_valid = valid.transpose(1, 2)[..., None].expand(b, cfg.token_frames, m, cfg.num_joints)
        anchors = None
        if cfg.use_rgb and cfg.search_anchors == "joints":
            anchors = joint_anchors(pose, frame_mask, cfg.temporal_patch)
        return self.pose_embed(pose), token_valid.reshape(b, cfg.token_frames, m * cfg.num_joints), anchors


def init_weights(m: nn.Module, mode: str = "xavier") -> None:
    """Start values of one module (``model.apply``): linear layers Glorot-uniform (``"xavier"``) or
    truncated normal with std 0.02 (``"trunc_normal"``), biases zero, LayerNorms identity; layers
    marked ``zero_init`` (offsets that start at zero) stay zero. Convolutions keep PyTorch's init.

    Why xavier is the default (docs/DESIGN.md, "initialization"): what an attention reads reaches
    its queries through two projections (value, output), each about 0.02 sqrt(D) = 0.16 of its
    input's scale at std 0.02 and D = 64. In a new demo-size model the 3D deformable attention then
    changes the CM tokens by 1.4 % of their norm (60-97 % at Glorot's scale), the RGB stream barely
    reaches the head, and on the objects set the fused model sat at the pose-only level for 10-20
    epochs; at Glorot's scale it leaves it in 2-3.
    """
    if isinstance(m, nn.Linear) and getattr(m, "zero_init", False):  # offsets that start at zero
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        if mode == "xavier":
            nn.init.xavier_uniform_(m.weight)
        else:
            nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
