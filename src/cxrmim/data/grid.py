"""Values onto the prepared grid: masks binarised robustly, images and masks resized to size x size."""

from __future__ import annotations

import numpy as np
from PIL import Image


def binarise_mask(values: np.ndarray) -> np.ndarray:
    """Lung where a stored value is above half the mask's range, so grey, JPEG or noisy masks stay binary."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        return values
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:  # constant: all lung when non-zero (QC flags it as too large), else empty
        return np.full(values.shape, high > 0)
    return values > (low + high) / 2


def _resize_float(array: np.ndarray, size: int, upsample: Image.Resampling) -> np.ndarray:
    """Resize a float array to size x size: area averaging when shrinking, `upsample` when enlarging."""
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    shrinking = size <= min(array.shape)
    resample = Image.Resampling.BOX if shrinking else upsample
    return np.asarray(image.resize((size, size), resample=resample), dtype=np.float32)


def resize_to_grid(array: np.ndarray, size: int, is_mask: bool) -> np.ndarray:
    """Resize a 2-D image ([0, 1] float or uint8) or mask to a size x size uint8 grid (aspect not kept)."""
    array = np.asarray(array)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"resize_to_grid needs a non-empty 2-D array, got shape {array.shape}")
    if size < 1:
        raise ValueError(f"resize_to_grid needs size >= 1, got {size}")
    if is_mask:
        # area fraction of lung in each output pixel, kept where at least half is lung
        coverage = _resize_float((array != 0).astype(np.float32), size, Image.Resampling.BOX)
        return (coverage >= 0.5).astype(np.uint8)
    unit = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    resized = _resize_float(unit, size, Image.Resampling.BILINEAR)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
