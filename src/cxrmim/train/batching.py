"""The loop's optimisation recipe and how its effective batch trains on any number of processes (micro-batch,
accumulation, lr schedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cxrmim.recipe import LR_REFERENCE_BATCH


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


def split_batch(settings: LoopSettings, world_size: int) -> tuple[int, int]:
    """(micro-batch per process, accumulation steps) with micro x accumulation x world size = the effective batch.

    `effective_batch_size` is the recipe (it sets the peak lr); `batch_size` is the largest micro-batch one process
    runs at once. More processes mean smaller per-process shares, never a larger effective batch.
    """
    effective, world = settings.effective_batch_size, world_size
    if effective % world:
        fits = sorted({max(world, effective - effective % world), effective + world - effective % world})
        raise ValueError(
            f"effective_batch_size {effective} does not split over {world} processes (GPUs); set it to a "
            f"multiple of {world} (e.g. {' or '.join(map(str, fits))}) or change resources.gpu"
        )
    share = effective // world
    accum = math.ceil(share / settings.batch_size)
    if share % accum:
        step = world * accum
        fits = sorted({max(step, effective - effective % step), effective + step - effective % step})
        raise ValueError(
            f"effective_batch_size {effective} over {world} process(es) is {share} images each, which "
            f"does not split into {accum} equal micro-batches of at most batch_size {settings.batch_size}; set "
            f"effective_batch_size to a multiple of {step} (e.g. {' or '.join(map(str, fits))}) or change batch_size"
        )
    return share // accum, accum


@dataclass(frozen=True)
class Schedule:
    """Accumulation and learning-rate schedule, fixed once the loader and world size are known."""

    micro_batch: int
    accum: int
    effective_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float

    @classmethod
    def build(cls, settings: LoopSettings, micro_batches: int, world_size: int) -> Schedule:
        """Micro-batches per optimiser step so that micro-batch x steps x ranks is the effective batch."""
        micro_batch, accum = split_batch(settings, world_size)
        steps_per_epoch = math.ceil(micro_batches / accum)
        effective = micro_batch * accum * world_size
        return cls(
            micro_batch=micro_batch,
            accum=accum,
            effective_batch=effective,
            steps_per_epoch=steps_per_epoch,
            total_steps=settings.epochs * steps_per_epoch,
            warmup_steps=round(settings.warmup_epochs * steps_per_epoch),
            peak_lr=settings.base_lr * effective / LR_REFERENCE_BATCH,
        )
