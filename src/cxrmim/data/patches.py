"""Lung coverage of ViT patches: which patches region-guided masking may pick."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def patch_coverage(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Fraction of each patch covered by lung, (B, H, W) or (B, 1, H, W) masks -> (B, n_patches).

    Patches are ordered row-major, the same order as timm's PatchEmbed tokens.
    """
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    height, width = masks.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(f"image size {height}x{width} is not a multiple of patch size {patch_size}")
    coverage = F.avg_pool2d((masks > 0).float(), kernel_size=patch_size, stride=patch_size)
    return coverage.flatten(1)


def valid_patches(coverage: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """A patch is valid (lung) when its coverage exceeds the threshold; 0.0 means any overlap."""
    return coverage > threshold


def coverage_of_array(masks: np.ndarray, patch_size: int, chunk: int = 1024) -> np.ndarray:
    """Numpy front end of `patch_coverage` for a whole cache, in chunks to bound memory."""
    out = [
        patch_coverage(torch.from_numpy(np.array(masks[i : i + chunk])), patch_size).numpy()
        for i in range(0, len(masks), chunk)
    ]
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), dtype=np.float32)
