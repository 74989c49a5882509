"""Masking strategies: fixed counts, invertible shuffles, region-guided selection and its fallback."""

from __future__ import annotations

import pytest
import torch

from cxrmim.models.masking import MASKING, masked_count, masking_for, random_masking, region_masking

N_PATCHES, RATIO = 64, 0.75
N_MASKED = 48


def generator(seed: int = 0) -> torch.Generator:
    """A fresh seeded CPU generator."""
    return torch.Generator().manual_seed(seed)


def lung_validity(batch_size: int, n_valid: list[int]) -> torch.Tensor:
    """Validity with the first n_valid[i] patches of sample i valid (scattered by a fixed permutation)."""
    valid = torch.zeros(batch_size, N_PATCHES, dtype=torch.bool)
    perm = torch.randperm(N_PATCHES, generator=generator(123))
    for row, count in enumerate(n_valid):
        valid[row, perm[:count]] = True
    return valid


@pytest.mark.parametrize("name", sorted(MASKING))
def test_counts_are_fixed_and_ids_restore_inverts_the_shuffle(name: str) -> None:
    valid = lung_validity(5, [64, 50, 48, 20, 0])
    plan = MASKING[name](5, N_PATCHES, RATIO, valid, generator())
    assert masked_count(N_PATCHES, RATIO) == N_MASKED
    assert plan.ids_keep.shape == (5, N_PATCHES - N_MASKED)
    assert torch.all(plan.mask.sum(dim=1) == N_MASKED)
    kept = torch.zeros(5, N_PATCHES).scatter(1, plan.ids_keep, 1.0)
    assert torch.equal(kept, 1 - plan.mask)  # kept ids are exactly the unmasked patches
    # Unshuffling [kept, masked] with ids_restore puts every patch index back at its own position.
    ids_shuffle = torch.argsort(plan.ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, : plan.n_keep], plan.ids_keep)
    restored = torch.gather(ids_shuffle, 1, plan.ids_restore)
    assert torch.equal(restored, torch.arange(N_PATCHES).expand(5, -1))


def test_region_masks_only_valid_patches_when_enough() -> None:
    valid = lung_validity(4, [64, 60, 50, 48])
    plan = region_masking(4, N_PATCHES, RATIO, valid, generator())
    assert not plan.fallback.any()
    assert torch.all(plan.mask.bool() <= valid)  # masked implies valid


def test_region_fallback_masks_every_valid_patch_then_random() -> None:
    valid = lung_validity(2, [20, 0])
    plan = region_masking(2, N_PATCHES, RATIO, valid, generator())
    assert plan.fallback.tolist() == [True, True]
    assert torch.all(plan.mask.bool()[valid])  # every lung patch is masked
    assert torch.all(plan.mask.sum(dim=1) == N_MASKED)


def test_mixed_batch_flags_only_the_few_valid_samples() -> None:
    counts = [64, 47, 48, 10, 63, 1]
    valid = lung_validity(len(counts), counts)
    plan = region_masking(len(counts), N_PATCHES, RATIO, valid, generator(5))
    assert plan.fallback.tolist() == [c < N_MASKED for c in counts]
    for row, count in enumerate(counts):
        masked_valid = (plan.mask[row].bool() & valid[row]).sum().item()
        assert masked_valid == min(count, N_MASKED)


def test_same_seed_same_mask_and_different_seed_differs() -> None:
    valid = lung_validity(3, [64, 50, 30])
    for fn in MASKING.values():
        first, second = fn(3, N_PATCHES, RATIO, valid, generator(7)), fn(3, N_PATCHES, RATIO, valid, generator(7))
        assert torch.equal(first.mask, second.mask) and torch.equal(first.ids_keep, second.ids_keep)
        assert not torch.equal(first.mask, fn(3, N_PATCHES, RATIO, valid, generator(8)).mask)


def test_random_masking_ignores_validity_and_region_requires_it() -> None:
    plan = random_masking(2, N_PATCHES, RATIO, None, generator())
    assert not plan.fallback.any()
    with pytest.raises(ValueError):
        region_masking(2, N_PATCHES, RATIO, None, generator())


def test_method_names_map_to_strategies() -> None:
    assert masking_for("rgmim") is region_masking and masking_for("mae") is random_masking
    with pytest.raises(ValueError):
        masking_for("block")
