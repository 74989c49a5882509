"""Accelerator selection and the per-device training settings that go with it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceSetup:
    """The chosen device plus the settings that follow from it."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on accelerators, None (fp32) on CPU
    pin_memory: bool

    @property
    def non_blocking(self) -> bool:
        """Asynchronous host-to-device copies are only meaningful from pinned memory."""
        return self.pin_memory

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op on CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def cuda_usable() -> bool:
    """True when CUDA is present and a device can really be used.

    SLURM may set CUDA_VISIBLE_DEVICES for a GRES backed by no real GPU; then we fall back to CPU.
    """
    try:
        return torch.cuda.is_available() and torch.cuda.device_count() > 0
    except RuntimeError:
        return False


def select_device(requested: str = "auto", local_rank: int | None = None) -> DeviceSetup:
    """Pick cuda, then mps, then cpu for 'auto'; honour an explicit request when it is available."""
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = requested.lower()
    if requested not in {"auto", "cpu", "cuda", "mps"}:
        raise ValueError(f"device must be one of auto, cpu, cuda, mps; got {requested!r}")
    if requested in {"auto", "cuda"} and cuda_usable():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return DeviceSetup(torch.device("cuda", index), torch.bfloat16, True)
    mps = getattr(torch.backends, "mps", None)
    if requested in {"auto", "mps"} and mps is not None and mps.is_available():
        return DeviceSetup(torch.device("mps"), torch.bfloat16, False)
    return DeviceSetup(torch.device("cpu"), None, False)
