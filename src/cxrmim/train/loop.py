"""The training loop every pretraining method of `cxrmim.registry` shares (masked, report-aware, joint-embedding).

A method supplies a model whose forward returns the loss or `(loss, stats)` (stats: named 0-d tensors summed
over the micro-batch, left on the device) and a way to build each micro-batch's forward inputs; see `TrainingMethod`.
The loop owns the rest: AdamW with timm's weight-decay groups, the MAE lr rule and per-step cosine schedule,
gradient accumulation to exactly the configured effective batch on any number of processes, bf16 autocast
(fp16 with a GradScaler before compute capability 8), fused AdamW on CUDA, compile + DDP, epoch checkpoints
with exact resume, and history.csv. One epoch's pass (and the method contract) is `cxrmim.train.epoch`.
Every random draw of a method comes from `EpochRandom` streams seeded by (seed, epoch, rank), so a resumed
run ends with exactly the weights of an uninterrupted one (bit-exact on CPU). Statistics are read from the
device once per epoch: no host synchronisation inside a training step. A loss that is not finite stops the run
before that epoch is checkpointed or any weights are written.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from torch import nn

from cxrmim.data.tensors import BatchLoader
from cxrmim.device import DeviceSetup, adamw, has_batch_norm
from cxrmim.io import atomic_path
from cxrmim.models.encoders import enable_grad_checkpointing
from cxrmim.optim import weight_decay_groups
from cxrmim.recipe import JOB_KEYS
from cxrmim.train.batching import LoopSettings, Schedule, split_batch
from cxrmim.train.checkpoint import Checkpointer
from cxrmim.train.distributed import (
    Distributed,
    barrier,
    prepare_model,
    ranks_agree,
    syncs_batch_norm,
    wrap_model,
)
from cxrmim.train.epoch import TrainingMethod, run_epoch
from cxrmim.train.memory import plan_memory

log = logging.getLogger("cxrmim.pretrain")

STOP_ENV = "CXRMIM_STOP_AFTER_EPOCHS"


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


def run_signature(
    method: TrainingMethod,
    settings: LoopSettings,
    model: nn.Module,
    schedule: Schedule | None = None,
    batch_norm_batch: int | None = None,
) -> str:
    """Everything that changes the trained weights; a checkpoint from another signature is not resumed.

    Besides the config: the realised effective batch (what sets the lr), and for BatchNorm networks the batch
    their statistics see (the micro-batch, x the world size under SyncBatchNorm), which the world size changes.
    """
    loop = {k: v for k, v in asdict(settings).items() if k not in JOB_KEYS}  # they change no trained weight
    if schedule is not None:
        loop["realised_effective_batch"] = schedule.effective_batch
    if batch_norm_batch is not None:
        loop["batch_norm_batch"] = batch_norm_batch
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
    micro_batch, _ = split_batch(settings, ddp.world_size)
    tensors = method.loader_tensors()
    placement = plan_memory(
        method.model, getattr(method, "activation_probes", list)(), tensors, micro_batch, setup,
        settings.data_placement, settings.grad_checkpointing, getattr(method, "config_section", "pretrain"),
    )  # fmt: skip
    # SyncBatchNorm (CNNs under DDP on CUDA) and channels-last change modules in place: the method's own
    # references (its backbone, which it exports) see the same modules.
    model = prepare_model(method.model.to(setup.device), setup, ddp)
    loader = BatchLoader(
        tensors, micro_batch, setup, shuffle=True, seed=settings.seed, drop_last=True,
        rank=ddp.rank, world_size=ddp.world_size, placement=placement,
    )  # fmt: skip
    if len(loader) == 0:
        raise ValueError(
            f"{loader.n} images are too few for one micro-batch of {micro_batch} on each of {ddp.world_size} "
            "rank(s); lower the effective batch size"
        )
    schedule = Schedule.build(settings, len(loader), ddp.world_size)
    optimizer = adamw(
        weight_decay_groups(model, settings.weight_decay), setup, lr=schedule.peak_lr, betas=settings.betas
    )
    bn_batch = None  # the batch BatchNorm statistics see, where there is BatchNorm
    if has_batch_norm(model):
        bn_batch = micro_batch * (ddp.world_size if syncs_batch_norm(model, setup, ddp) else 1)
    signature = run_signature(method, settings, model, schedule, bn_batch)
    checkpointer = Checkpointer(out_dir / "checkpoint.pt", signature)
    scaler = setup.grad_scaler()
    start_epoch, history = checkpointer.resume(model, optimizer, scaler)
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
            "micro-batch %d x %d accumulation step(s) x %d rank(s) = effective batch %d (configured %d); "
            "peak lr %.3g; %d steps/epoch",
            schedule.micro_batch, schedule.accum, ddp.world_size, schedule.effective_batch,
            settings.effective_batch_size, schedule.peak_lr, schedule.steps_per_epoch,
        )  # fmt: skip
    wrapped = wrap_model(model, setup, ddp, settings.compile)

    epochs_run = 0
    for epoch in range(start_epoch, settings.epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            log.warning("stopping after %d epoch(s) as requested (%s); checkpoint kept", epoch, STOP_ENV)
            return LoopResult(False, history, epochs_run)
        row, step = run_epoch(method, wrapped, optimizer, scaler, loader, schedule, setup, ddp, settings, epoch, step)
        check_finite(row, epoch, settings.epochs)
        history.append(row)
        epochs_run += 1
        if ddp.is_main:
            extra = " ".join(f"{name} {row[name]:.4g}" for name in method.history_columns)
            log.info(
                "epoch %d/%d loss %.4f lr %.3g %.1f img/s %s %.1fs",
                row["epoch"], settings.epochs, row["loss"], row["lr"], row["images_per_s"], extra, row["seconds"],
            )  # fmt: skip
            checkpointer.save(model, optimizer, epoch + 1, step, history, scaler)
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


class NonFiniteLoss(ValueError):
    """The loss of an epoch was NaN or infinite: the run stops and writes no weights."""


def check_finite(row: dict[str, float], epoch: int, epochs: int) -> None:
    """Stop before this epoch is checkpointed or any weights are written when its loss is not finite.

    The loss is the epoch's all-reduced mean, so every rank sees the same value and stops together.
    """
    if math.isfinite(row["loss"]):
        return
    kept = f"the checkpoint after epoch {epoch} is kept" if epoch else "no checkpoint either"
    raise NonFiniteLoss(
        f"epoch {epoch + 1}/{epochs}: the loss is {row['loss']} (not finite), so no weights were written ({kept}); "
        "lower base_lr (or raise warmup_epochs), or check the inputs for NaN, then rerun"
    )
