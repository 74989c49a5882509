"""Train the lung segmenter with Dice + BCE, deterministically from config, and score it on a held-out part."""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.data.splits import grouped_stratified_holdout
from cxrmim.data.tensors import (
    PIXEL_MEAN,
    PIXEL_STD,
    BatchLoader,
    augment_batch,
    normalise,
)
from cxrmim.device import DeviceSetup, adamw, tune_for_device
from cxrmim.optim import apply_lr, cosine_lr, seed_everything
from cxrmim.segment.model import SegmenterSpec, build_segmenter, save_segmenter
from cxrmim.segment.postprocess import dice_iou
from cxrmim.segment.predict import segment, segmenter_device
from cxrmim.segment.qc import plot_mask_grid
from cxrmim.segment.training_data import MaskedImages, load_training_sources

log = logging.getLogger(__name__)

GAMMA_RANGE = 0.4  # log-gamma drawn from +-0.4: exposure differences between scanners
CONTRAST_RANGE = 0.2
MIN_RESOLUTION = 0.35  # images are sometimes blurred down to this share of the side and back


@dataclass
class TrainedSegmenter:
    """A trained segmenter, its spec, per-epoch history and which images were held out."""

    model: nn.Module
    spec: SegmenterSpec
    history: list[dict[str, float]]
    holdout: np.ndarray  # bool (N,)


def jitter_appearance(images: torch.Tensor, generator: torch.Generator, host_random: random.Random) -> torch.Tensor:
    """Random gamma, contrast and resolution per image (geometry unchanged, so masks need no change).

    The resolution jitter mimics prediction on a prepared cache coarser than the segmentation grid. Per-image
    draws come from `generator` (on the images' device); the blur size is a tensor shape, known on the host, so
    it is drawn from `host_random` and the step never waits for the device.
    """
    batch, device = images.shape[0], images.device
    draws = torch.rand(3, batch, generator=generator, device=generator.device).to(device)
    unit = (images * PIXEL_STD + PIXEL_MEAN).clamp(0, 1)
    gamma = torch.exp((2 * draws[0] - 1) * GAMMA_RANGE).view(-1, 1, 1, 1)
    contrast = (1 + (2 * draws[1] - 1) * CONTRAST_RANGE).view(-1, 1, 1, 1)
    unit = ((unit.clamp_min(1e-6) ** gamma - 0.5) * contrast + 0.5).clamp(0, 1)
    # One blur size per batch (interpolate takes one size); whether an image is blurred is drawn per image.
    size = images.shape[-1]
    low = max(8, int(size * (MIN_RESOLUTION + (1 - MIN_RESOLUTION) * host_random.random())))
    blurred = F.interpolate(
        F.interpolate(unit, size=low, mode="bilinear", antialias=True, align_corners=False),
        size=size,
        mode="bilinear",
        align_corners=False,
    )
    unit = torch.where((draws[2] < 0.5).view(-1, 1, 1, 1), blurred, unit)
    return (unit - PIXEL_MEAN) / PIXEL_STD


