"""ONNX export of a deformact model and an onnxruntime check against PyTorch.

The graph takes the model's own inputs by name (``rgb``, ``pose``, ``person_mask``, those the
modality uses) with a dynamic batch axis, and returns ``logits``. Needs the ``export`` extra
(onnx, onnxruntime, onnxscript); without it :class:`ExportError` says how to install it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from deformact.errors import InferenceError
from deformact.models.flops import example_inputs

INSTALL_HINT = "install the export extra: .venv/bin/pip install -e '.[export]'"


class ExportError(InferenceError):
    """The exporter could not translate the model (a bug rather than bad input: exit status 1)."""

    exit_code = 1


def input_names(model: nn.Module) -> list[str]:
    """Inputs the model reads, in ONNX order: rgb, pose, person_mask (per its modality)."""
    cfg = model.config
    return (["rgb"] if cfg.use_rgb else []) + (["pose", "person_mask"] if cfg.use_pose else [])


def export_inputs(model: nn.Module, batch: int = 2, seed: int = 0) -> dict[str, Tensor]:
    """:func:`deformact.models.flops.example_inputs` with some people absent (drawn with ``seed``;
    the first person of every sample stays present), so the check covers the masking path."""
    inputs = example_inputs(model.config, batch)
    if "person_mask" in inputs:
        g = torch.Generator().manual_seed(seed)
        mask = torch.rand(inputs["person_mask"].shape, generator=g) > 0.4
        mask[:, 0] = True
        inputs["person_mask"] = mask
    return inputs


def _require(module: str) -> None:
    try:
        __import__(module)
    except ImportError as e:
        raise InferenceError(f"{e.name or module} is missing; {INSTALL_HINT}") from None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter narrates every step on stdout and logs "torchvision is not installed"."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, dynamic_batch: bool = True,
                verbose: bool = False) -> Path:
    """Export ``model`` (eval mode) to ``path`` with torch.export (``torch.onnx.export(dynamo=True)``).

    Raises :class:`InferenceError` when the export extra is missing and :class:`ExportError`
    (first line of the exporter's message) when an op cannot be translated."""
    for module in ("onnx", "onnxscript"):
        _require(module)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    names = input_names(model)
    example = export_inputs(model, batch=2)  # batch 2, not 1: torch.export specializes size-1 axes
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)  # one Dim object shared by all inputs
        dynamic = {n: {0: batch} for n in names}
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(model, (), kwargs=example, dynamo=True, input_names=names,
                                        output_names=["logits"], dynamic_shapes=dynamic, opset_version=opset,
                                        verbose=verbose, external_data=False)
    except ImportError as e:
        raise InferenceError(f"{e.name or e} is missing; {INSTALL_HINT}") from None
    except Exception as e:  # an op the exporter cannot translate: its first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"export failed: {first[:300]}") from e
    program.save(str(path), external_data=False)
    return path


def _non_finite(logits: np.ndarray) -> int:
    return int(logits.size - np.isfinite(logits).sum())


def check_onnx(model: nn.Module, path: str | Path, batch_sizes: Sequence[int] = (1, 3), seed: int = 1) -> float:
    """Max |onnxruntime - PyTorch| of the logits on example inputs of the given batch sizes.

    NaN-safe: a NaN compares as neither larger nor smaller, so a max over differences would call
    it 0. A non-finite PyTorch logit is an :class:`InferenceError` (the model itself is broken:
    nothing to compare against); a non-finite onnxruntime logit where PyTorch's are finite is an
    :class:`ExportError` (the graph computes something else) (docs/FAILURES.md)."""
    _require("onnxruntime")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed_names = [i.name for i in session.get_inputs()]
    worst = 0.0
    model = model.eval()
    for k, b in enumerate(batch_sizes):
        inputs = export_inputs(model, batch=b, seed=seed + k)
        with torch.no_grad():
            ref = model(**inputs).float().numpy()
        out = session.run(["logits"], {n: inputs[n].numpy() for n in feed_names})[0]
        if _non_finite(ref):
            raise InferenceError(f"the PyTorch model's logits hold {_non_finite(ref)} non-finite values (nan/inf) "
                                 f"on example inputs of batch {b}; nothing to compare the ONNX file against")
        if _non_finite(out):
            raise ExportError(f"onnxruntime's logits from {path} hold {_non_finite(out)} non-finite values (nan/inf) "
                              f"on example inputs of batch {b}, where PyTorch's are finite")
        diff = float(np.abs(out - ref).max()) if out.size else 0.0
        worst = diff if diff > worst else worst
    return worst


__all__ = ["ExportError", "check_onnx", "export_inputs", "export_onnx", "input_names"]
