"""Model configuration and the preset registry.

:class:`ModelConfig` holds every size and switch of the model (docs/DESIGN.md says which follow the
paper and which are ours). A preset is a named set of field values, registered with
:func:`register_preset` in the manner of timm's ``@register_model``; :func:`list_presets` feeds the
command line's ``--preset`` choices and :data:`DEFAULT_PRESET` is the one used when none is named
(by ``build_model`` and by a run config's ``model`` section alike).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deformact.errors import ConfigError

MODALITIES = ("rgb+pose", "rgb", "pose")
RGB_ATTENTIONS = ("deformable", "grid", "full", "divided")
OFFSET_CONDITIONS = ("none", "cm")
SEARCH_ANCHORS = ("none", "joints")
BACKBONES = ("stem", "r2plus1d", "x3d_tiny", "x3d_s", "x3d_m")
WEIGHT_INITS = ("xavier", "trunc_normal")


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`DeformableTransformer`; plain data, so it travels in
    checkpoints. Fields marked [paper] follow the paper; the rest are this project's choices."""

    num_classes: int = 60
    modality: str = "rgb+pose"  # [paper] RGB + 2D pose, fused inside the model
    frames: int = 16  # [paper] T
    image_size: int = 224  # [paper] H = W
    num_joints: int = 17  # V (COCO-17; 25 NTU, 13 Penn Action)
    num_persons: int = 2  # M
    pose_channels: int = 3  # x, y, score
    dim: int = 256  # D
    depth: int = 4  # L, blocks
    heads: int = 8  # h
    mlp_ratio: float = 4.0
    temporal_patch: int = 2  # T' = T / temporal_patch, shared by both streams
    # RGB backbone: stage widths of the compact ResNet3D-style stem (total stride 2 x 16 x 16)
    backbone_channels: tuple[int, ...] = (32, 64, 128)
    backbone_weights: str | None = None  # optional local state_dict for the backbone
    # 3D deformable attention / 3D token search
    rgb_attention: str = "deformable"  # "deformable" | "grid" (no offsets) | "full" | "divided" (all RGB tokens)
    ref_downsample: tuple[int, int, int] = (2, 2, 2)  # reference grid factor r over T' x H' x W'
    ref_max_frames: int = 4  # cap on the grid's temporal size: keys per query stay fixed as T grows
    offset_groups: int = 2  # offset groups, each reads its own channel slice at its own points
    offset_range: float = 2.0  # max offset, in reference-grid cells (tanh bounded)
    offset_kernel: int = 3  # depthwise 3D conv kernel of the offset network
    # pose stream
    joint_stride: int = 2  # s_j; 1 = full spatial attention over all joints of all people
    temporal_stride: int = 2  # s_t; 1 = full temporal attention
    cross_modal_tokens: bool = True  # False: a CLS token per stream, meeting only at the head
    # regularization
    drop_path: float = 0.1
    attn_drop: float = 0.0
    head_dropout: float = 0.3
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (ignored by the model)
    # skeleton layout of the pose input (coco17 | ntu25 | penn13); None = inferred from num_joints.
    # Joint stride attention groups its bones and flip pairs by it (docs/DESIGN.md)
    layout: str | None = None
    # RGB backbone family (docs/DESIGN.md, "RGB backbone"): "stem" (the compact (2+1)D stem above,
    # sized by backbone_channels), "r2plus1d" (the same blocks downsampled one factor of 2 at a time,
    # same widths) or "x3d_tiny" / "x3d_s" / "x3d_m" (X3D-style, deformact.models.backbones)
    backbone: str = "stem"
    # what the 3DTS offset network sees besides the RGB queries (docs/DESIGN.md, "offset
    # conditioning"): "none" or "cm" (the CM tokens, which carry the pose, and each cell's position)
    offset_condition: str = "none"
    # where 3DTS starts besides the reference grid (docs/DESIGN.md, "joint anchors"): "none" (the
    # paper) or "joints" (also a point at every seen joint; needs both streams, deformable or grid)
    search_anchors: str = "none"
    # with joint anchors, each pose token also receives the RGB read at its joint's anchor
    # (docs/DESIGN.md, "joint RGB"): the pose stream sees what each hand holds
    joint_rgb: bool = False
    # how every linear layer starts (docs/DESIGN.md, "initialization"): "xavier" (Glorot uniform,
    # as the JAX ViT) or "trunc_normal" (std 0.02, timm's default: at D=64 what an attention reads
    # barely reaches its queries, and on the objects set the fused model sat at the pose-only level
    # for 10-20 epochs)
    weight_init: str = "xavier"

    def __post_init__(self) -> None:
        self._check_types()
        # YAML/JSON round-trips turn tuples into lists
        self.backbone_channels = tuple(self.backbone_channels)
        self.ref_downsample = tuple(self.ref_downsample)
        self.validate()

    def _check_types(self) -> None:
        """Each field has its declared type (an int where a float is declared is fine), so a
        ``--set depth=x`` is one clear error here instead of a failure deep inside the model."""
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            optional = kind.endswith(" | None")
            base = kind.removesuffix(" | None")
            if value is None and optional:
                continue
            if base in kinds:
                ok = isinstance(value, kinds[base]) and (base == "bool" or not isinstance(value, bool))
            elif base.startswith("tuple[int"):
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value)
            else:
                ok = isinstance(value, dict) if base.startswith("dict") else True
            if not ok:
                raise ConfigError(f"model.{f.name} must be {'an' if base[0] in 'aeiou' else 'a'} {base}"
                                  f"{' or null' if optional else ''}, got {value!r}")

    @property
    def use_rgb(self) -> bool:
        return "rgb" in self.modality

    @property
    def use_pose(self) -> bool:
        return "pose" in self.modality

    @property
    def token_frames(self) -> int:
        return self.frames // self.temporal_patch

    @property
    def token_size(self) -> int:
        return self.image_size // 16

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(f"ModelConfig: {msg}")

        need(self.modality in MODALITIES, f"modality must be one of {MODALITIES}, got {self.modality!r}")
        need(self.rgb_attention in RGB_ATTENTIONS, f"rgb_attention must be one of {RGB_ATTENTIONS}")
        need(self.num_classes >= 1, "num_classes must be >= 1")
        need(self.frames % self.temporal_patch == 0, "frames must be divisible by temporal_patch")
        need(self.image_size % 16 == 0, "image_size must be a multiple of 16 (backbone stride)")
        need(self.dim % self.heads == 0, "dim must be divisible by heads")
        need(self.dim % self.offset_groups == 0, "dim must be divisible by offset_groups")
        need(self.joint_stride >= 1 and self.temporal_stride >= 1, "strides must be >= 1")
        need(self.token_frames % self.temporal_stride == 0,
             f"T' = frames / temporal_patch = {self.token_frames} must be divisible by temporal_stride")
        need(self.joint_stride <= self.num_joints, "joint_stride must be <= num_joints")
        need(len(self.ref_downsample) == 3, "ref_downsample must have 3 entries (t, h, w)")
        need(self.offset_condition in OFFSET_CONDITIONS, f"offset_condition must be one of {OFFSET_CONDITIONS}")
        need(self.search_anchors in SEARCH_ANCHORS, f"search_anchors must be one of {SEARCH_ANCHORS}")
        need(not self.joint_rgb or self.search_anchors == "joints", "joint_rgb needs search_anchors=joints")
        need(self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        need(self.weight_init in WEIGHT_INITS, f"weight_init must be one of {WEIGHT_INITS}, got {self.weight_init!r}")
        if self.layout is not None:
            from deformact.data.skeletons import SKELETONS

            need(self.layout in SKELETONS, f"layout must be one of {sorted(SKELETONS)} or None, got {self.layout!r}")
            v = SKELETONS[self.layout].num_joints
            need(v == self.num_joints, f"layout {self.layout} has {v} joints, num_joints is {self.num_joints}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["backbone_channels"] = list(self.backbone_channels)
        d["ref_downsample"] = list(self.ref_downsample)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"ModelConfig: unknown field(s) {unknown}")
        return cls(**d)


DEFAULT_PRESET = "paper"

# name -> the ModelConfig fields the preset sets; filled by @register_preset, read with preset_fields()
PRESETS: dict[str, dict[str, Any]] = {}


def register_preset(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """Register a preset: ``fn`` (no arguments) returns the ModelConfig fields it sets; its name is
    the preset's name. Fields are checked at registration, so a bad preset fails on import."""
    name = fn.__name__
    if name in PRESETS:
        raise ValueError(f"preset {name!r} is registered twice")
    values = dict(fn())
    ModelConfig.from_dict(values)  # unknown fields or inconsistent sizes: an error now, not at use
    PRESETS[name] = values
    return fn


def list_presets() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(PRESETS)


def preset_fields(preset: str) -> dict[str, Any]:
    """A copy of the fields ``preset`` sets; ValueError naming the choices when it is unknown."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(list_presets())}")
    return dict(PRESETS[preset])


@register_preset
def paper() -> dict[str, Any]:
    """The paper's scale: T=16 at 224x224 (8 x 14 x 14 = 1,568 RGB tokens), M=2, V=17, D=256, L=4, h=8."""
    return dict(frames=16, image_size=224, num_joints=17, num_persons=2, dim=256, depth=4, heads=8)


@register_preset
def demo() -> dict[str, Any]:
    """Ours: the CPU demo (T=8 at 64x64, D=64, L=2, h=4); trains in minutes on 2 cores."""
    return dict(frames=8, image_size=64, num_joints=17, num_persons=2, dim=64, depth=2, heads=4,
                mlp_ratio=2.0, backbone_channels=(16, 32, 64), drop_path=0.0, head_dropout=0.1)


def make_config(preset: str = DEFAULT_PRESET, **overrides: Any) -> ModelConfig:
    """Preset values, then keyword overrides; unknown names are an error."""
    return ModelConfig.from_dict({**preset_fields(preset), **overrides})
