"""torchrun / DistributedDataParallel plumbing: one process per device, rank 0 writes.

Under ``torchrun`` the environment carries RANK, WORLD_SIZE and LOCAL_RANK; we join the
process group with nccl on GPUs and gloo on CPUs. Without it everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deformact.engine.runtime import resolve_device


@dataclass
class DistContext:
    """Where this process runs and who it is among its peers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when setup() created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """Pick the device and, under torchrun, join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, name="train.device")
    if dev.type == "cuda":
        # one GPU per process under torchrun; "auto" and "cuda" mean this process's GPU
        dev = torch.device("cuda", local_rank if world > 1 or dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **({"device_id": dev} if dev.type == "cuda" else {}))
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def teardown(ctx: DistContext, clean: bool = True) -> None:
    """Leave the process group if :func:`setup` created it.

    ``clean=False`` (the run is ending with an error) skips the final barrier: a peer that already
    died would leave this process waiting at it.
    """
    if ctx.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (in place; returned for convenience)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics, which every rank updates from its
    own batches) to all ranks, so evaluation and checkpoints agree everywhere."""
    if ctx.distributed:
        for buf in module.buffers():
            dist.broadcast(buf, src=0)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op when not distributed)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
