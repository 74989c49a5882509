"""One code path for a single process and for torchrun (DDP): process group, model wrapping, reductions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from cxrmim.device import DeviceSetup, has_batch_norm, tune_for_device


@dataclass
class Distributed:
    """Process-group facts for this process; world_size 1 means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and logs progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process takes part."""
        return self.world_size > 1


def init_distributed(device_type: str) -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, owns_group)


@contextlib.contextmanager
def distributed_session(device_type: str) -> Iterator[Distributed]:
    """`init_distributed`, and leave the process group again (if this process created it) however the block ends."""
    ddp = init_distributed(device_type)
    try:
        yield ddp
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def syncs_batch_norm(model: nn.Module, setup: DeviceSetup, ddp: Distributed) -> bool:
    """Networks with BatchNorm (CNNs, SimSiam/BYOL heads) under DDP on CUDA share its statistics over ranks,
    so the batch they are computed on does not shrink with more GPUs.

    (torch's SyncBatchNorm runs on GPUs only; CPU DDP, the tests' gloo runs, keeps per-rank statistics.)
    """
    return ddp.active and setup.device.type == "cuda" and has_batch_norm(model)


def prepare_model(model: nn.Module, setup: DeviceSetup, ddp: Distributed) -> nn.Module:
    """Before the optimizer is built: SyncBatchNorm where `syncs_batch_norm`, then the device's CNN tuning."""
    if syncs_batch_norm(model, setup, ddp):
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return tune_for_device(model, setup)


def wrap_model(model: nn.Module, setup: DeviceSetup, ddp: Distributed, compile_model: bool) -> nn.Module:
    """The module the loop calls: compiled first (CUDA only), then wrapped in DDP, as torch recommends.

    DDP's gradients are views into its all-reduce buckets (no copy per step, less memory).
    """
    wrapped = model
    if compile_model and setup.device.type == "cuda":
        wrapped = torch.compile(wrapped)
    if ddp.active:
        device_ids = [setup.device.index] if setup.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=device_ids, gradient_as_bucket_view=True)
    return wrapped


def gradient_sync(wrapped: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients only when `sync` (the last micro-batch of an accumulation group)."""
    if sync or not isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return wrapped.no_sync()


def all_reduce_sum(tensor: torch.Tensor, ddp: Distributed) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op for one process)."""
    if ddp.active:
        dist.all_reduce(tensor)
    return tensor


def barrier(ddp: Distributed) -> None:
    """Wait for every rank (a no-op for one process)."""
    if ddp.active:
        dist.barrier()


def ranks_agree(model: nn.Module, ddp: Distributed) -> bool:
    """True when every rank holds the same weights (cheap fingerprint: sum and sum of squares)."""
    if not ddp.active:
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        fingerprint = torch.stack([flat.sum(), (flat * flat).sum()])
        low, high = fingerprint.clone(), fingerprint.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))
