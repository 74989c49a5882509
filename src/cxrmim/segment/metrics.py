"""Segmentation test metrics per image (numpy only): Dice and IoU over the images whose true mask is non-empty,
and the SIIM-ACR challenge's Dice, where an image without pneumothorax scores 1 for an empty prediction and 0 for
any other (so false alarms on the many negative images count, as on Kaggle's leaderboard)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["binarise", "dice_iou", "kaggle_dice", "segmentation_metrics"]


def binarise(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Probabilities (or 0/1 masks) -> bool masks, foreground above `threshold`."""
    return np.asarray(probabilities) > threshold


def _masks(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as bool (N, pixels); shapes must agree and hold one mask per image."""
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape or predicted.ndim < 2:
        raise ValueError(
            f"predicted masks {predicted.shape} and true masks {truth.shape}: need the same (N, H, W) shape"
        )
    for name, array in (("predicted", predicted), ("true", truth)):
        if array.dtype != np.bool_ and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} masks hold values other than 0 and 1; binarise probabilities first")
    n = predicted.shape[0] if predicted.ndim > 2 else 1
    return predicted.reshape(n, -1).astype(bool), truth.reshape(n, -1).astype(bool)


def _dice_iou(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dice_iou on flattened bool (N, pixels) masks."""
    overlap = (p & t).sum(axis=1).astype(np.float64)
    sizes = p.sum(axis=1) + t.sum(axis=1).astype(np.float64)
    union = sizes - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * overlap / sizes, np.nan), np.where(union > 0, overlap / union, np.nan)


def _kaggle(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """kaggle_dice on flattened bool (N, pixels) masks."""
    dice, _ = _dice_iou(p, t)
    return np.where(t.any(axis=1), dice, (~p.any(axis=1)).astype(np.float64))


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice 2|P∩T|/(|P|+|T|) and IoU |P∩T|/|P∪T| of (N, H, W) or one (H, W) mask; NaN where both
    masks are empty (undefined: segmentation_metrics averages them over positive images only)."""
    return _dice_iou(*_masks(predicted, truth))


def kaggle_dice(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image SIIM-ACR Dice: an empty true mask scores 1 for an empty prediction, 0 otherwise; else Dice."""
    return _kaggle(*_masks(predicted, truth))


def segmentation_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Means over images: `dice` and `iou` over positive images (a non-empty true mask), `kaggle_dice` over all;
    the per-image values too (for the bootstrap), NaN means when there is no positive image."""
    p, t = _masks(predicted, truth)
    positive = t.any(axis=1)
    dice, iou = _dice_iou(p[positive], t[positive])
    kaggle = _kaggle(p, t)
    return {
        "dice": float(dice.mean()) if positive.any() else float("nan"),
        "iou": float(iou.mean()) if positive.any() else float("nan"),
        "kaggle_dice": float(kaggle.mean()) if len(kaggle) else float("nan"),
        "n_images": int(len(t)),
        "n_positive": int(positive.sum()),
        "per_image": {"positive": positive, "dice": dice, "iou": iou, "kaggle_dice": kaggle},
    }
