"""The training step: the one forward, loss, backward and optimizer update that training, the
ablation table and the benchmarks all run."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from deformact.engine.builders import check_labels, model_inputs
from deformact.engine.runtime import autocast

# called with (loss, logits, label), all detached, after the forward and before the backward
BeforeBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def train_step(model: nn.Module, batch: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer, *,
               device: torch.device, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, label_smoothing: float = 0.0,
               clip_grad: float | None = None, before_backward: BeforeBackward | None = None) -> torch.Tensor:
    """One optimizer step on ``batch`` (``label`` plus the model inputs); returns the loss (detached).

    Forward under autocast ``amp_dtype`` (None = full precision), cross-entropy in fp32 with
    ``label_smoothing``, backward (through ``scaler`` when it is an enabled fp16 GradScaler), the
    global gradient norm clipped to ``clip_grad`` when set, then ``optimizer.step()``. The learning
    rate schedule and EMA are the caller's. ``before_backward(loss, logits, label)`` lets the caller
    see the step's outcome first, e.g. to stop every process together on a non-finite loss.
    """
    label = batch["label"].to(device, non_blocking=True).long()
    with autocast(device, amp_dtype):
        logits = model(**model_inputs(batch, device))
    check_labels(label, logits.shape[-1])
    loss = F.cross_entropy(logits.float(), label, label_smoothing=float(label_smoothing))
    if before_backward is not None:
        before_backward(loss.detach(), logits.detach(), label)
    optimizer.zero_grad(set_to_none=True)
    scaled = scaler is not None and scaler.is_enabled()
    (scaler.scale(loss) if scaled else loss).backward()
    if clip_grad:
        if scaled:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), float(clip_grad))
    if scaled:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()
