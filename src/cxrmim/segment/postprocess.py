"""Clean predicted lung masks: keep the two largest components, fill holes, optionally dilate; overlap scores."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

N_LUNGS = 2


def keep_largest_components(mask: np.ndarray, keep: int = N_LUNGS) -> np.ndarray:
    """The `keep` largest 4-connected components of a boolean mask (ties broken by label order)."""
    labels, count = ndimage.label(mask)
    if count <= keep:
        return labels > 0
    sizes = np.bincount(labels.ravel())[1:]
    largest = np.argsort(-sizes, kind="stable")[:keep] + 1
    return np.isin(labels, largest)


def clean_mask(mask: np.ndarray, dilation: int = 0) -> np.ndarray:
    """Post-process one binary mask: two largest components, holes filled, then `dilation` pixels grown."""
    cleaned = ndimage.binary_fill_holes(keep_largest_components(np.asarray(mask, dtype=bool)))
    if dilation > 0:
        # A disk keeps the growth isotropic (iterating a cross would grow diamonds).
        radius = int(dilation)
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        cleaned = ndimage.binary_dilation(cleaned, structure=yy**2 + xx**2 <= radius**2)
    return cleaned


def clean_masks(masks: np.ndarray, dilation: int = 0) -> np.ndarray:
    """`clean_mask` over a stack, as uint8 (N, S, S)."""
    return (
        np.stack([clean_mask(mask, dilation) for mask in masks]).astype(np.uint8)
        if len(masks)
        else (np.zeros_like(masks, dtype=np.uint8))
    )


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of two (N, S, S) binary stacks; two empty masks count as a perfect match."""
    predicted = predicted.reshape(len(predicted), -1).astype(bool)
    truth = truth.reshape(len(truth), -1).astype(bool)
    overlap = (predicted & truth).sum(axis=1).astype(float)
    total = predicted.sum(axis=1) + truth.sum(axis=1).astype(float)
    union = (predicted | truth).sum(axis=1).astype(float)
    dice = np.where(total > 0, 2 * overlap / np.maximum(total, 1), 1.0)
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 1.0)
    return dice, iou
