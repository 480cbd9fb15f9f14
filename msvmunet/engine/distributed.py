"""torchrun / DDP helpers. A single process is world size 1, rank 0."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# DDP's gradient bucket size, in MiB: the all-reduce of a bucket starts as soon as its gradients are
# ready, overlapping the rest of the backward. Left at DDP's own default (25) until it is chosen by
# measurement on 2 GPUs (images/s against bucket sizes), which has not been done yet.
DDP_BUCKET_CAP_MB = 25.0

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return DistInfo(rank, local_rank, world)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def all_reduce_max_(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In place: the element-wise maximum over the processes (queued on the device, no host wait on CUDA)."""
    if info.enabled:
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``model`` under DDP: gradients live in the all-reduce buckets (no copy in or out of them)."""
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   gradient_as_bucket_view=True, bucket_cap_mb=DDP_BUCKET_CAP_MB)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
