"""The training loop every pretraining method shares (MAE/RGMIM today; MRM, MedIM, SimSiam, BYOL plug in).

A method supplies a model whose forward returns the loss or `(loss, stats)` (stats: named 0-d tensors summed
over the micro-batch, left on the device) and a way to build each micro-batch's forward inputs; see `TrainingMethod`.
The loop owns the rest: AdamW with timm's weight-decay groups, the MAE lr rule and per-step cosine schedule,
gradient accumulation, bf16 autocast, compile + DDP, epoch checkpoints with exact resume, and history.csv.
Every random draw of a method comes from `EpochRandom` streams seeded by (seed, epoch, rank), so a resumed
run ends with exactly the weights of an uninterrupted one (bit-exact on CPU). Statistics are read from the
device once per epoch: no host synchronisation inside a training step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from cxrmim.data.tensors import BatchLoader
from cxrmim.device import DeviceSetup
from cxrmim.io import atomic_path
from cxrmim.models.encoders import enable_grad_checkpointing
from cxrmim.recipe import LR_REFERENCE_BATCH
from cxrmim.train.checkpoint import Checkpointer
from cxrmim.train.common import apply_lr, cosine_lr, weight_decay_groups
from cxrmim.train.distributed import (
    Distributed,
    all_reduce_sum,
    barrier,
    gradient_sync,
    ranks_agree,
    wrap_model,
)
from cxrmim.train.memory import plan_memory

log = logging.getLogger("cxrmim.pretrain")

STOP_ENV = "CXRMIM_STOP_AFTER_EPOCHS"
UNSIGNED_LOOP_KEYS = {"compile", "data_placement", "grad_checkpointing"}  # they change no trained weight


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


@dataclass(frozen=True)
class LoopSettings:
    """The optimisation recipe, read from a `pretrain:` config section."""

    epochs: int
    batch_size: int
    effective_batch_size: int
    base_lr: float
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: float = 0.0
    seed: int = 0
    compile: bool = False
    data_placement: str = "auto"  # auto | device | host: where the images live (cxrmim.data.placement)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, same weights

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> LoopSettings:
        """Pick the loop's keys out of a `pretrain:` section (defaults as in MAE)."""
        batch_size = int(settings["batch_size"])
        return cls(
            epochs=int(settings["epochs"]),
            batch_size=batch_size,
            effective_batch_size=int(settings.get("effective_batch_size", batch_size)),
            base_lr=float(settings["base_lr"]),
            weight_decay=float(settings.get("weight_decay", 0.05)),
            betas=tuple(float(b) for b in settings.get("betas", (0.9, 0.95))),
            warmup_epochs=float(settings.get("warmup_epochs", 0)),
            seed=int(settings.get("seed", 0)),
            compile=bool(settings.get("compile", False)),
            data_placement=str(settings.get("data_placement", "auto")),
            grad_checkpointing=bool(settings.get("grad_checkpointing", False)),
        )


@dataclass(frozen=True)
class Schedule:
    """Accumulation and learning-rate schedule, fixed once the loader and world size are known."""

    accum: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float

    @classmethod
    def build(cls, settings: LoopSettings, micro_batches: int, world_size: int) -> Schedule:
        """Micro-batches per optimiser step so that batch x steps x ranks reaches the effective batch."""
        accum = max(1, round(settings.effective_batch_size / (settings.batch_size * world_size)))
        steps_per_epoch = math.ceil(micro_batches / accum)
        effective = settings.batch_size * accum * world_size
        return cls(
            accum=accum,
            steps_per_epoch=steps_per_epoch,
            total_steps=settings.epochs * steps_per_epoch,
            warmup_steps=round(settings.warmup_epochs * steps_per_epoch),
            peak_lr=settings.base_lr * effective / LR_REFERENCE_BATCH,
        )


@dataclass
class LoopResult:
    """What a call to `run_training` did."""

    finished: bool
    history: list[dict[str, float]]
    epochs_run: int


def history_columns(method: TrainingMethod) -> list[str]:
    """history.csv columns: the loop's, the method's, then the epoch time."""
    return ["epoch", "loss", "lr", "images_per_s", *method.history_columns, "seconds"]


