"""Where a training job's images live: on the device when they fit with room, else batches from host memory.

The device path copies the data once and gathers every batch on the device (no per-step transfer). The host
path leaves the data memory-mapped (or in ordinary host memory), gathers each batch there, pins it and copies it
with `non_blocking=True`, one batch ahead: the host never waits for the device. Both give the same batches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from cxrmim.device import DeviceSetup

log = logging.getLogger("cxrmim.data")

PLACEMENTS = ("auto", "device", "host")
# Share of the device's free memory the job may plan to use: allocator fragmentation, cuDNN/cuBLAS workspaces
# and the estimate's own error need the rest.
DEVICE_BUDGET = 0.85
COPY_ROWS = 4096  # rows per chunk when copying to the device: the host never holds a second full copy


@dataclass(frozen=True)
class Rows:
    """Rows `rows` of a host array (a memory map of the cache, or a tensor), gathered only when asked for."""

    base: np.ndarray | torch.Tensor
    rows: np.ndarray | None = None  # int64 rows of `base`, in the order the job uses; None = all rows

    def __len__(self) -> int:
        return len(self.base) if self.rows is None else len(self.rows)

    @property
    def row_nbytes(self) -> int:
        """Bytes of one row."""
        return int(np.prod(self.base.shape[1:], dtype=np.int64)) * self.base.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the rows in use."""
        return len(self) * self.row_nbytes

    def gather(self, ids: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The rows at positions `ids` (CPU) as a host tensor."""
        ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        picked = ids if self.rows is None else self.rows[ids]
        if isinstance(self.base, torch.Tensor):
            return self.base[torch.from_numpy(np.ascontiguousarray(picked))]
        return torch.from_numpy(np.ascontiguousarray(self.base[picked]))

    def materialise(self, device: torch.device) -> torch.Tensor:
        """All rows in use as one tensor on `device`, copied in chunks (a host tensor already whole is reused)."""
        if isinstance(self.base, torch.Tensor) and self.rows is None:
            return self.base.to(device)
        if device.type == "cpu":
            return self.gather(np.arange(len(self)))
        shape, dtype = (len(self), *self.base.shape[1:]), self.gather(np.arange(min(len(self), 1))).dtype
        out = torch.empty(shape, dtype=dtype, device=device)
        for start in range(0, len(self), COPY_ROWS):
            out[start : start + COPY_ROWS].copy_(self.gather(np.arange(start, min(start + COPY_ROWS, len(self)))))
        return out


def as_rows(value: Rows | torch.Tensor | np.ndarray) -> Rows:
    """Wrap a tensor or array as all of its rows."""
    return value if isinstance(value, Rows) else Rows(value)


def data_nbytes(tensors: dict[str, Rows | torch.Tensor | np.ndarray]) -> int:
    """Bytes the job's per-image data would take on the device."""
    return sum(as_rows(v).nbytes for v in tensors.values())


def choose_placement(requested: str, setup: DeviceSetup, data_bytes: int, model_bytes: int, label: str = "data") -> str:
    """'device' or 'host' for `requested` (auto | device | host), decided from the device's free memory; logged."""
    if requested not in PLACEMENTS:
        raise ValueError(f"data_placement must be one of {PLACEMENTS}; got {requested!r}")
    if setup.device.type != "cuda":
        # CPU (and MPS's unified memory): host and device memory are the same, the device path costs nothing extra.
        placement = "host" if requested == "host" else "device"
        log.info("%s: %.2f GB, %s path (device %s)", label, data_bytes / 1e9, placement, setup.device)
        return placement
    free, total = torch.cuda.mem_get_info(setup.device)
    fits = data_bytes + model_bytes <= DEVICE_BUDGET * free
    placement = requested if requested != "auto" else ("device" if fits else "host")
    log.info(
        "%s: %.2f GB; the job needs ~%.2f GB besides; %s has %.2f of %.2f GB free (budget %.0f%%) -> %s path%s",
        label, data_bytes / 1e9, model_bytes / 1e9, setup.device, free / 1e9, total / 1e9, 100 * DEVICE_BUDGET,
        placement, "" if requested == "auto" else f" (data_placement: {requested})",
    )  # fmt: skip
    if placement == "device" and not fits:
        log.warning("%s does not fit next to the job on %s; set data_placement: host (or auto)", label, setup.device)
    return placement
