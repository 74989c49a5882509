"""Which patches a masked autoencoder hides: random (MAE), region-guided (RGMIM), lung-ratio (RGMIM-lung) or
report-guided (MedIM).

RGMIM's paper admits two readings. `region` masks m = round(n * ratio) patches, lung-valid ones first: when
the lung covers fewer than m patches (most radiographs at 0.75) every lung patch is hidden. `lung_ratio`
masks the fraction `ratio` of each image's lung-valid patches, so the encoder still sees lung tissue.
Every strategy has the same signature and returns a `MaskPlan`, so the model picks one by name from `MASKING`.
Noise is drawn from a CPU `torch.Generator` and then moved to the target device: the same seed gives the
same mask on every device, and resumed runs can redraw exactly the same masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cxrmim import registry


@dataclass
class MaskPlan:
    """One masking decision for a batch; patch indices follow timm's row-major token order."""

    ids_keep: torch.Tensor  # (B, n_keep) long: patches the encoder sees, in shuffled order
    mask: torch.Tensor  # (B, n) float, 1 = masked, in original patch order
    ids_restore: torch.Tensor  # (B, n) long: inverse permutation that unshuffles [kept, masked] tokens
    fallback: torch.Tensor  # (B,) bool: the image's mask had to cover patches outside the lung (region-guided)

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


def checked_validity(
    valid: torch.Tensor | None, batch_size: int, n_patches: int, name: str, device: torch.device | str | None
) -> torch.Tensor:
    """The (B, n_patches) validity as bool on `device` (default: its own), or a clear error."""
    if valid is None:
        raise ValueError(f"{name} masking needs a (B, n_patches) validity tensor")
    if tuple(valid.shape) != (batch_size, n_patches):
        raise ValueError(f"validity has shape {tuple(valid.shape)}, expected {(batch_size, n_patches)}")
    return valid.to(device=device if device is not None else valid.device, dtype=torch.bool)


def random_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    n_masked: int | None = None,
) -> MaskPlan:
    """MAE masking: a uniformly random subset of round(n * ratio) (or `n_masked`) patches; `valid` is ignored."""
    device = device if device is not None else (valid.device if valid is not None else "cpu")
    noise = uniform_noise(batch_size, n_patches, generator, device)
    fallback = torch.zeros(batch_size, dtype=torch.bool, device=device)
    return plan_from_noise(noise, n_masked if n_masked is not None else masked_count(n_patches, mask_ratio), fallback)


def region_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    n_masked: int | None = None,
) -> MaskPlan:
    """RGMIM masking: the same number of masked patches as MAE (or `n_masked`), lung-valid patches first.

    Valid patches get noise in [1, 2) and the rest [0, 1), so after sorting the masked tail holds only valid
    patches whenever an image has at least m of them; otherwise all valid patches are masked and the
    remainder is random (flagged in `fallback`).
    """
    valid = checked_validity(valid, batch_size, n_patches, "region", device)
    if n_masked is None:
        n_masked = masked_count(n_patches, mask_ratio)
    noise = uniform_noise(batch_size, n_patches, generator, valid.device) + valid.float()
    fallback = valid.sum(dim=1) < n_masked
    return plan_from_noise(noise, n_masked, fallback)


