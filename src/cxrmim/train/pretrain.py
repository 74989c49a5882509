"""Masked-autoencoder pretraining (RGMIM region masking or MAE random masking) on the unlabelled training set.

One code path for a single process and for torchrun (DDP). Every random draw during training comes from
generators seeded by (seed, epoch, rank), and checkpoints are written per epoch, so a resumed run ends with
exactly the weights of an uninterrupted one (bit-exact on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from cxrmim.cli import parse_json_arg, setup_logging
from cxrmim.data.patches import patch_coverage, valid_patches
from cxrmim.data.tensors import BatchLoader, augment_batch, load_prepared, normalise
from cxrmim.device import DeviceSetup, select_device
from cxrmim.models.encoders import save_encoder, timm_kwargs
from cxrmim.models.mae import MaskedAutoencoder, build_mae
from cxrmim.models.masking import METHOD_MASKING
from cxrmim.train.common import (
    apply_lr,
    atomic_save,
    cosine_lr,
    load_checkpoint,
    restore_rng,
    rng_state,
    seed_everything,
)

log = logging.getLogger("cxrmim.pretrain")

PRETRAIN_PARTS = ("train", "val")  # unlabelled use of the training images; the test part is never seen
STOP_ENV = "CXRMIM_STOP_AFTER_EPOCHS"
HISTORY_COLUMNS = ["epoch", "loss", "lr", "images_per_s", "fallback_count", "fallback_fraction", "seconds"]
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token", "decoder_pos_embed")


@dataclass
class PretrainData:
    """The pretraining images with their lung masks and per-patch validity, in memory."""

    images: torch.Tensor  # uint8 (N, S, S)
    masks: torch.Tensor  # uint8 (N, S, S)
    valid: torch.Tensor  # bool (N, n_patches), from validity.npz
    has_mask: torch.Tensor  # bool (N,)
    image_size: int
    patch_size: int
    threshold: float


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


@dataclass
class PretrainResult:
    """What a call to `run_pretraining` did."""

    finished: bool
    history: list[dict[str, float]]
    model: MaskedAutoencoder
    out_dir: Path
    epochs_run: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def load_pretrain_data(prepared_dir: str | Path, split_csv: str | Path, validity_npz: str | Path) -> PretrainData:
    """Select the train+val images of the prepared cache and their patch validity."""
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    chosen = split[split["part"].isin(PRETRAIN_PARTS)].sort_values("index")
    if chosen.empty:
        raise ValueError(f"{split_csv}: no images with part in {PRETRAIN_PARTS}; re-run the split rule")
    manifest = prepared.manifest.set_index("index", drop=False) if "index" in prepared.manifest else prepared.manifest
    ids = chosen["index"].to_numpy(dtype=np.int64)
    if "id" in chosen and "id" in manifest:
        stale = manifest.loc[ids, "id"].astype(str).to_numpy() != chosen["id"].astype(str).to_numpy()
        if stale.any():
            raise ValueError(f"{split_csv} does not match the prepared manifest (ids differ); re-run split")
    with np.load(validity_npz) as validity:
        valid, masks, has_mask = validity["valid"], validity["masks"], validity["has_mask"]
        include = validity["include"] if "include" in validity else np.ones(len(valid), dtype=bool)
        image_size, patch_size = int(validity["image_size"]), int(validity["patch_size"])
        threshold = float(validity["threshold"])
    if image_size != prepared.image_size or len(valid) != len(prepared.images):
        raise ValueError(f"{validity_npz} does not match the prepared cache; re-run the patch_validity rule")
    # Images whose predicted lung mask failed QC under lung_masks.qc_policy: skip take no part in pretraining.
    indices = ids[include[ids]]
    if len(indices) < len(ids):
        log.info("%d image(s) excluded by the lung-mask QC policy", len(ids) - len(indices))
    return PretrainData(
        images=torch.from_numpy(np.ascontiguousarray(prepared.images[indices])),
        masks=torch.from_numpy(np.ascontiguousarray(masks[indices])),
        valid=torch.from_numpy(np.ascontiguousarray(valid[indices])).bool(),
        has_mask=torch.from_numpy(np.ascontiguousarray(has_mask[indices])).bool(),
        image_size=image_size,
        patch_size=patch_size,
        threshold=threshold,
    )


def init_distributed(setup_device: str) -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if setup_device == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank, owns_group)


def epoch_generator(seed: int, epoch: int, rank: int, stream: int, device: torch.device) -> torch.Generator:
    """A generator whose draws depend only on (seed, epoch, rank, stream): resumption redraws the same values."""
    generator = torch.Generator(device=device)
    generator.manual_seed(((seed * 1_000_003 + epoch) * 1_009 + rank) * 17 + stream)
    return generator


def accumulation_steps(batch_size: int, effective_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimiser step so that batch x steps x ranks reaches the effective batch."""
    return max(1, round(effective_batch_size / (batch_size * world_size)))


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases, position embeddings and tokens (as in MAE)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
        (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def parameter_counts(model: MaskedAutoencoder) -> dict[str, int]:
    """Encoder, decoder and trainable parameter counts for the log."""
    encoder = sum(p.numel() for p in model.encoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"encoder": encoder, "decoder": total - encoder, "trainable": trainable}


def batch_inputs(
    batch: dict[str, torch.Tensor], data: PretrainData, augment: dict[str, Any] | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (augmented) images and the patch validity that matches them."""
    images = normalise(batch["images"])
    if not augment:
        return images, batch["valid"]
    images, masks = augment_batch(
        images, batch["masks"].unsqueeze(1), augment.get("crop_scale", (1.0, 1.0)), bool(augment.get("hflip")), generator
    )
    valid = valid_patches(patch_coverage(masks, data.patch_size), data.threshold)
    # Images without a lung mask follow the prepare stage's all-valid policy.
    return images, valid | ~batch["has_mask"].unsqueeze(1)


def run_signature(
    method: str, mask_ratio: float, encoder_cfg: dict, settings: dict, data: PretrainData, model: nn.Module
) -> str:
    """Everything that changes the trained weights; a checkpoint from another signature is not resumed."""
    ignored = {"device", "compile", "num_workers", "resources", "methods", "mask_ratios", "mask_ratio", "encoder"}
    relevant = {k: v for k, v in settings.items() if k not in ignored}
    return json.dumps(
        {
            "method": method,
            "mask_ratio": mask_ratio,
            "encoder": encoder_cfg,
            "settings": relevant,
            "n_images": len(data.images),
            "image_size": data.image_size,
            "patch_size": data.patch_size,
            # Catches architecture changes in the code, which the config alone does not show.
            "tensors": sorted(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()),
        },
        sort_keys=True,
    )


def write_history(history: list[dict[str, float]], path: Path) -> None:
    """Per-epoch history CSV, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(history, columns=HISTORY_COLUMNS).to_csv(tmp, index=False)
    os.replace(tmp, path)


def save_autoencoder(model: MaskedAutoencoder, encoder_cfg: dict[str, Any], path: Path) -> None:
    """Full MAE weights as safetensors, with the construction recipe as metadata (for figures)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"mae": json.dumps(model.construction_metadata(encoder_cfg))}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def write_outputs(model: MaskedAutoencoder, encoder_cfg: dict, history: list[dict[str, float]], out_dir: Path) -> None:
    """The declared outputs: encoder.safetensors, autoencoder.safetensors, history.csv."""
    kwargs = timm_kwargs(encoder_cfg, model.image_size, model.patch_size, num_classes=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_autoencoder(model, encoder_cfg, out_dir / "autoencoder.safetensors")
    write_history(history, out_dir / "history.csv")
    save_encoder(model.encoder, out_dir / "encoder.safetensors", encoder_cfg["timm_name"], kwargs)


def ranks_agree(model: nn.Module) -> bool:
    """True when every rank holds the same weights (cheap fingerprint: sum and sum of squares)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])
        fingerprint = torch.stack([flat.sum(), (flat * flat).sum()])
        low, high = fingerprint.clone(), fingerprint.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))


