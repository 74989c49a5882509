"""Fine-tune a classifier (pretrained, ImageNet or random init) on a label subset; select the epoch on validation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrmim.data.tensors import BatchLoader
from cxrmim.device import DeviceSetup, select_device, tune_for_device
from cxrmim.external_formats import resolve_external
from cxrmim.inits import InitSpec
from cxrmim.models.description import model_description
from cxrmim.models.encoders import (
    GREY_NORM,
    InputNorm,
    create_encoder,
    enable_grad_checkpointing,
    imagenet_encoder,
    is_vit,
    load_encoder_weights,
    model_summary,
    read_encoder_metadata,
    transfer_encoder,
)
from cxrmim.models.external import load_external
from cxrmim.optim import apply_lr, seed_everything
from cxrmim.recipe import LR_REFERENCE_BATCH, FinetuneSettings
from cxrmim.train.finetune_augment import applied_preset, augment_images
from cxrmim.train.finetune_data import FinetuneData, FinetuneResult, prediction_table
from cxrmim.train.finetune_optim import Schedule, build_optimizer, clip_gradients, schedule_for
from cxrmim.train.finetune_task import (
    SELECTION_COLUMN,
    epoch_metrics,
    freeze_for_probe,
    predict,
    select_epoch,
    task_loss,
)
from cxrmim.train.memory import model_probes, plan_memory

log = logging.getLogger("cxrmim.finetune")


def architecture_label(encoder_cfg: dict[str, Any]) -> str:
    """The entry's `label`, else the architecture as named in the paper's tables (ViT / ResNet-50), else timm's name."""
    if encoder_cfg.get("label"):
        return str(encoder_cfg["label"])
    if is_vit(encoder_cfg):
        return "ViT"
    name = encoder_cfg["timm_name"].split(".")[0]  # without a weights tag such as resnet50.tv_in1k
    return {"resnet50": "ResNet-50"}.get(name, name)


def check_weights(init: InitSpec, weights: str | None) -> None:
    """Fail early, naming the config key to set, when an init's weights file is absent."""
    if not init.needs_weights:
        return
    if init.kind == "imagenet":
        where = f"finetune.imagenet_weights.{init.encoder_key}"
        fix = (
            f"set {where} in the config to a local .safetensors/.pth file with ImageNet weights of the "
            f"encoders.{init.encoder_key} architecture (nothing is downloaded at run time), "
            f"or remove {init.name} from finetune.inits"
        )
    elif init.entries is not None:
        where = f"{init.entries}.{init.entry}.path"
        fix = "point it at the downloaded checkpoint (file or folder)"
    else:
        where = f"pretrain output of {init.name}"
        fix = "run the pretrain rule first"
    if not weights or weights in ("None", "null"):
        raise FileNotFoundError(f"init {init.name} needs weights but none were given ({where}); {fix}")
    if not Path(weights).exists():
        raise FileNotFoundError(f"init {init.name}: weights file {weights} does not exist ({where}); {fix}")


def resolve_patch_size(init: InitSpec, weights: str | None, patch_size: int | None, image_size: int) -> int:
    """Patch size of a cxrmim encoder file's metadata, else the --patch-size given (ImageNet or scratch)."""
    if weights and init.pretrained:
        stored = read_encoder_metadata(weights)["timm_kwargs"]
        if stored.get("img_size", image_size) != image_size:
            raise ValueError(
                f"{weights} was pretrained on {stored['img_size']}px images but the cache has {image_size}px; "
                "pretrain and fine-tune on the same prepared cache"
            )
        if "patch_size" in stored:
            return int(stored["patch_size"])
    if patch_size is None:
        raise ValueError(f"init {init.name}: no patch size in the weights' metadata; pass --patch-size")
    return int(patch_size)


def build_model(
    init: InitSpec,
    encoder_cfg: dict[str, Any],
    weights: str | None,
    image_size: int,
    patch_size: int,
    num_classes: int,
    drop_path: float,
) -> tuple[nn.Module, InputNorm]:
    """Encoder plus linear classification head, and the input normalisation its initial weights expect.

    Mean-pooled tokens for ViT, timm's own head for CNNs. Scratch models use our grey statistics, pretrained
    encoders the statistics stored with them, ImageNet weights the grey equivalent of their RGB statistics.
    """
    model = create_encoder(encoder_cfg, image_size, patch_size, num_classes=num_classes, drop_path=drop_path)
    if init.kind == "imagenet":
        encoder, norm = imagenet_encoder(encoder_cfg, image_size, patch_size, weights)
        transfer_encoder(encoder.state_dict(), model, weights)
        return model, norm
    if init.needs_weights:
        return model, load_encoder_weights(model, weights)
    return model, GREY_NORM


