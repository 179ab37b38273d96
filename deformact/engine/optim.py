"""Optimizer, weight-decay groups, warm-up + cosine schedule and EMA of the weights."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd

_NORMS = (nn.LayerNorm, nn.GroupNorm, _NormBase, nn.LocalResponseNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
# Free parameters (not owned by a Linear/Conv) whose path says they are tokens or embeddings.
_NO_DECAY_WORDS = ("token", "embed", "pos", "cls", "bias", "scale", "gamma", "query")


def no_decay(name: str, param: nn.Parameter, owner: nn.Module, extra: set[str] = frozenset()) -> bool:
    """True for parameters weight decay should not touch: norms, biases, embeddings, tokens.

    Decaying a LayerNorm gain or a learned token pulls it towards zero for no regularization
    benefit (as in timm / DeiT); only the weights of Linear and Conv layers are decayed.
    """
    leaf = name.rsplit(".", 1)[-1].lower()
    if name in extra or param.ndim <= 1 or isinstance(owner, _NORMS + (nn.Embedding,)):
        return True
    if isinstance(owner, (nn.Linear, _ConvNd, nn.MultiheadAttention)):
        return not leaf.endswith("weight")
    if leaf.endswith("weight"):  # a raw weight tensor of a custom layer (e.g. per-joint projections)
        return False
    return any(word in name.lower() for word in _NO_DECAY_WORDS)


def is_offset_param(name: str) -> bool:
    """Parameters of the 3DTS offset networks (grid search and joint anchors), not the keys'."""
    return ".search." in f".{name}" or ".anchor.offset" in f".{name}"


def param_groups(model: nn.Module, weight_decay: float, offset_lr_mult: float = 1.0) -> list[dict]:
    """Optimizer groups: decayed weights and everything else (see :func:`no_decay`); with
    ``offset_lr_mult`` != 1 the 3DTS offset networks' parameters get their own groups whose ``lr``
    is that multiple of the base (the schedule scales every group alike)."""
    extra = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    groups: dict[tuple[bool, bool], list] = {(True, False): [], (False, False): []}  # (decayed, offset)
    for mod_name, module in model.named_modules():
        for p_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            key = (not no_decay(full, param, module, extra), offset_lr_mult != 1.0 and is_offset_param(full))
            groups.setdefault(key, []).append(param)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             **({"lr_mult": offset_lr_mult} if offset else {})} for (decay, offset), params in groups.items()]


def build_optimizer(model: nn.Module, train_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum, Nesterov) over the weight-decay groups."""
    groups = param_groups(model, float(train_cfg["weight_decay"]), float(train_cfg.get("offset_lr_mult", 1.0)))
    lr = float(train_cfg["lr"])
    for group in groups:
        if "lr_mult" in group:
            group["lr"] = lr * group.pop("lr_mult")
    if train_cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(train_cfg["momentum"]),
                               nesterov=bool(train_cfg["nesterov"]) and train_cfg["momentum"] > 0)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(float(b) for b in train_cfg["betas"]))


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear ramp over ``warmup`` steps, then cosine from 1 to ``min_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: Mapping[str, Any], epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step warm-up + cosine schedule (stepped after every optimizer step)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total, round(float(train_cfg["warmup_epochs"]) * steps_per_epoch))
    min_ratio = float(train_cfg["min_lr"]) / float(train_cfg["lr"])
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, total, warmup, min_ratio)
    )


class ModelEma:
    """Exponential moving average of a model's weights (buffers are copied as they are).

    ``shadow = decay * shadow + (1 - decay) * param`` after each optimizer step. ``module`` is an
    eval-mode copy of the model holding the shadow weights; evaluation and the checkpoint's
    ``ema`` entry use it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for shadow, value in zip(self.module.state_dict().values(), model.state_dict().values()):
            if shadow.dtype.is_floating_point:
                shadow.lerp_(value.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
