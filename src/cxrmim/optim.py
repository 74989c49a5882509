"""Seeding, the learning-rate schedule and AdamW parameter groups: shared by pretraining, fine-tuning, the segmenter."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
from timm.optim import param_groups_weight_decay
from torch import nn

# Parameters never decayed besides norms and biases (MAE): position embeddings and learned tokens.
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token", "decoder_pos_embed")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one config value."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cosine_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Linear warmup to peak_lr, then half-cosine decay to min_lr, evaluated per iteration."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's lr, honouring a per-group `lr_scale` (layer-wise decay)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def weight_decay_groups(
    model: nn.Module, weight_decay: float, no_decay_names: tuple[str, ...] = NO_DECAY_NAMES
) -> list[dict[str, Any]]:
    """timm's two AdamW groups: no decay on norms, biases and parameters whose last name part is listed."""
    skip = [name for name, _ in model.named_parameters() if name.rsplit(".", 1)[-1] in no_decay_names]
    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
