"""Fine-tune a segmenter (pretrained, ImageNet, external or random encoder) on a label subset with the classification
machinery: its optimiser with layer decay for ViTs, schedule, min_steps, seeds, data placement and training step;
the epoch is selected on validation Dice."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import pandas as pd
import torch

from cxrmim.data.tensors import BatchLoader
from cxrmim.device import select_device, tune_for_device
from cxrmim.inits import InitSpec
from cxrmim.models.description import model_description
from cxrmim.models.encoders import enable_grad_checkpointing, is_vit
from cxrmim.optim import seed_everything
from cxrmim.recipe import LR_REFERENCE_BATCH, FinetuneSettings
from cxrmim.train.finetune import architecture_label, check_weights, resolve_patch_size, train_epoch
from cxrmim.train.finetune_augment import applied_preset
from cxrmim.train.finetune_optim import build_optimizer, schedule_for
from cxrmim.train.finetune_task import select_epoch
from cxrmim.train.memory import model_probes, plan_memory
from cxrmim.train.segment_data import SegmentData, SegmentResult, prediction_table
from cxrmim.train.segment_task import (
    SELECTION,
    applied_segment_preset,
    augment_pair,
    build_segmentation_model,
    freeze_encoder,
    part_metrics,
    predict_masks,
    segment_loss,
    segmenter_summary,
)

log = logging.getLogger("cxrmim.finetune")


def segment_finetune(
    data: SegmentData,
    init: InitSpec,
    encoder_cfg: dict[str, Any],
    settings: FinetuneSettings,
    seed: int,
    fraction: float | None,
    weights: str | None = None,
    patch_size: int | None = None,
    budget: str | None = None,
    external: dict[str, Any] | None = None,
) -> SegmentResult:
    """Train one segmenter, score val and test after every epoch and report the best-validation-Dice epoch."""
    check_weights(init, weights)
    setup = select_device(settings.device, cpu_fallback=settings.cpu_fallback, fallback_key="finetune.cpu_fallback")
    run_seed = settings.seed_offset * 1_000_003 + seed  # the classification run's seed for the same budget/seed
    seed_everything(run_seed)
    vit = is_vit(encoder_cfg)
    configured_preset = settings.augment
    preset = settings.current_preset if settings.augment == "current" else settings.augment
    settings = replace(settings, augment=applied_segment_preset(applied_preset(preset, vit)))
    patch = resolve_patch_size(init, weights, patch_size, data.image_size) if vit else int(patch_size or 16)
    model, norm, external_info, method = build_segmentation_model(
        init, encoder_cfg, weights, data.image_size, patch, settings.drop_path, external
    )
    built = segmenter_summary(model, encoder_cfg["timm_name"])
    if settings.mode == "probe":
        freeze_encoder(model)
    if settings.grad_checkpointing:
        enable_grad_checkpointing(model.encoder)

    n_train = len(data.train.rows)
    batch_size, accumulation = min(settings.batch_size, n_train), settings.accumulation
    min_batches = math.ceil(settings.min_steps / settings.epochs) * accumulation if settings.min_steps else 0
    train = {"image": data.train.images, "mask": data.train.masks}
    held = {"val": data.val.images, "val_mask": data.val.masks, "test": data.test.images, "test_mask": data.test.masks}
    placement = plan_memory(
        model, model_probes(model, data.image_size), train | held, batch_size, setup, settings.data_placement,
        settings.grad_checkpointing, "finetune",
    )  # fmt: skip
    model = tune_for_device(model.to(setup.device), setup)
    loader = BatchLoader(
        train, batch_size, setup, shuffle=True, seed=run_seed, drop_last=True, min_batches=min_batches,
        placement=placement,
    )  # fmt: skip
    steps_per_epoch = math.ceil(len(loader) / accumulation)
    total_steps = steps_per_epoch * settings.epochs
    peak_lr = settings.base_lr * settings.batch_size * accumulation / LR_REFERENCE_BATCH  # as classification
    layer_decay = settings.layer_decay if vit and settings.mode == "full" else None
    optimizer = build_optimizer(model, settings, peak_lr, layer_decay, setup)
    scaler = setup.grad_scaler() if setup.grad_scaling else None
    generator = torch.Generator(device=setup.device).manual_seed(run_seed)  # drawn on the device: no copy per step
    if placement == "device":
        held = {name: rows.materialise(setup.device) for name, rows in held.items()}
    truth = {"val": data.val.truth(), "test": data.test.truth()}  # host copies for the metrics
    log.info(
        "init %s: segmenter %s, input norm %s, %s masks, %d train images, batch %d, %d steps/epoch, %s %s peak lr "
        "%.3g (recipe %s), augment %s, device %s",
        init.name, model_description(built), norm.as_dict(), data.segment, n_train, batch_size, steps_per_epoch,
        settings.optimizer, settings.schedule, peak_lr, settings.recipe, settings.augment, setup.device,
    )  # fmt: skip

    def batch_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        images, masks = augment_pair(batch["image"], batch["mask"], norm, settings, generator)
        with setup.autocast():
            logits = model(images)
        return segment_loss(logits, masks)

    def train_mode() -> None:
        model.train()
        if settings.mode == "probe":  # the frozen encoder keeps its BatchNorm statistics and drops no paths
            model.encoder.eval()

    schedule = schedule_for(settings, total_steps, round(settings.warmup_epochs * steps_per_epoch), peak_lr)
    history: list[dict[str, Any]] = []
    best: tuple[dict, dict, Any, dict] | None = None  # (val, test, test masks, test per-image) of the best epoch
    for epoch in range(settings.epochs):
        train_loss, lr = train_epoch(
            model, loader, optimizer, schedule, settings, norm, setup, generator, epoch, scaler=scaler,
            accumulation=accumulation, batch_loss=batch_loss, train_mode=train_mode,
        )  # fmt: skip
        scores = {}
        for part in ("val", "test"):
            predicted, loss = predict_masks(model, held[part], held[f"{part}_mask"], norm, setup)
            scores[part] = (*part_metrics(predicted, truth[part], loss), predicted)
        (val, _, _), (test, test_per_image, test_masks) = scores["val"], scores["test"]
        history.append(
            {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
            | {f"val_{k}": v for k, v in val.items()}
            | {f"test_{k}": v for k, v in test.items()}
        )
        # The best of the epochs so far, by the rule of select_epoch: only its test masks are kept (a run's every
        # epoch of full-size masks would not fit); the best of all epochs is the best of the prefix it ends.
        if select_epoch(pd.DataFrame(history), SELECTION) == epoch + 1:
            best = (val, test, test_masks, test_per_image)
        log.info("epoch %d/%d train loss %.4f val dice %.4f", epoch + 1, settings.epochs, train_loss, val["dice"])

    history_table = pd.DataFrame(history)
    best_epoch = select_epoch(history_table, SELECTION)
    best_val, best_test, best_masks, per_image = best
    metrics = {
        "init": init.name,
        "method": method,
        "architecture": architecture_label(encoder_cfg),
        "encoder": encoder_cfg["timm_name"],
        "model": built,
        "input_norm": norm.as_dict(),
        "mask_ratio": init.mask_ratio,
        "pretrain_seed": init.pretrain_seed,
        "task": "segmentation",
        "segment": data.segment,
        "mode": settings.mode,
        "augment": configured_preset,
        "augment_applied": settings.augment,
        "recipe": settings.recipe,
        "optimizer": settings.optimizer,
        "schedule": settings.schedule,
        "external": external_info,
        "budget": budget if budget is not None else f"frac{fraction:g}",
        "fraction": None if fraction is None else float(fraction),
        "n_labels": n_train,
        "seed": int(seed),
        "best_epoch": best_epoch,
        "selection": SELECTION if len(data.val.rows) else "last_epoch",
        "threshold": 0.5,  # foreground where the sigmoid exceeds it (logit > 0)
        "peak_lr": peak_lr,
        "batch_size": batch_size,
        "effective_batch_size": batch_size * accumulation,
        "steps": total_steps,
        "device": str(setup.device),
        "val": best_val,
        "test": best_test,
    }
    predictions = prediction_table(data.test, per_image)
    return SegmentResult(metrics, history_table, predictions, best_masks.astype("uint8"))
