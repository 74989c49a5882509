"""Masking strategies: fixed counts, invertible shuffles, region-guided selection and its fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cxrmim.models.masking import (
    MASKING,
    lung_ratio_masking,
    masked_count,
    masking_for,
    random_masking,
    region_masking,
)

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
    assert masking_for("rgmim-lung") is lung_ratio_masking and masking_for("lung_ratio") is lung_ratio_masking
    with pytest.raises(ValueError):
        masking_for("block")


def masked_lung(plan, valid: torch.Tensor) -> list[int]:
    """Masked lung-valid patches per image."""
    return (plan.mask.bool() & valid).sum(dim=1).tolist()


def test_lung_ratio_masks_the_ratio_of_the_lung_and_leaves_the_rest_visible() -> None:
    valid = lung_validity(3, [40, 40, 40])
    plan = lung_ratio_masking(3, N_PATCHES, RATIO, valid, generator())
    assert masked_lung(plan, valid) == [30, 30, 30]  # round(0.75 * 40)
    assert torch.all(plan.mask.sum(dim=1) == 30) and plan.n_keep == N_PATCHES - 30
    assert torch.all(plan.mask.bool() <= valid) and not plan.fallback.any()
    assert torch.equal(((1 - plan.mask).bool() & valid).sum(dim=1), torch.tensor([10, 10, 10]))


def test_lung_ratio_batch_shares_the_largest_count_and_pads_outside_the_lung() -> None:
    counts = [64, 40, 20, 0]
    valid = lung_validity(len(counts), counts)
    plan = lung_ratio_masking(len(counts), N_PATCHES, RATIO, valid, generator(3))
    assert torch.all(plan.mask.sum(dim=1) == 48)  # n_mask = max_i round(0.75 * v_i) = 48
    assert masked_lung(plan, valid) == [48, 30, 15, 0]
    assert ((plan.mask.bool() & ~valid).sum(dim=1)).tolist() == [0, 18, 33, 48]
    assert plan.fallback.tolist() == [False, True, True, True]


def test_lung_ratio_with_a_fixed_count_caps_and_then_masks_the_remaining_lung() -> None:
    valid = lung_validity(3, [40, 8, 60])
    plan = lung_ratio_masking(3, N_PATCHES, RATIO, valid, generator(4), n_masked=30)
    assert torch.all(plan.mask.sum(dim=1) == 30)
    assert masked_lung(plan, valid)[:2] == [30, 6]  # 40 -> 30 (its k is 30), 8 -> 6 plus 24 outside the lung
    # 60 lung patches want 45 > 30: capped at 30 lung patches, nothing outside the lung.
    assert masked_lung(plan, valid)[2] == 30 and plan.fallback.tolist() == [False, True, False]
    crowded = lung_validity(1, [60])
    plan = lung_ratio_masking(1, N_PATCHES, RATIO, crowded, generator(4), n_masked=62)
    # k = 45 chosen lung patches, the 4 non-lung ones, then 13 more lung patches to reach 62.
    assert masked_lung(plan, crowded) == [58] and plan.fallback.tolist() == [True]


def test_lung_ratio_chooses_lung_patches_at_random() -> None:
    valid = lung_validity(1, [40])
    hits = sum(lung_ratio_masking(1, N_PATCHES, RATIO, valid, generator(seed)).mask[0] for seed in range(200))
    lung_hits = hits[valid[0]] / 200
    assert torch.all(hits[~valid[0]] == 0)
    assert lung_hits.min() > 0.55 and lung_hits.max() < 0.95  # each lung patch is masked about 75% of the time


def test_fixed_counts_override_random_and_region() -> None:
    valid = lung_validity(2, [64, 20])
    assert torch.all(random_masking(2, N_PATCHES, RATIO, valid, generator(), n_masked=10).mask.sum(dim=1) == 10)
    region = region_masking(2, N_PATCHES, RATIO, valid, generator(), n_masked=30)
    assert region.fallback.tolist() == [False, True]


def test_rgmim_lung_is_registered_for_the_workflow() -> None:
    from cxrmim.inits import PRETRAIN_METHODS, parse_init

    spec = parse_init("rgmim-lung_r0.75_vit-cpu_s1")
    assert (spec.kind, spec.encoder_key, spec.mask_ratio, spec.pretrain_seed) == ("rgmim-lung", "vit-cpu", 0.75, 1)
    assert spec.method == PRETRAIN_METHODS["rgmim-lung"] == "RGMIM-lung" and spec.pretrained


def test_on_real_lung_masks_region_masking_hides_the_lung_and_lung_ratio_does_not(realdata: Path) -> None:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from cxrmim.data.patches import patch_coverage, valid_patches
    from cxrmim.models.masking import lung_batch_masked

    folder = realdata / "cohen_covid_lungmasks"
    manifest = pd.read_csv(next(folder.glob("*.csv")))
    masks = np.stack([np.asarray(Image.open(folder / p).convert("L").resize((224, 224), Image.NEAREST)) > 0
                      for p in manifest["mask"].dropna()])  # fmt: skip
    valid = valid_patches(patch_coverage(torch.from_numpy(masks.astype(np.uint8)), 16), 0.0)  # ViT-B/16 grid
    n = valid.shape[1]

    def visible_lung(plan) -> float:
        return (((plan.mask < 0.5) & valid).sum() / valid.sum()).item()

    region = region_masking(len(valid), n, RATIO, valid, generator())
    lung = lung_ratio_masking(len(valid), n, RATIO, valid, generator(), n_masked=lung_batch_masked(valid, RATIO))
    # Real lungs cover fewer than 0.75 x 196 patches: region masking hides all of almost every lung.
    assert region.fallback.float().mean() > 0.9 and visible_lung(region) < 0.02
    assert 0.24 < visible_lung(lung) < 0.26
    assert 0.2 < visible_lung(random_masking(len(valid), n, RATIO, valid, generator())) < 0.3
