"""One epoch of the shared pretraining loop, and the contract a method fulfils to be trained by it.

`run_epoch` makes one pass over a rank's micro-batches: the per-step cosine lr, gradient accumulation with the
DDP sync only on each group's last micro-batch, autocast and the (fp16) GradScaler, and statistics summed on the
device and read once at the end of the epoch (no host synchronisation inside a step). Every random draw of a
method comes from the `EpochRandom` streams of (seed, epoch, rank), so a rerun epoch draws the same values.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from cxrmim.data.tensors import BatchLoader
from cxrmim.device import DeviceSetup
from cxrmim.optim import apply_lr, cosine_lr
from cxrmim.train.batching import LoopSettings, Schedule
from cxrmim.train.distributed import Distributed, all_reduce_sum, gradient_sync


class EpochRandom:
    """Seeded generators for one (epoch, rank): stream i draws the same values whenever the epoch is rerun."""

    def __init__(self, seed: int, epoch: int, rank: int, device: torch.device) -> None:
        self.seed, self.epoch, self.rank, self.device = seed, epoch, rank, device
        self.generators: dict[int, torch.Generator] = {}

    def stream(self, index: int) -> torch.Generator:
        """The generator of stream `index` (one per kind of draw: masks, augmentation, second view, ...)."""
        if index not in self.generators:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank) * 17 + index)
            self.generators[index] = generator
        return self.generators[index]


class TrainingMethod(Protocol):
    """What a pretraining method gives the loop. Build it after `seed_everything(seed)` (same weights per rank)."""

    model: nn.Module  # forward(**make_batch(...)) -> loss, or (loss, {stat name: 0-d device tensor, batch sum})
    stat_names: tuple[str, ...]  # the keys of those stats, in a fixed order
    history_columns: tuple[str, ...]  # the method's own history.csv columns, filled by `epoch_columns`

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """Per-image tensors (same first dimension) the loader slices into shuffled micro-batches on the device."""

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """The model's forward keyword arguments for one micro-batch (augmentation, masking, views)."""

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """The method's history columns from the epoch's stats summed over steps and ranks."""

    def signature(self) -> dict[str, Any]:
        """JSON-able description of everything besides `LoopSettings` that changes the trained weights."""

    def describe(self) -> list[str]:
        """Lines for the log (method, data, parameter counts)."""

    def write_outputs(self, out_dir: Path) -> None:
        """Write the trained weights (main rank, after the last epoch; the loop writes history.csv)."""


def run_epoch(
    method: TrainingMethod,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loader: BatchLoader,
    schedule: Schedule,
    setup: DeviceSetup,
    ddp: Distributed,
    settings: LoopSettings,
    epoch: int,
    step: int,
) -> tuple[dict[str, float], int]:
    """One pass over this rank's micro-batches -> (history row, optimizer steps done so far)."""
    method.model.train()
    rng = EpochRandom(settings.seed, epoch, ddp.rank, setup.device)
    micro_batches, accum = len(loader), schedule.accum
    # [loss x images, stats...]: summed on the device, read once at the end of the epoch.
    sums = torch.zeros(1 + len(method.stat_names), device=setup.device, dtype=torch.float64)
    n_images, lr = 0, 0.0
    started = time.perf_counter()
    progress = tqdm(
        loader.epoch(epoch), total=micro_batches, desc=f"epoch {epoch + 1}/{settings.epochs}", file=sys.stderr,
        leave=False, disable=True if not ddp.is_main else None,
    )  # fmt: skip
    after_step = getattr(method, "after_optimizer_step", None)  # e.g. BYOL's momentum update of its target
    for index, batch in enumerate(progress):
        group_start = index - index % accum
        group_size = min(accum, micro_batches - group_start)
        is_group_end = index == group_start + group_size - 1
        if index == group_start:
            lr = cosine_lr(step, schedule.total_steps, schedule.warmup_steps, schedule.peak_lr)
            apply_lr(optimizer, lr)
        batch_images = len(next(iter(batch.values())))
        inputs = method.make_batch(batch, rng)
        with gradient_sync(wrapped, is_group_end):
            with setup.autocast():
                output = wrapped(**inputs)
            loss, stats = output if isinstance(output, tuple) else (output, {})
            # Disabled (CPU, bf16) the scaler returns the loss itself; under fp16 its step skips non-finite
            # gradients without a host sync (fused AdamW reads the scaler's device flags).
            scaler.scale(loss / group_size).backward()
        if is_group_end:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if after_step is not None:
                after_step(step, schedule.total_steps)
        sums += torch.stack([loss.detach().double() * batch_images, *(stats[k].double() for k in method.stat_names)])
        n_images += batch_images

    totals = torch.cat([sums, torch.tensor([float(n_images)], device=setup.device, dtype=torch.float64)])
    values = all_reduce_sum(totals, ddp).tolist()  # the one host sync per epoch
    image_total = values[-1]
    seconds = time.perf_counter() - started
    row = {"epoch": epoch + 1, "loss": values[0] / image_total, "lr": lr, "images_per_s": image_total / seconds}
    row |= method.epoch_columns(dict(zip(method.stat_names, values[1:-1])), int(image_total))
    row["seconds"] = seconds
    return row, step
