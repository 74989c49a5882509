"""Which patches a masked autoencoder hides: random (MAE) or region-guided (RGMIM) masking.

Every strategy has the same signature and returns a `MaskPlan`, so the model picks one by name from `MASKING`.
Noise is drawn from a CPU `torch.Generator` and then moved to the target device: the same seed gives the
same mask on every device, and resumed runs can redraw exactly the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class MaskPlan:
    """One masking decision for a batch; patch indices follow timm's row-major token order."""

    ids_keep: torch.Tensor  # (B, n_keep) long: patches the encoder sees, in shuffled order
    mask: torch.Tensor  # (B, n) float, 1 = masked, in original patch order
    ids_restore: torch.Tensor  # (B, n) long: inverse permutation that unshuffles [kept, masked] tokens
    fallback: torch.Tensor  # (B,) bool: region masking had to mask patches outside the lung

    @property
    def n_keep(self) -> int:
        """Number of visible patches per sample (the same for the whole batch)."""
        return int(self.ids_keep.shape[1])


def masked_count(n_patches: int, mask_ratio: float) -> int:
    """Patches to mask per image: m = round(n * ratio), kept within [0, n - 1] so the encoder sees something."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}")
    return min(n_patches - 1, int(round(n_patches * mask_ratio)))


def plan_from_noise(noise: torch.Tensor, n_masked: int, fallback: torch.Tensor) -> MaskPlan:
    """Ascending noise order: the lowest-noise patches are kept, the highest n_masked are masked."""
    batch_size, n_patches = noise.shape
    n_keep = n_patches - n_masked
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch_size, n_patches, device=noise.device)
    mask[:, :n_keep] = 0.0
    mask = torch.gather(mask, 1, ids_restore)
    return MaskPlan(ids_shuffle[:, :n_keep], mask, ids_restore, fallback)


def uniform_noise(
    batch_size: int, n_patches: int, generator: torch.Generator | None, device: torch.device | str
) -> torch.Tensor:
    """Per-patch uniform noise drawn on the generator's device (CPU by default), then moved."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(batch_size, n_patches, generator=generator, device=gen_device).to(device)


def random_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> MaskPlan:
    """MAE masking: a uniformly random subset of round(n * ratio) patches per image; `valid` is ignored."""
    device = device if device is not None else (valid.device if valid is not None else "cpu")
    noise = uniform_noise(batch_size, n_patches, generator, device)
    fallback = torch.zeros(batch_size, dtype=torch.bool, device=device)
    return plan_from_noise(noise, masked_count(n_patches, mask_ratio), fallback)


def region_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
) -> MaskPlan:
    """RGMIM masking: the same number of masked patches as MAE, drawn from lung-valid patches first.

    Valid patches get noise in [1, 2) and the rest [0, 1), so after sorting the masked tail holds only valid
    patches whenever an image has at least m of them; otherwise all valid patches are masked and the
    remainder is random (flagged in `fallback`).
    """
    if valid is None:
        raise ValueError("region masking needs a (B, n_patches) validity tensor")
    if tuple(valid.shape) != (batch_size, n_patches):
        raise ValueError(f"validity has shape {tuple(valid.shape)}, expected {(batch_size, n_patches)}")
    device = device if device is not None else valid.device
    valid = valid.to(device=device, dtype=torch.bool)
    n_masked = masked_count(n_patches, mask_ratio)
    noise = uniform_noise(batch_size, n_patches, generator, device) + valid.float()
    fallback = valid.sum(dim=1) < n_masked
    return plan_from_noise(noise, n_masked, fallback)


MaskingFn = Callable[..., MaskPlan]

MASKING: dict[str, MaskingFn] = {"random": random_masking, "region": region_masking}

# Pretraining method names in the config -> masking strategy.
METHOD_MASKING = {"rgmim": "region", "mae": "random"}


def masking_for(name: str) -> MaskingFn:
    """Look up a strategy by masking name (random, region) or method name (mae, rgmim)."""
    name = METHOD_MASKING.get(name, name)
    if name not in MASKING:
        raise ValueError(f"unknown masking {name!r}; choose one of {sorted(MASKING)} or {sorted(METHOD_MASKING)}")
    return MASKING[name]