def lung_masked_counts(valid: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """k_i = round(ratio * v_i): how many of image i's v_i lung-valid patches `lung_ratio` masks -> (B,) long."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}")
    return torch.round(valid.sum(dim=1) * mask_ratio).long()


def lung_batch_masked(valid: torch.Tensor, mask_ratio: float) -> int:
    """The shared count n_mask = max_i k_i, within [1, n - 1] (reads the device once: call outside the step)."""
    return int(lung_masked_counts(valid, mask_ratio).max().clamp(1, valid.shape[1] - 1))


def lung_ratio_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    n_masked: int | None = None,
) -> MaskPlan:
    """RGMIM-lung masking: hide the fraction `mask_ratio` of each image's lung-valid patches.

    Image i masks k_i = round(ratio * v_i) of its v_i lung-valid patches, chosen at random. The encoder needs
    the same number of visible tokens for every image of a batch, so all share n_mask masked patches: by default
    max_i k_i of the batch (at least 1; computing it reads the device once), or `n_masked` when given (training
    passes one count for the whole run, so no step waits on the device and shapes stay static). Images with
    k_i < n_mask hide their n_mask - k_i extra patches among random non-lung patches (flagged in `fallback`);
    only when an image has too few non-lung patches does it mask more of its lung (k_i is capped at n_mask).
    """
    valid = checked_validity(valid, batch_size, n_patches, "lung-ratio", device)
    if n_masked is None:
        n_masked = lung_batch_masked(valid, mask_ratio)
    if not 0 <= n_masked < n_patches:
        raise ValueError(f"n_masked must be in [0, {n_patches - 1}]; got {n_masked}")
    noise = uniform_noise(batch_size, n_patches, generator, valid.device)
    # Rank each image's lung patches by their noise (lung first, so ranks 0..v_i-1); the k_i lowest are chosen.
    lung_rank = torch.argsort(torch.argsort(torch.where(valid, noise, noise + 2.0), dim=1), dim=1)
    chosen = valid & (lung_rank < lung_masked_counts(valid, mask_ratio).clamp(max=n_masked).unsqueeze(1))
    # Highest scores are masked: chosen lung [2, 3), then non-lung [1, 2), then the remaining lung [0, 1).
    score = noise + 2.0 * chosen.float() + (~valid).float()
    plan = plan_from_noise(score, n_masked, torch.zeros(batch_size, dtype=torch.bool, device=valid.device))
    plan.fallback = (plan.mask.bool() & ~valid).any(dim=1)
    return plan


def guided_plan(scores: torch.Tensor, noise: torch.Tensor, n_masked: int, high: float, low: float) -> MaskPlan:
    """MedIM's rule with a fixed count: patches scoring above the per-image median are picked with probability
    `high`, the others with `low` (MedIM: 0.9 / 0.1); then the n_masked highest of (picked + tie-break noise) are
    masked, so picked patches go first and the count is the same for every image of the batch.

    `scores` (B, n); `noise` (B, 2, n) uniform in [0, 1): [:, 0] decides picking, [:, 1] breaks ties.
    """
    median = torch.quantile(scores.float(), 0.5, dim=1, keepdim=True)
    above = scores > median
    picked = noise[:, 0] < torch.where(above, high, low)
    fallback = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    return plan_from_noise(picked.float() + noise[:, 1], n_masked, fallback)


def report_guided_masking(
    batch_size: int,
    n_patches: int,
    mask_ratio: float,
    valid: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    n_masked: int | None = None,
    high: float = 0.9,
    low: float = 0.1,
) -> MaskPlan:
    """MedIM masking (KWM / SDM): `valid` carries the (B, n) report-guided score map instead of lung validity."""
    scores = checked_scores(valid, batch_size, n_patches, device)
    noise = uniform_noise(batch_size, 2 * n_patches, generator, scores.device).view(batch_size, 2, n_patches)
    return guided_plan(
        scores, noise, n_masked if n_masked is not None else masked_count(n_patches, mask_ratio), high, low
    )


def checked_scores(
    scores: torch.Tensor | None, batch_size: int, n_patches: int, device: torch.device | str | None
) -> torch.Tensor:
    """The (B, n_patches) score map as float on `device`, or a clear error."""
    if scores is None or tuple(scores.shape) != (batch_size, n_patches):
        shape = None if scores is None else tuple(scores.shape)
        raise ValueError(f"report-guided masking needs a ({batch_size}, {n_patches}) score map; got {shape}")
    return scores.to(device=device if device is not None else scores.device, dtype=torch.float32)


MaskingFn = Callable[..., MaskPlan]

MASKING: dict[str, MaskingFn] = {
    "random": random_masking,
    "region": region_masking,
    "lung_ratio": lung_ratio_masking,
    "report_guided": report_guided_masking,
}

# Masked pretraining methods (cxrmim.registry) -> masking strategy.
METHOD_MASKING = {m.name: m.masking for m in registry.METHODS if m.family == registry.MASKED}


def masking_for(name: str) -> MaskingFn:
    """Look up a strategy by masking name (random, region, lung_ratio) or method name (mae, rgmim, rgmim-lung)."""
    name = METHOD_MASKING.get(name, name)
    if name not in MASKING:
        raise ValueError(f"unknown masking {name!r}; choose one of {sorted(MASKING)} or {sorted(METHOD_MASKING)}")
    return MASKING[name]
