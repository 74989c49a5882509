"""Start-up estimate of a training job's device memory, and what to change when it will not fit.

weights + gradients + AdamW state (4 + 4 + 8 bytes per trainable fp32 parameter, 4 per frozen one), plus
activations: the bytes autograd saves per sample, measured by one forward of each part of the model on the
`meta` device (shapes only: no memory, no compute, no random draws), times the batch; x0.5 under bf16/fp16
autocast; with activation checkpointing only block inputs plus one block are kept (ViT: ~1/16 + 1/depth of
the activations; CNN stages: ~0.4), plus the data when it is placed on the device.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cxrmim.data.placement import choose_placement, data_nbytes
from cxrmim.device import DeviceSetup

log = logging.getLogger("cxrmim.memory")

GB = 1e9
AUTOCAST_FACTOR = 0.5  # saved activations in bf16/fp16 (norms and softmax statistics stay fp32: a lower bound)
CNN_CHECKPOINT_FACTOR = 0.4  # timm checkpoints whole ResNet stages: the largest stage is recomputed in full


@dataclass(frozen=True)
class Probe:
    """One part of the model run on a per-sample input shape, `times` per sample (e.g. two views)."""

    module: nn.Module
    shape: tuple[int, ...]  # one sample's input shape, without the batch dimension
    times: float = 1.0


def saved_bytes(meta: nn.Module, batch_shape: Sequence[int]) -> int:
    """Bytes autograd saves for backward in one training-mode forward of a module on the meta device."""
    saved: dict[int, tuple[torch.Tensor, int]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[id(tensor)] = (tensor, tensor.numel() * tensor.element_size())  # the tensor kept: ids stay unique
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        meta(torch.zeros(tuple(batch_shape), device="meta"))
    return sum(size for _, size in saved.values())


def per_sample_activations(probe: Probe) -> int:
    """Activation bytes per sample: batches of 2 and 4 differenced, so saved weights (shared) cancel out (2, not
    1: BatchNorm refuses a single value per channel)."""
    meta = copy.deepcopy(probe.module).to("meta").train()  # a copy: the real module's weights and state stay
    for part in meta.modules():  # measure every activation; the checkpointing factor is applied afterwards
        if getattr(part, "grad_checkpointing", False):
            part.grad_checkpointing = False
    two, four = saved_bytes(meta, (2, *probe.shape)), saved_bytes(meta, (4, *probe.shape))
    return round(max(four - two, 0) / 2 * probe.times)


def is_transformer(module: nn.Module) -> bool:
    """True for ViT-like parts (timm blocks or a `blocks` list), whose checkpointing keeps block inputs only."""
    return any(type(m).__name__ == "Block" for m in module.modules())


@dataclass(frozen=True)
class MemoryEstimate:
    """The job's estimated device memory in bytes, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    data: int = 0

    @property
    def model(self) -> int:
        """Everything besides the data."""
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def total(self) -> int:
        """Model plus data."""
        return self.model + self.data

    def line(self, batch_size: int) -> str:
        """The start-up log line."""
        return (
            f"estimated device memory {self.total / GB:.2f} GB: weights {self.weights / GB:.2f} + gradients "
            f"{self.gradients / GB:.2f} + AdamW {self.optimizer / GB:.2f} + activations {self.activations / GB:.2f} "
            f"(batch {batch_size}) + data {self.data / GB:.2f}"
        )


def estimate_memory(
    model: nn.Module,
    probes: Sequence[Probe],
    batch_size: int,
    setup: DeviceSetup,
    checkpointing: bool,
    data_bytes: int = 0,
) -> MemoryEstimate:
    """Weights, gradients, AdamW moments and activations of a training step at `batch_size`, plus the data."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    activations = 0.0
    for probe in probes:
        part = per_sample_activations(probe) * batch_size
        if checkpointing:
            depth = sum(1 for m in probe.module.modules() if type(m).__name__ == "Block")
            part *= (1 / 16 + 1 / max(depth, 1)) if is_transformer(probe.module) else CNN_CHECKPOINT_FACTOR
        activations += part
    if setup.autocast_dtype is not None:
        activations *= AUTOCAST_FACTOR
    return MemoryEstimate(4 * params, 4 * trainable, 8 * trainable, round(activations), data_bytes)


def advice(estimate: MemoryEstimate, available: int, checkpointing: bool, section: str) -> str:
    """What to change when the estimate does not fit `available` bytes."""
    steps = []
    if estimate.data:
        steps.append(f"{section}.data_placement: host (frees {estimate.data / GB:.1f} GB)")
    if not checkpointing:
        steps.append(f"{section}.grad_checkpointing: true (activations ~{CNN_CHECKPOINT_FACTOR:.0%} or less)")
    steps.append(
        f"halve {section}.batch_size and keep effective_batch_size (accumulation keeps the recipe; activations "
        f"{estimate.activations / GB:.1f} -> {estimate.activations / 2 / GB:.1f} GB)"
    )
    return f"it will not fit in {available / GB:.1f} GB: " + "; or ".join(steps)


def log_estimate(
    estimate: MemoryEstimate, setup: DeviceSetup, batch_size: int, checkpointing: bool, section: str
) -> None:
    """Log the estimate; on CUDA compare it with the device's free memory and say what to change."""
    log.info("%s%s", estimate.line(batch_size), ", activation checkpointing on" if checkpointing else "")
    if setup.device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(setup.device)
    if estimate.total > free:
        log.warning("%s", advice(estimate, free, checkpointing, section))


def model_probes(model: nn.Module, image_size: int) -> list[Probe]:
    """A whole image model on (1, S, S) grey inputs (fine-tuning)."""
    return [Probe(model, (1, image_size, image_size))]


def plan_memory(
    model: nn.Module,
    probes: Sequence[Probe],
    tensors: dict,
    batch_size: int,
    setup: DeviceSetup,
    requested: str,
    checkpointing: bool,
    section: str,
) -> str:
    """Estimate the job, place its data (device when it fits with room, else host) and log both -> placement.

    Call it before the model moves to the device: the meta copies are then made from host memory, and the
    device's free memory does not already exclude the weights the estimate counts.
    """
    model_only = estimate_memory(model, probes, batch_size, setup, checkpointing)
    data_bytes = data_nbytes(tensors)
    placement = choose_placement(requested, setup, data_bytes, model_only.model)
    estimate = MemoryEstimate(
        model_only.weights, model_only.gradients, model_only.optimizer, model_only.activations,
        data_bytes if placement == "device" and setup.device.type != "cpu" else 0,
    )  # fmt: skip
    log_estimate(estimate, setup, batch_size, checkpointing, section)
    return placement


def mae_probes(mae: nn.Module, mask_ratio: float, times: float = 1.0) -> list[Probe]:
    """A masked autoencoder: its encoder blocks on the visible tokens, its decoder blocks on all of them."""
    n, prefix = mae.n_patches, mae.n_prefix
    visible = prefix + n - round(n * mask_ratio)
    encoder = Probe(nn.Sequential(*mae.encoder.blocks), (visible, mae.encoder.embed_dim), times)
    decoder_dim = mae.decoder_embed.out_features
    return [encoder, Probe(nn.Sequential(*mae.decoder_blocks), (prefix + n, decoder_dim), times)]