def resolve_stop(stop_after_epochs: int | None) -> int | None:
    """Test hook: stop (as if killed) once this many epochs are complete; also read from the environment."""
    if stop_after_epochs is not None:
        return stop_after_epochs
    value = os.environ.get(STOP_ENV)
    return int(value) if value else None


@dataclass(frozen=True)
class PretrainJob:
    """One pretraining run: its inputs, method, masking ratio, architecture, `pretrain:` settings and output."""

    prepared_dir: Path
    split_csv: Path
    validity_npz: Path
    method: str
    mask_ratio: float
    encoder_cfg: dict[str, Any]
    settings: dict[str, Any]
    out_dir: Path
    stop_after_epochs: int | None = None


def run_pretraining(
    prepared_dir: str | Path,
    split_csv: str | Path,
    validity_npz: str | Path,
    method: str,
    mask_ratio: float,
    encoder_cfg: dict[str, Any],
    settings: dict[str, Any],
    out_dir: str | Path,
    stop_after_epochs: int | None = None,
) -> PretrainResult:
    """Pretrain, checkpointing every epoch to out_dir/checkpoint.pt and resuming from it when present."""
    if method not in METHOD_MASKING:
        raise ValueError(f"unknown pretraining method {method!r}; choose one of {sorted(METHOD_MASKING)}")
    job = PretrainJob(
        Path(prepared_dir), Path(split_csv), Path(validity_npz), method, mask_ratio, encoder_cfg, settings,
        Path(out_dir), resolve_stop(stop_after_epochs),
    )  # fmt: skip
    setup = select_device(str(settings.get("device", "auto")))
    ddp = init_distributed(setup.device.type)
    try:
        return train(job, setup, ddp)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def train(job: PretrainJob, setup: DeviceSetup, ddp: Distributed) -> PretrainResult:
    """The training loop proper (see `run_pretraining`)."""
    method, mask_ratio, encoder_cfg, settings = job.method, job.mask_ratio, job.encoder_cfg, job.settings
    out_dir, stop_after_epochs = job.out_dir, job.stop_after_epochs
    seed = int(settings.get("seed", 0))
    epochs = int(settings["epochs"])
    batch_size = int(settings["batch_size"])
    augment = settings.get("augment") or None
    data = load_pretrain_data(job.prepared_dir, job.split_csv, job.validity_npz)

    seed_everything(seed)  # identical initial weights on every rank and every resume
    model = build_mae(encoder_cfg, data.image_size, data.patch_size, METHOD_MASKING[method], mask_ratio, settings)
    model.to(setup.device)

    accum = accumulation_steps(batch_size, int(settings.get("effective_batch_size", batch_size)), ddp.world_size)
    effective_batch = batch_size * accum * ddp.world_size
    peak_lr = float(settings["base_lr"]) * effective_batch / 256
    betas = tuple(float(b) for b in settings.get("betas", (0.9, 0.95)))
    optimizer = torch.optim.AdamW(optimizer_groups(model, float(settings.get("weight_decay", 0.05))), lr=peak_lr, betas=betas)

    tensors = {"images": data.images, "masks": data.masks, "has_mask": data.has_mask} if augment else {
        "images": data.images, "valid": data.valid}  # fmt: skip
    loader = BatchLoader(tensors, batch_size, setup, shuffle=True, seed=seed, rank=ddp.rank, world_size=ddp.world_size)
    micro_batches = len(loader)
    if micro_batches == 0:
        raise ValueError(f"{len(data.images)} images are too few for {ddp.world_size} ranks")
    steps_per_epoch = math.ceil(micro_batches / accum)
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(round(float(settings.get("warmup_epochs", 0)) * steps_per_epoch))

    signature = run_signature(method, mask_ratio, encoder_cfg, settings, data, model)
    checkpoint_path = out_dir / "checkpoint.pt"
    start_epoch, step, history = 0, 0, []
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint is not None and checkpoint.get("signature") != signature:
        log.warning("%s was written with other settings; starting from scratch", checkpoint_path)
        checkpoint = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_rng(checkpoint["rng"])
        start_epoch, step, history = int(checkpoint["epoch"]), int(checkpoint["step"]), list(checkpoint["history"])
        log.info("resumed from %s after epoch %d/%d", checkpoint_path, start_epoch, epochs)

    counts = parameter_counts(model)
    if ddp.is_main:
        log.info(
            "device %s (autocast %s), %d rank(s); method %s (%s masking), mask ratio %.2f, %d images %dpx, patch %d",
            setup.device, setup.autocast_dtype, ddp.world_size, method, model.masking_name, mask_ratio,
            len(data.images), data.image_size, data.patch_size,
        )  # fmt: skip
        log.info(
            "parameters: encoder %s, decoder %s, trainable %s",
            f"{counts['encoder']:,}", f"{counts['decoder']:,}", f"{counts['trainable']:,}",
        )  # fmt: skip
        log.info(
            "batch %d x %d accumulation step(s) x %d rank(s) = effective batch %d; peak lr %.3g; %d steps/epoch",
            batch_size, accum, ddp.world_size, effective_batch, peak_lr, steps_per_epoch,
        )  # fmt: skip

    forward_model: nn.Module = model
    if ddp.world_size > 1:
        device_ids = [setup.device.index] if setup.device.type == "cuda" else None
        forward_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if settings.get("compile") and setup.device.type == "cuda":
        forward_model = torch.compile(forward_model)

    epochs_run = 0
    for epoch in range(start_epoch, epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            log.warning("stopping after %d epoch(s) as requested (%s); checkpoint kept", epoch, STOP_ENV)
            return PretrainResult(False, history, model, out_dir, epochs_run)
        row, step = train_one_epoch(
            model, forward_model, optimizer, loader, data, augment, setup, ddp,
            epoch=epoch, step=step, seed=seed, accum=accum, total_steps=total_steps,
            warmup_steps=warmup_steps, peak_lr=peak_lr, epochs=epochs,
        )  # fmt: skip
        history.append(row)
        epochs_run += 1
        if ddp.is_main:
            log.info(
                "epoch %d/%d loss %.4f lr %.3g %.1f img/s fallbacks %d (%.1f%%) %.1fs",
                row["epoch"], epochs, row["loss"], row["lr"], row["images_per_s"], row["fallback_count"],
                100 * row["fallback_fraction"], row["seconds"],
            )  # fmt: skip
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch + 1,
                    "step": step,
                    "rng": rng_state(),
                    "history": history,
                    "signature": signature,
                },
                checkpoint_path,
            )
        if ddp.world_size > 1:
            dist.barrier()

    if ddp.world_size > 1:
        agree = ranks_agree(model)
        log.info("rank %d: weights %s across ranks", ddp.rank, "agree" if agree else "DIFFER")
        if not agree:
            raise RuntimeError("DDP ranks ended with different weights")
    if ddp.is_main:
        write_outputs(model, encoder_cfg, history, out_dir)
        log.info("wrote encoder.safetensors, autoencoder.safetensors, history.csv to %s", out_dir)
        # The checkpoint only serves to resume an interrupted run; once the outputs exist a rerun (new inputs,
        # new code) must train afresh rather than replay a finished run.
        checkpoint_path.unlink(missing_ok=True)
    return PretrainResult(True, history, model, out_dir, epochs_run)


