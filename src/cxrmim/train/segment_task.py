"""What differs for segmentation fine-tuning: the model each init builds, joint image + mask augmentation, the
BCE + soft Dice loss, mask prediction and the per-epoch Dice metrics (the training run is cxrmim.train.segment_run)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cxrmim.data.placement import Rows
from cxrmim.data.tensors import augment_batch, to_device
from cxrmim.device import DeviceSetup
from cxrmim.external_formats import resolve_external
from cxrmim.inits import InitSpec
from cxrmim.models.encoders import (
    GREY_NORM,
    InputNorm,
    imagenet_encoder,
    model_summary,
    transfer_encoder,
)
from cxrmim.models.external import load_external
from cxrmim.models.segmentation import Segmenter, build_segmenter, load_segmenter_encoder
from cxrmim.recipe import FinetuneSettings
from cxrmim.segment.metrics import segmentation_metrics
from cxrmim.segment.train import dice_bce_loss

# Full-resolution decoder activations: far smaller chunks than classification's 256 keep evaluation in memory.
EVAL_BATCH = 32
SELECTION = "val_dice"


def build_segmentation_model(
    init: InitSpec,
    encoder_cfg: dict[str, Any],
    weights: str | None,
    image_size: int,
    patch_size: int,
    drop_path: float,
    external: dict[str, Any] | None = None,
) -> tuple[Segmenter, InputNorm, dict[str, Any] | None, str]:
    """The segmenter of an init, the input norm its encoder expects, the external entry's summary and the method.

    Each init loads exactly as it does into a classifier (docs/segmentation.md): a pretraining run's
    encoder.safetensors strictly into `model.encoder`, ImageNet weights by timm then transferred, a published
    encoder headless (num_classes=0), scratch at random with the grey statistics.
    """
    if init.entries is not None:
        if external is None:
            raise ValueError(f"init {init.name}: its {init.entries}.{init.entry} entry was not given (--external)")
        ext = resolve_external(init.entry, external)
        encoder, norm, info = load_external(ext, encoder_cfg, image_size, 0, drop_path)
        return build_segmenter(encoder_cfg, image_size, encoder=encoder), norm, info, ext.label
    model = build_segmenter(encoder_cfg, image_size, patch_size, drop_path=drop_path)
    if init.kind == "imagenet":
        loaded, norm = imagenet_encoder(encoder_cfg, image_size, patch_size, weights)
        transfer_encoder(loaded.state_dict(), model.encoder, weights)  # into the encoder built with drop_path
        return model, norm, None, init.method
    if init.needs_weights:
        return model, load_segmenter_encoder(model, weights), None, init.method
    return model, GREY_NORM, None, init.method


def segmenter_summary(model: Segmenter, timm_name: str) -> dict[str, Any]:
    """The encoder as classification describes it, plus the decoder (class and parameters, 1x1 logit conv included)."""
    summary = model_summary(model.encoder, timm_name)
    decoder = sum(p.numel() for p in (*model.decoder.parameters(), *model.head.parameters()))
    return summary | {"decoder": type(model.decoder).__name__, "n_decoder_parameters": int(decoder)}


def freeze_encoder(model: Segmenter) -> None:
    """Linear-probe mode for segmentation: the encoder stays as initialised, decoder and logit conv train."""
    model.encoder.requires_grad_(False)


def applied_segment_preset(preset: str) -> str:
    """Segmentation augments geometry only, with the mask: `none` stays none, every other preset is the config's
    crop/flip (`current`), since the photometric and elastic presets have no tested joint-mask version."""
    return "none" if preset == "none" else "current"


def augment_pair(
    images_uint8: torch.Tensor,
    masks_uint8: torch.Tensor,
    norm: InputNorm,
    settings: FinetuneSettings,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, S) uint8 images and masks -> normalised (B, 1, S, S) images and 0/1 float masks, cropped and flipped
    together by one affine grid per image (the lung segmenter's augment_batch), drawn on the device."""
    images = images_uint8.unsqueeze(1).float() / 255.0
    masks = masks_uint8.unsqueeze(1).float()
    if settings.augment != "none":
        images, masks = augment_batch(images, masks, settings.crop_scale, settings.hflip, generator)
    return (images - norm.mean) / norm.std, masks


def segment_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice per image (the lung segmenter's loss), in float32 whatever the autocast dtype."""
    return dice_bce_loss(logits.float(), masks.float())


def _chunk(values: torch.Tensor | Rows, start: int, setup: DeviceSetup) -> torch.Tensor:
    """Rows start..start+EVAL_BATCH on the device (host rows are sent asynchronously)."""
    if isinstance(values, Rows):
        return to_device(values.gather(np.arange(start, min(start + EVAL_BATCH, len(values)))), setup)
    return values[start : start + EVAL_BATCH]


@torch.no_grad()
def predict_masks(
    model: nn.Module, images: torch.Tensor | Rows, masks: torch.Tensor | Rows, norm: InputNorm, setup: DeviceSetup
) -> tuple[np.ndarray, float]:
    """Bool (N, S, S) predicted masks (logit > 0) and the mean loss against `masks`; one copy back at the end."""
    model.eval()
    predicted, loss_sum = [], torch.zeros((), device=setup.device)
    for start in range(0, len(images), EVAL_BATCH):
        chunk, truth = _chunk(images, start, setup), _chunk(masks, start, setup)
        with setup.autocast():
            logits = model(norm.apply(chunk))
        loss_sum += segment_loss(logits, truth.unsqueeze(1)) * len(chunk)  # summed on the device
        predicted.append((logits[:, 0] > 0).to(torch.uint8))
    if not predicted:  # an empty part (no validation images)
        shape = images.base.shape[1:] if isinstance(images, Rows) else images.shape[1:]
        return np.zeros((0, *shape), dtype=bool), float("nan")
    stacked, total = torch.cat(predicted).cpu(), float(loss_sum)  # the part's one host sync
    return stacked.numpy().astype(bool), total / len(images)


def part_metrics(predicted: np.ndarray, truth: np.ndarray, loss: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics.json entry: dice, iou, kaggle_dice, n, n_positive, loss; the per-image arrays) of one part."""
    if len(truth) == 0:
        nan = float("nan")
        empty = {"positive": np.zeros(0, bool), "dice": np.zeros(0), "iou": np.zeros(0), "kaggle_dice": np.zeros(0)}
        return {"dice": nan, "iou": nan, "kaggle_dice": nan, "n": 0, "n_positive": 0, "loss": nan}, empty
    scores = segmentation_metrics(predicted, truth)
    entry = {k: scores[k] for k in ("dice", "iou", "kaggle_dice")}
    entry |= {"n": scores["n_images"], "n_positive": scores["n_positive"], "loss": loss}
    return entry, scores["per_image"]
