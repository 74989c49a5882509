"""From the prepared cache to normalised, augmented batches on the training device."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from cxrmim.data.placement import Rows, as_rows
from cxrmim.device import DeviceSetup
from cxrmim.pixels import PIXEL_MEAN, PIXEL_STD


@dataclass
class PreparedData:
    """The prepare stage's cache: images and lung masks on one grid, plus the manifest."""

    images: np.ndarray  # uint8 (N, S, S)
    masks: np.ndarray  # uint8 (N, S, S), 1 = lung
    manifest: pd.DataFrame

    @property
    def image_size(self) -> int:
        """Side length of the square image grid."""
        return int(self.images.shape[-1])


def load_prepared(prepared_dir: str | Path, mmap: bool = True) -> PreparedData:
    """Open a prepared cache (memory-mapped by default)."""
    prepared_dir = Path(prepared_dir)
    mode = "r" if mmap else None
    try:
        images = np.load(prepared_dir / "images.npy", mmap_mode=mode)
        masks = np.load(prepared_dir / "masks.npy", mmap_mode=mode)
        manifest = pd.read_csv(prepared_dir / "manifest.csv", keep_default_na=False)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err.filename}: prepared cache is incomplete; run the prepare rule") from err
    if not (len(images) == len(masks) == len(manifest)):
        raise ValueError(f"{prepared_dir}: images, masks and manifest disagree in length; re-run prepare")
    return PreparedData(images, masks, manifest)


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, S, S) uint8 -> (B, 1, S, S) float, zero-mean-ish unit-scale input for the models."""
    return (images_uint8.unsqueeze(1).float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    crop_scale: Sequence[float],
    hflip: bool,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random resized crop (and optional horizontal flip) applied identically to images and masks.

    One affine grid per sample keeps image and mask aligned and works on any device.
    Chest X-rays are never flipped vertically. Draws come from `generator` on its own device: a CPU generator
    gives the same augmentation on every device, a device generator avoids host syncs.
    """
    batch = images.shape[0]
    # Draw where the generator lives: a device generator avoids a blocking host-to-device copy per batch.
    draw_device = generator.device
    low, high = float(crop_scale[0]), float(crop_scale[1])
    scale = torch.sqrt(low + (high - low) * torch.rand(batch, generator=generator, device=draw_device))
    shift = (1 - scale) * (2 * torch.rand(2, batch, generator=generator, device=draw_device) - 1)
    flip = torch.ones(batch, device=draw_device)
    if hflip:
        flip = torch.where(torch.rand(batch, generator=generator, device=draw_device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=draw_device)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = shift[0]
    theta[:, 1, 2] = shift[1]
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(masks.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, masks


class BatchLoader:
    """Shuffled mini-batches, seeded per epoch, gathered on the device or (host placement) from host memory.

    `placement` "device" copies the data to the device once and gathers batches there: no per-step transfer.
    "host" keeps it in host memory (a memory map of the cache stays one) and sends each batch with an
    asynchronous copy from pinned memory, one batch ahead; the batches are the same (`cxrmim.data.placement`).
    """

    def __init__(
        self,
        tensors: dict[str, Rows | torch.Tensor | np.ndarray],
        batch_size: int,
        setup: DeviceSetup,
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
        min_batches: int = 0,
        rank: int = 0,
        world_size: int = 1,
        placement: str = "device",
    ) -> None:
        if placement not in ("device", "host"):
            raise ValueError(f"placement must be device or host (auto is decided before); got {placement!r}")
        self.setup, self.placement = setup, placement
        rows = {k: as_rows(v) for k, v in tensors.items()}
        self.host = rows if placement == "host" else {}
        self.tensors = {k: v.materialise(setup.device) for k, v in rows.items()} if placement == "device" else {}
        self.n = len(next(iter(rows.values())))
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.min_batches, self.rank, self.world_size = min_batches, rank, world_size

    def order(self, epoch: int) -> torch.Tensor:
        """Sample order for one epoch: this rank's share of a seeded permutation (repeated to min_batches)."""
        repeats = 1
        if self.min_batches:
            repeats = max(1, math.ceil(self.min_batches * self.batch_size * self.world_size / max(self.n, 1)))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        parts = [torch.randperm(self.n, generator=generator) if self.shuffle else torch.arange(self.n)]
        parts += [torch.randperm(self.n, generator=generator) for _ in range(repeats - 1)]
        order = torch.cat(parts)
        usable = len(order) - len(order) % self.world_size
        return order[:usable][self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = len(self.order(0))
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Yield batches as dicts of device tensors."""
        if self.placement == "host":
            yield from self.host_epoch(epoch)
            return
        order = self.order(epoch).to(self.setup.device)
        for batch_index in range(len(self)):
            ids = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            yield {k: v[ids] for k, v in self.tensors.items()}

    def host_epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Host placement: gather on the host, copy asynchronously; batch i+1 is sent before batch i is used."""
        order = self.order(epoch).numpy()  # host indices: slicing them reads no tensor

        def send(batch_index: int) -> dict[str, torch.Tensor]:
            ids = order[batch_index * self.batch_size : (batch_index + 1) * self.batch_size]
            return {k: to_device(v.gather(ids), self.setup) for k, v in self.host.items()}

        n_batches = len(self)
        ahead = send(0) if n_batches else None
        for batch_index in range(n_batches):
            batch, ahead = ahead, (send(batch_index + 1) if batch_index + 1 < n_batches else None)
            yield batch


def to_device(tensor: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """Host tensor -> device; from pinned memory and without waiting on accelerators (the copy is queued)."""
    if setup.device.type == "cpu":
        return tensor
    if setup.pin_memory:
        # The caching host allocator keeps the pinned buffer until the queued copy has run.
        return tensor.pin_memory().to(setup.device, non_blocking=True)
    return tensor.to(setup.device)