def train_epoch(
    model: nn.Module,
    loader: BatchLoader,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    settings: FinetuneSettings,
    norm: InputNorm,
    setup: DeviceSetup,
    generator: torch.Generator,
    epoch: int,
    sigmoid: bool = False,
    scaler: torch.amp.GradScaler | None = None,
    accumulation: int = 1,
    batch_loss: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
    train_mode: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """One pass over the loader; returns the mean training loss and the last learning rate used.

    Every `accumulation` micro-batches make one optimiser step (gradients of their mean loss). Nothing in the
    step waits for the device: augmentation is drawn by a generator on the device and the loss is summed
    there, read once per epoch. Another task (segmentation) gives its own `batch_loss` (augment, forward, loss of
    one micro-batch) and `train_mode` (which modules train); the step, schedule and accumulation stay these.
    """
    if train_mode is not None:
        train_mode()
    else:
        model.train(settings.mode == "full")  # a probe keeps the frozen encoder's BatchNorm statistics, no dropout
    loss_sum = torch.zeros((), device=setup.device)  # summed on the device: no host sync per step
    micro_batches = len(loader)  # the same every epoch (BatchLoader repeats data up to min_batches)
    steps = math.ceil(micro_batches / accumulation)
    lr = schedule.lr(epoch * steps)
    optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(loader.epoch(epoch)):
        group_start = index - index % accumulation
        group_size = min(accumulation, micro_batches - group_start)
        if index == group_start:
            lr = schedule.lr(epoch * steps + index // accumulation)
            apply_lr(optimizer, lr)
        if batch_loss is not None:
            loss = batch_loss(batch)
        else:
            images = augment_images(batch["image"], norm, settings, generator)
            with setup.autocast():
                logits = model(images)
            loss = task_loss(logits.float(), batch["label"], sigmoid)
        scaled = loss / group_size
        if scaler is None:
            scaled.backward()
        else:  # fp16: scaled backward, a step that skips non-finite gradients (no host sync with fused AdamW)
            scaler.scale(scaled).backward()
        if index == group_start + group_size - 1:
            if scaler is not None and settings.clip_grad is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            clip_gradients(model, settings.clip_grad)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
    return float(loss_sum) / micro_batches, lr


def finetune(
    data: FinetuneData,
    init: InitSpec,
    encoder_cfg: dict[str, Any],
    settings: FinetuneSettings,
    seed: int,
    fraction: float | None,
    weights: str | None = None,
    patch_size: int | None = None,
    budget: str | None = None,
    external: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Train one classifier and evaluate val and test after every epoch; report the best-validation epoch.

    `external` is the init's `external_inits:` entry when it is a published encoder.
    """
    check_weights(init, weights)
    if len(data.train.labels) == 0:
        raise ValueError("the label subset is empty; raise the label budget")
    setup = select_device(settings.device, cpu_fallback=settings.cpu_fallback, fallback_key="finetune.cpu_fallback")
    run_seed = settings.seed_offset * 1_000_003 + seed
    seed_everything(run_seed)
    vit = is_vit(encoder_cfg)
    configured_preset = settings.augment
    # A recipe may say what `current` means for its inits (e.g. medical_mae's RandAugment).
    preset = settings.current_preset if settings.augment == "current" else settings.augment
    settings = replace(settings, augment=applied_preset(preset, vit))
    external_info, method = None, init.method
    if init.entries is not None:
        if external is None:
            raise ValueError(f"init {init.name}: its {init.entries}.{init.entry} entry was not given (--external)")
        ext = resolve_external(init.entry, external)
        model, norm, external_info = load_external(
            ext, encoder_cfg, data.image_size, len(data.classes), settings.drop_path
        )
        method = ext.label
    else:
        patch = resolve_patch_size(init, weights, patch_size, data.image_size) if vit else int(patch_size or 16)
        model, norm = build_model(
            init, encoder_cfg, weights, data.image_size, patch, len(data.classes), settings.drop_path
        )
    built = model_summary(model, encoder_cfg["timm_name"])
    if settings.mode == "probe":
        freeze_for_probe(model)
    if settings.grad_checkpointing:
        enable_grad_checkpointing(model)

    # Never a batch larger than the subset, and only full batches: BatchNorm and the lr rule see one size.
    batch_size, accumulation = min(settings.batch_size, len(data.train.labels)), settings.accumulation
    min_batches = math.ceil(settings.min_steps / settings.epochs) * accumulation if settings.min_steps else 0
    train = {"image": data.train.images, "label": data.train.labels}
    placement = plan_memory(
        model, model_probes(model, data.image_size), train | {"val": data.val.images, "test": data.test.images},
        batch_size, setup, settings.data_placement, settings.grad_checkpointing, "finetune",
    )  # fmt: skip
    model = tune_for_device(model.to(setup.device), setup)  # CUDA CNNs: cudnn autotuning, channels-last
    loader = BatchLoader(
        train,
        batch_size,
        setup,
        shuffle=True,
        seed=run_seed,
        drop_last=True,
        min_batches=min_batches,
        placement=placement,
    )
    steps_per_epoch = math.ceil(len(loader) / accumulation)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    # The configured batch sets the lr even when the subset is smaller: a full-batch step is no noisier than a
    # configured one, and scaling by a 12-image subset left the head of 1% runs nearly untrained.
    peak_lr = settings.base_lr * settings.batch_size * accumulation / LR_REFERENCE_BATCH  # the effective batch
    layer_decay = settings.layer_decay if vit and settings.mode == "full" else None
    optimizer = build_optimizer(model, settings, peak_lr, layer_decay, setup)
    scaler = setup.grad_scaler() if setup.grad_scaling else None
    # On the device: drawing there needs no host-to-device copy per step (same draws for a seed on one device).
    augment_generator = torch.Generator(device=setup.device).manual_seed(run_seed)
    val_images, test_images = data.val.images, data.test.images
    if placement == "device":
        val_images, test_images = val_images.materialise(setup.device), test_images.materialise(setup.device)
    log.info(
        "init %s: %s, input norm %s, %d train images, batch %d, %d steps/epoch, %s %s peak lr %.3g (recipe %s), "
        "device %s",
        init.name,
        model_description(built),
        norm.as_dict(),
        len(data.train.labels),
        batch_size,
        steps_per_epoch,
        settings.optimizer,
        settings.schedule,
        peak_lr,
        settings.recipe,
        setup.device,
    )
    if accumulation > 1:
        log.info(
            "%d micro-batches of %d per step: effective batch %d", accumulation, batch_size, batch_size * accumulation
        )

    selection = SELECTION_COLUMN[data.task]
    history: list[dict[str, Any]] = []
    epoch_results: list[tuple[dict, dict, np.ndarray]] = []  # (val, test, test probs) per epoch, chosen later
    schedule = schedule_for(settings, total_steps, warmup_steps, peak_lr)
    for epoch in range(settings.epochs):
        train_loss, lr = train_epoch(
            model,
            loader,
            optimizer,
            schedule,
            settings,
            norm,
            setup,
            augment_generator,
            epoch,
            data.sigmoid,
            scaler,
            accumulation,
        )
        val_probs = predict(model, val_images, norm, setup, data.sigmoid)
        test_probs = predict(model, test_images, norm, setup, data.sigmoid)
        val, test = epoch_metrics(
            data.task, data.classes, (data.val.labels.numpy(), val_probs), (data.test.labels.numpy(), test_probs)
        )
        history.append(
            {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
            | {f"val_{k}": v for k, v in val.items()}
            | {f"test_{k}": v for k, v in test.items()}
        )
        log.info(
            "epoch %d/%d train loss %.4f %s %.4f",
            epoch + 1,
            settings.epochs,
            train_loss,
            selection,
            val.get(selection[4:], float("nan")),
        )
        epoch_results.append((val, test, test_probs))

    history_table = pd.DataFrame(history)
    best_epoch = select_epoch(history_table, selection)
    best_val, best_test, best_probs = epoch_results[best_epoch - 1]
    metrics = {
        "init": init.name,
        "method": method,
        "architecture": architecture_label(encoder_cfg),
        "model": built,
        "input_norm": norm.as_dict(),
        "mask_ratio": init.mask_ratio,
        "pretrain_seed": init.pretrain_seed,
        "task": data.task,
        "mode": settings.mode,
        "augment": configured_preset,
        "augment_applied": settings.augment,
        "recipe": settings.recipe,
        "optimizer": settings.optimizer,
        "schedule": settings.schedule,
        "external": external_info,
        "budget": budget if budget is not None else f"frac{fraction:g}",
        "fraction": None if fraction is None else float(fraction),
        "n_labels": len(data.train.labels),
        "seed": int(seed),
        "classes": data.classes,
        "best_epoch": best_epoch,
        "selection": selection if len(data.val.labels) else "last_epoch",
        "peak_lr": peak_lr,
        "batch_size": batch_size,
        "effective_batch_size": batch_size * accumulation,
        "steps": total_steps,
        "device": str(setup.device),
        "val": best_val,
        "test": best_test,
    }
    predictions = prediction_table(data.test, best_probs, data.classes, data.task, best_val.get("threshold", 0.5))
    return FinetuneResult(metrics, history_table, predictions)
