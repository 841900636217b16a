"""Process groups for `torchrun`: one process per GPU (or several on CPU with gloo).

`torchrun --nproc_per_node N -m boxmask.cli train CONFIG` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them. A plain
`boxmask train` has none of them and runs as a single process without a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    # True when this module created the process group and must destroy it at the end.
    owns_group: bool

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and prints."""
        return self.rank == 0


def init_distributed(prefer_cuda: bool = True) -> DistContext:
    """Join the process group that `torchrun` describes in the environment, if any.

    NCCL on CUDA, gloo on CPU. A group that already exists (a caller or a test created it) is
    reused as it is.
    """
    use_cuda = prefer_cuda and torch.cuda.is_available()
    owns = False
    # torchrun sets RANK and WORLD_SIZE even for one process: that still takes the DDP path,
    # which is how a single-machine test exercises it.
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if dist.is_available() and not dist.is_initialized() and launched:
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend, init_method="env://")
        owns = True
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    else:
        rank, world, local_rank = 0, 1, 0
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device,
                       owns_group=owns)


def shutdown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def reduce_mean(values: dict[str, torch.Tensor], ctx: DistContext) -> dict[str, float]:
    """Average scalar tensors over all processes (for logging; every rank must call it)."""
    names = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in names])
    if ctx.distributed and ctx.world_size > 1:
        dist.all_reduce(stacked)
        stacked /= ctx.world_size
    return {k: float(v) for k, v in zip(names, stacked.cpu().tolist(), strict=True)}
