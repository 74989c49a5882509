"""Patch validity against hand-computed cases, and the no-mask policy."""

import numpy as np
import pytest
import torch

from cxrmim.data.patches import patch_coverage, valid_patches
from cxrmim.data.validity import compute_validity, validity_summary


def test_coverage_hand_computed():
    mask = torch.zeros(1, 8, 8)
    mask[0, 0:4, 0:4] = 1  # patch 0 fully covered
    mask[0, 0, 4] = 1  # patch 1: one pixel of 16
    mask[0, 4:8, 4:6] = 1  # patch 3: half covered
    coverage = patch_coverage(mask, 4)
    assert torch.allclose(coverage, torch.tensor([[1.0, 1 / 16, 0.0, 0.5]]))
    assert valid_patches(coverage, 0.0).tolist() == [[True, True, False, True]]
    assert valid_patches(coverage, 0.25).tolist() == [[True, False, False, True]]


def test_coverage_order_is_row_major_like_patch_embed():
    mask = torch.zeros(1, 6, 9)
    mask[0, 3:6, 0:3] = 1  # second row, first column -> patch index 3
    assert patch_coverage(mask, 3)[0].nonzero().flatten().tolist() == [3]


def test_size_must_be_multiple_of_patch():
    with pytest.raises(ValueError, match="multiple of patch size"):
        patch_coverage(torch.zeros(1, 10, 10), 4)


def test_no_mask_policy():
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, :4, :4] = 1
    has_mask = np.array([1, 0])
    with pytest.raises(ValueError, match="no lung mask.*b.*all_valid"):
        compute_validity(masks, has_mask, 4, 0.0, "fail", ["a", "b"])
    result = compute_validity(masks, has_mask, 4, 0.0, "all_valid", ["a", "b"])
    assert result["valid"][0].tolist() == [True, False, False, False]
    assert result["valid"][1].all()
    import pandas as pd

    summary = validity_summary(result["valid"], result["has_mask"], pd.Series(["x", "y"]))
    row = summary.set_index("label").loc["y"]
    assert row["n_without_mask"] == 1 and row["n_images"] == 1
    assert summary.set_index("label").loc["x", "mean"] == 1
