"""Where and how a run computes: device, mixed precision, seeding and determinism.

Every command that takes a device (``train.device``, ``--device``) resolves it here, so "auto"
means the same everywhere: the first GPU when there is one, else the CPU.
"""

from __future__ import annotations

import os
import random
import re
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from deformact.errors import ConfigError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(device: str | torch.device = "auto", *, name: str = "device") -> torch.device:
    """``auto`` (first GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a :class:`torch.device`.

    ``name`` is how the setting is called in error messages (``train.device``, ``--device``).
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or _DEVICE.fullmatch(device) is None:
        raise ConfigError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name}={device} asks for CUDA but no GPU is visible; use {name}=cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{name}={device}: only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(on: bool, device: torch.device) -> None:
    """Deterministic kernels on GPU (exact resume); cuDNN autotuning when off.

    The CPU kernels deformact uses are deterministic for a fixed thread count already, so on CPU
    nothing is switched (``torch.use_deterministic_algorithms`` also costs seconds of imports).
    """
    if device.type != "cuda":
        return
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: ops without a deterministic CUDA kernel (e.g. grid_sample backward) still run
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN finds native bf16 instructions on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` (None = full precision)."""
    if amp in (False, None, "none"):
        return None
    if amp in (True, "auto"):
        if device.type != "cuda":
            # without native bf16 (AVX512-BF16 / AMX) CPU bf16 kernels are emulated: measured 12x
            # slower than fp32 on an AVX2 EPYC (docs/PERFORMANCE.md), so "auto" stays in fp32 there
            return torch.bfloat16 if cpu_has_fast_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a GPU (GradScaler); use train.amp=bf16 on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """``torch.autocast`` context for ``dtype`` (a no-op when None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def show_progress() -> bool:
    """Progress bars only on an interactive terminal: logs and CI stay quiet."""
    return sys.stderr.isatty()
