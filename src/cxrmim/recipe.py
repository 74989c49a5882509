"""Training recipes as read from config: the settings a fine-tuning run applies, with its defaults.

Torch-free, so the tables stage reports exactly the values training used without importing training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LR_REFERENCE_BATCH = 256  # peak lr = base_lr * batch / 256, the linear scaling rule of MAE/BEiT fine-tuning
DEFAULT_BETAS = (0.9, 0.999)  # AdamW betas of MAE fine-tuning: fixed, the config's finetune section has no betas


@dataclass(frozen=True)
class FinetuneSettings:
    """The `finetune:` config section, as far as one training run needs it."""

    epochs: int
    batch_size: int
    base_lr: float
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    warmup_epochs: float = 0.0
    min_steps: int = 0
    crop_scale: tuple[float, float] = (1.0, 1.0)
    hflip: bool = False
    device: str = "auto"
    cpu_fallback: bool = False  # a GPU job with no usable GPU may train on the CPU
    seed_offset: int = 0
    mode: str = "full"  # full network, or `probe`: the head only, on frozen features
    augment: str = "current"  # preset: none | current (crop_scale/hflip below) | classic | randaugment | native
    effective_batch_size: int | None = None  # batch per optimiser step (accumulated micro-batches); None = batch_size
    data_placement: str = "auto"  # auto | device | host (cxrmim.data.placement)
    grad_checkpointing: bool = False  # recompute activations in backward: less memory, same weights

    @property
    def accumulation(self) -> int:
        """Micro-batches of `batch_size` per optimiser step."""
        effective = self.effective_batch_size or self.batch_size
        if effective % self.batch_size:
            raise ValueError(f"finetune.effective_batch_size {effective} is not a multiple of batch_size {self.batch_size}")
        return effective // self.batch_size

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> FinetuneSettings:
        """Pick the known keys; keys used only by the workflow (inits, resources, ...) are ignored."""
        augment = section.get("augment") or {}
        return cls(
            epochs=int(section["epochs"]),
            batch_size=int(section["batch_size"]),
            base_lr=float(section["base_lr"]),
            weight_decay=float(section.get("weight_decay", 0.05)),
            layer_decay=float(section.get("layer_decay", 0.75)),
            drop_path=float(section.get("drop_path", 0.1)),
            warmup_epochs=float(section.get("warmup_epochs", 0.0)),
            min_steps=int(section.get("min_steps", 0)),
            crop_scale=tuple(augment.get("crop_scale", (1.0, 1.0))),
            hflip=bool(augment.get("hflip", False)),
            device=str(section.get("device", "auto")),
            cpu_fallback=bool(section.get("cpu_fallback", False)),
            seed_offset=int(section.get("seed", 0)),
            mode=str(section.get("mode", "full")),
            augment=str(section.get("augment_preset", "current")),
            effective_batch_size=int(section["effective_batch_size"]) if section.get("effective_batch_size") else None,
            data_placement=str(section.get("data_placement", "auto")),
            grad_checkpointing=bool(section.get("grad_checkpointing", False)),
        )
