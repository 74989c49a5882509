"""Fine-tuning optimisers and learning-rate schedules: AdamW or SGD, warmup then cosine or step decay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from cxrmim.device import DeviceSetup, adamw
from cxrmim.optim import cosine_lr
from cxrmim.recipe import DEFAULT_BETAS, FinetuneSettings

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step")


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None) -> list[dict[str, Any]]:
    """timm's groups: no decay on norms, biases and tokens; with layer_decay (ViTs) each layer gets
    lr_scale = layer_decay^(distance to the head), embeddings being layer 0 and norm/head the last (BEiT/MAE)."""
    no_decay = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    if layer_decay is None:
        return param_groups_weight_decay(model, weight_decay, no_decay)
    return param_groups_layer_decay(model, weight_decay, no_decay, layer_decay=layer_decay)


def build_optimizer(
    model: nn.Module, settings: FinetuneSettings, peak_lr: float, layer_decay: float | None, setup: DeviceSetup
) -> torch.optim.Optimizer:
    """AdamW (MAE's fine-tuning betas; fused on CUDA) or SGD with momentum (MRM/REFERS) over the same groups."""
    groups = param_groups(model, settings.weight_decay, layer_decay)
    if settings.optimizer == "adamw":
        return adamw(groups, setup, lr=peak_lr, betas=DEFAULT_BETAS)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=peak_lr, momentum=settings.momentum)
    raise ValueError(f"finetune.optimizer {settings.optimizer!r}: use one of {OPTIMIZERS}")


@dataclass(frozen=True)
class Schedule:
    """Linear warmup, then half-cosine decay or steps of x gamma at milestones (fractions of all steps)."""

    total_steps: int
    warmup_steps: int
    peak_lr: float
    kind: str = "cosine"
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1

    def __post_init__(self) -> None:
        """Reject an unknown schedule or milestones outside the run."""
        if self.kind not in SCHEDULES:
            raise ValueError(f"finetune.schedule {self.kind!r}: use one of {SCHEDULES}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"finetune.lr_steps.milestones {list(self.milestones)}: fractions of training in (0, 1)")

    def lr(self, step: int) -> float:
        """Learning rate at a global step."""
        if self.kind == "cosine":
            return cosine_lr(step, self.total_steps, self.warmup_steps, self.peak_lr)
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        passed = sum(step >= round(m * self.total_steps) for m in self.milestones)
        return self.peak_lr * self.gamma**passed


def schedule_for(settings: FinetuneSettings, total_steps: int, warmup_steps: int, peak_lr: float) -> Schedule:
    """The run's schedule from its settings."""
    return Schedule(total_steps, warmup_steps, peak_lr, settings.schedule, settings.lr_milestones, settings.lr_gamma)


def clip_gradients(model: nn.Module, max_norm: float | None) -> None:
    """Clip the global gradient norm on the device (no host sync); nothing when max_norm is None."""
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