def train_one_epoch(
    model: MaskedAutoencoder,
    forward_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: BatchLoader,
    data: PretrainData,
    augment: dict[str, Any] | None,
    setup: DeviceSetup,
    ddp: Distributed,
    *,
    epoch: int,
    step: int,
    seed: int,
    accum: int,
    total_steps: int,
    warmup_steps: int,
    peak_lr: float,
    epochs: int,
) -> tuple[dict[str, float], int]:
    """One pass over this rank's batches; statistics stay on the device until the single read at the end."""
    model.train()
    mask_generator = epoch_generator(seed, epoch, ddp.rank, stream=0, device=setup.device)
    augment_generator = epoch_generator(seed, epoch, ddp.rank, stream=1, device=setup.device)
    micro_batches = len(loader)
    loss_sum = torch.zeros((), device=setup.device, dtype=torch.float64)
    fallback_sum = torch.zeros((), device=setup.device, dtype=torch.float64)
    n_images, lr = 0, 0.0
    started = time.perf_counter()
    progress = tqdm(
        loader.epoch(epoch), total=micro_batches, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr,
        leave=False, disable=True if not ddp.is_main else None,
    )  # fmt: skip
    for index, batch in enumerate(progress):
        group_start = index - index % accum
        group_size = min(accum, micro_batches - group_start)
        is_group_end = index == group_start + group_size - 1
        if index == group_start:
            lr = cosine_lr(step, total_steps, warmup_steps, peak_lr)
            apply_lr(optimizer, lr)
        images, valid = batch_inputs(batch, data, augment, augment_generator)
        plan = model.plan_masking(images.shape[0], valid, mask_generator, setup.device)
        # DDP: only the last micro-batch of an accumulation group all-reduces gradients.
        sync_context = forward_model.no_sync() if (ddp.world_size > 1 and not is_group_end) else contextlib.nullcontext()
        with sync_context:
            with setup.autocast():
                loss, _, _ = forward_model(images, plan=plan)
            (loss / group_size).backward()
        if is_group_end:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        loss_sum += loss.detach().double() * images.shape[0]
        fallback_sum += plan.fallback.sum()
        n_images += images.shape[0]

    totals = torch.stack([loss_sum, fallback_sum, torch.tensor(float(n_images), device=setup.device, dtype=torch.float64)])
    if ddp.world_size > 1:
        dist.all_reduce(totals)
    loss_total, fallback_total, image_total = totals.tolist()  # the one host sync per epoch
    seconds = time.perf_counter() - started
    row = {
        "epoch": epoch + 1,
        "loss": loss_total / image_total,
        "lr": lr,
        "images_per_s": image_total / seconds,
        "fallback_count": int(fallback_total),
        "fallback_fraction": fallback_total / image_total,
        "seconds": seconds,
    }
    return row, step


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the pretrain stage."""
    parser = argparse.ArgumentParser(
        description="MAE / RGMIM pretraining of a ViT on the prepared chest X-ray cache (torchrun-compatible).",
    )
    parser.add_argument("--prepared", required=True, help="prepared cache directory (images.npy, masks.npy, manifest.csv)")
    parser.add_argument("--split", required=True, help="split.csv; images whose part is train or val are used")
    parser.add_argument("--validity", required=True, help="validity.npz of the patch_validity stage")
    parser.add_argument("--method", required=True, choices=sorted(METHOD_MASKING), help="rgmim = region, mae = random")
    parser.add_argument("--mask-ratio", required=True, type=float, help="fraction of patches to mask, e.g. 0.75")
    parser.add_argument("--encoder", required=True, help="JSON (inline or file) of one `encoders:` config entry")
    parser.add_argument("--settings", required=True, help="JSON (inline or file) of the `pretrain:` config section")
    parser.add_argument("--seed", type=int, default=None, help="pretraining seed (one of pretrain.seeds; default: settings' seed or 0)")
    parser.add_argument("--out", required=True, help="output directory")
    # --log-file: torchrun's own parser claims `--log` (ambiguous prefix of its --log-dir options).
    parser.add_argument("--log", "--log-file", dest="log", default=None, help="also write the log to this file")
    parser.add_argument(
        "--stop-after-epochs", type=int, default=None, help=f"stop once this many epochs are done (tests; or {STOP_ENV})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of scripts/pretrain.py."""
    args = parse_args(argv)
    # Only rank 0 logs progress and owns the log file; the other ranks report warnings to stderr.
    is_main = int(os.environ.get("RANK", 0)) == 0
    setup_logging(args.log if is_main else None, logging.INFO if is_main else logging.WARNING)
    settings = parse_json_arg(args.settings)
    if args.seed is not None:
        settings["seed"] = args.seed
    result = run_pretraining(
        args.prepared, args.split, args.validity, args.method, args.mask_ratio,
        parse_json_arg(args.encoder), settings, args.out, args.stop_after_epochs,
    )  # fmt: skip
    if not result.finished:
        log.warning("pretraining stopped early; rerun the same command to resume from the checkpoint")
    return 0