def dice_bce_loss(logits: torch.Tensor, masks: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """BCE plus soft Dice (per image, averaged): BCE gives pixel gradients, Dice balances lung vs background."""
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    probs = torch.sigmoid(logits).flatten(1)
    target = masks.flatten(1)
    dice = (2 * (probs * target).sum(1) + smooth) / (probs.sum(1) + target.sum(1) + smooth)
    return bce + (1 - dice).mean()


def holdout_mask(data: MaskedImages, fraction: float, seed: int) -> np.ndarray:
    """Held-out images: about `fraction` of each source, never splitting a patient group."""
    if fraction <= 0:
        return np.zeros(len(data), dtype=bool)
    return grouped_stratified_holdout(data.sources, data.groups, fraction, seed)


def train_segmenter(data: MaskedImages, settings: dict[str, Any], setup: DeviceSetup | None = None) -> TrainedSegmenter:
    """Train on the non-held-out images; every draw comes from `settings['seed']`."""
    seed = int(settings.get("seed", 0))
    seed_everything(seed)
    setup = setup or segmenter_device(settings)
    spec = SegmenterSpec.from_settings(settings)
    holdout = holdout_mask(data, float(settings.get("holdout_fraction", 0.2)), seed)
    train = np.flatnonzero(~holdout)
    if len(train) == 0:
        raise ValueError("lung_masks.holdout_fraction leaves no image to train on; lower it or add train_sources")
    model = tune_for_device(build_segmenter(spec).to(setup.device), setup)  # CUDA: cudnn autotuning, channels-last
    batch_size = min(int(settings["batch_size"]), len(train))
    loader = BatchLoader(
        {"images": torch.from_numpy(data.images[train]), "masks": torch.from_numpy(data.masks[train])},
        batch_size,
        setup,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    optimizer = adamw(
        model.parameters(), setup, lr=float(settings["lr"]), weight_decay=float(settings.get("weight_decay", 1e-4))
    )
    scaler = setup.grad_scaler()  # active under fp16 only; disabled it is the plain backward and step
    epochs = int(settings["epochs"])
    total, warmup = epochs * len(loader), min(len(loader), epochs * len(loader) // 5)
    augment = settings.get("augment") or {"crop_scale": [1.0, 1.0], "hflip": False}
    history, step = [], 0
    for epoch in range(epochs):
        model.train()
        # Seeded per epoch, drawing on the training device (no host-to-device copy per step): reruns on one
        # device repeat the augmentation exactly.
        generator = torch.Generator(device=setup.device).manual_seed(seed * 1_000_003 + epoch)
        host_random = random.Random(seed * 1_000_003 + epoch)
        start, loss_sum = time.perf_counter(), torch.zeros((), device=setup.device)
        for batch in loader.epoch(epoch):
            apply_lr(optimizer, cosine_lr(step, total, warmup, float(settings["lr"])))
            images, masks = augment_batch(
                normalise(batch["images"]),
                batch["masks"].unsqueeze(1),
                augment["crop_scale"],
                bool(augment.get("hflip")),
                generator,
            )
            images = jitter_appearance(images, generator, host_random)
            with setup.autocast():
                logits = model(images)
            loss = dice_bce_loss(logits.float(), masks.float())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()  # summed on the device, read once per epoch
            step += 1
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(loss_sum) / len(loader),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
        log.info(
            "segmenter epoch %d/%d loss %.4f (%.1fs)", epoch + 1, epochs, history[-1]["loss"], history[-1]["seconds"]
        )
    return TrainedSegmenter(model.eval(), spec, history, holdout)


def evaluate(
    trained: TrainedSegmenter, data: MaskedImages, setup: DeviceSetup, batch_size: int = 32
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Dice/IoU of post-processed masks on the held-out images (overall and per source), plus masks and Dice."""
    held = np.flatnonzero(trained.holdout)
    if len(held) == 0:
        return {"n_holdout": 0, "note": "holdout_fraction is 0: no held-out score"}, np.empty(0), np.empty(0)
    masks, _ = segment(trained.model, data.images[held], trained.spec.image_size, setup, 0, batch_size)
    dice, iou = dice_iou(masks, data.masks[held])

    def scores(select: np.ndarray) -> dict[str, float]:
        return {
            "n": int(select.sum()),
            "dice_mean": float(dice[select].mean()),
            "dice_median": float(np.median(dice[select])),
            "dice_min": float(dice[select].min()),
            "iou_mean": float(iou[select].mean()),
            "iou_median": float(np.median(iou[select])),
        }

    sources = data.sources[held]
    quality = {
        "n_train": int((~trained.holdout).sum()),
        "n_holdout": len(held),
        "holdout": scores(np.ones(len(held), dtype=bool)),
        "per_source": {name: scores(sources == name) for name in np.unique(sources)},
    }
    return quality, masks, dice


def run_train_segmenter(
    settings: dict[str, Any], weights_out: Path, quality_out: Path, figure_out: Path
) -> dict[str, Any]:
    """The `train_segmenter` stage: load the train sources, train, score the holdout, write weights and report."""
    started = time.perf_counter()
    spec = SegmenterSpec.from_settings(settings)
    data = load_training_sources(settings.get("train_sources") or [], spec.image_size, int(settings.get("workers", 1)))
    setup = segmenter_device(settings)
    log.info("training the lung segmenter on %d images at %d px on %s", len(data), spec.image_size, setup.device)
    trained = train_segmenter(data, settings, setup)
    save_segmenter(trained.model, spec, weights_out)
    quality, masks, dice = evaluate(trained, data, setup, int(settings.get("batch_size", 32)))
    quality.update(
        spec={"encoder": spec.encoder, "decoder_channels": list(spec.decoder_channels), "image_size": spec.image_size},
        device=str(setup.device),
        history=trained.history,
        seconds=round(time.perf_counter() - started, 1),
    )
    quality_out.parent.mkdir(parents=True, exist_ok=True)
    quality_out.write_text(json.dumps(quality, indent=2))
    held = np.flatnonzero(trained.holdout)
    picks = np.argsort(dice, kind="stable")[: int((settings.get("qc") or {}).get("n_figure_images", 24))]
    plot_mask_grid(
        data.images[held][picks],
        masks[picks],
        [f"Dice {d:.2f}" for d in dice[picks]],
        figure_out,
        reference=data.masks[held][picks],
    )
    if quality["n_holdout"]:
        log.info(
            "held-out Dice %.3f IoU %.3f (n=%d)",
            quality["holdout"]["dice_mean"],
            quality["holdout"]["iou_mean"],
            quality["n_holdout"],
        )
    return quality