def write_history(history: list[dict[str, float]], columns: list[str], path: Path) -> None:
    """Per-epoch history CSV, written atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(history, columns=columns).to_csv(tmp, index=False)


def resolve_stop(stop_after_epochs: int | None) -> int | None:
    """Test hook: stop (as if killed) once this many epochs are complete; also read from the environment."""
    if stop_after_epochs is not None:
        return stop_after_epochs
    value = os.environ.get(STOP_ENV)
    return int(value) if value else None


def run_signature(method: TrainingMethod, settings: LoopSettings, model: nn.Module) -> str:
    """Everything that changes the trained weights; a checkpoint from another signature is not resumed."""
    loop = {k: v for k, v in asdict(settings).items() if k not in UNSIGNED_LOOP_KEYS}
    # The tensor shapes catch architecture changes in the code, which the config alone does not show.
    tensors = sorted(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return json.dumps({"method": method.signature(), "loop": loop, "tensors": tensors}, sort_keys=True, default=str)


def run_training(
    method: TrainingMethod,
    settings: LoopSettings,
    setup: DeviceSetup,
    ddp: Distributed,
    out_dir: Path,
    stop_after_epochs: int | None = None,
) -> LoopResult:
    """Train `method.model`, checkpointing every epoch to out_dir/checkpoint.pt and resuming from it when present."""
    stop_after_epochs = resolve_stop(stop_after_epochs)
    if settings.grad_checkpointing:
        enable_grad_checkpointing(method.model)
    tensors = method.loader_tensors()
    placement = plan_memory(
        method.model, getattr(method, "activation_probes", list)(), tensors, settings.batch_size, setup,
        settings.data_placement, settings.grad_checkpointing, getattr(method, "config_section", "pretrain"),
    )  # fmt: skip
    model = method.model.to(setup.device)
    loader = BatchLoader(
        tensors, settings.batch_size, setup, shuffle=True, seed=settings.seed, drop_last=True,
        rank=ddp.rank, world_size=ddp.world_size, placement=placement,
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(
            f"{loader.n} images are too few for one batch of {settings.batch_size} on each of {ddp.world_size} "
            "rank(s); lower pretrain.batch_size"
        )
    schedule = Schedule.build(settings, len(loader), ddp.world_size)
    optimizer = torch.optim.AdamW(
        weight_decay_groups(model, settings.weight_decay), lr=schedule.peak_lr, betas=settings.betas
    )
    checkpointer = Checkpointer(out_dir / "checkpoint.pt", run_signature(method, settings, model))
    start_epoch, history = checkpointer.resume(model, optimizer)
    # The schedule position follows the epochs done, so a run resumed on another number of processes (other
    # accumulation, other micro-batches per rank) continues its own lr curve.
    step = start_epoch * schedule.steps_per_epoch
    if ddp.is_main:
        if start_epoch:
            log.info("resumed from %s after epoch %d/%d", checkpointer.path, start_epoch, settings.epochs)
        log.info("device %s (autocast %s), %d rank(s)", setup.device, setup.autocast_dtype, ddp.world_size)
        for line in method.describe():
            log.info("%s", line)
        log.info(
            "batch %d x %d accumulation step(s) x %d rank(s) = effective batch %d; peak lr %.3g; %d steps/epoch",
            settings.batch_size, schedule.accum, ddp.world_size, settings.batch_size * schedule.accum * ddp.world_size,
            schedule.peak_lr, schedule.steps_per_epoch,
        )  # fmt: skip
    wrapped = wrap_model(model, setup, ddp, settings.compile)

    epochs_run = 0
    for epoch in range(start_epoch, settings.epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            log.warning("stopping after %d epoch(s) as requested (%s); checkpoint kept", epoch, STOP_ENV)
            return LoopResult(False, history, epochs_run)
        row, step = run_epoch(method, wrapped, optimizer, loader, schedule, setup, ddp, settings, epoch, step)
        history.append(row)
        epochs_run += 1
        if ddp.is_main:
            extra = " ".join(f"{name} {row[name]:.4g}" for name in method.history_columns)
            log.info(
                "epoch %d/%d loss %.4f lr %.3g %.1f img/s %s %.1fs",
                row["epoch"], settings.epochs, row["loss"], row["lr"], row["images_per_s"], extra, row["seconds"],
            )  # fmt: skip
            checkpointer.save(model, optimizer, epoch + 1, step, history)
        barrier(ddp)

    if not ranks_agree(model, ddp):
        raise RuntimeError(f"rank {ddp.rank}: DDP ranks ended with different weights")
    if ddp.active and ddp.is_main:
        log.info("weights agree across %d ranks", ddp.world_size)
    if ddp.is_main:
        method.write_outputs(out_dir)
        write_history(history, history_columns(method), out_dir / "history.csv")
        log.info("wrote the weights and history.csv to %s", out_dir)
        checkpointer.remove()
    return LoopResult(True, history, epochs_run)


def run_epoch(
    method: TrainingMethod,
    wrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
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
            (loss / group_size).backward()
        if is_group_end:
            optimizer.step()
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
