"""Plausibility checks of lung masks (provided or predicted) and the QC policy; the QC figure is `cxrmim.segment.qc`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

# Defaults sit outside what the Cohen COVID ground-truth masks and the phantoms show (area 0.09-0.62,
# smaller/larger lung >= 0.4 in 98%, border pixels <= 0.1 in 98%), so a flag means "look at this one".
DEFAULT_THRESHOLDS = {
    "min_area_fraction": 0.08,
    "max_area_fraction": 0.7,
    "min_lung_ratio": 0.25,
    "max_border_fraction": 0.15,
    "max_background_fraction": 0.15,
    "min_upright_score": 0.0,
}
# Near-background: within this share of the 1-99% grey range above the darkest level, and connected to the
# image edge (the air around the body). Cohen COVID ground-truth masks put at most 5% of their pixels there.
BACKGROUND_LEVEL = 0.1
MAX_AIR_COVERAGE = 0.5
# Upright score = lateral droop of the lungs + RING_WEIGHT x how much better the mask's border fits the image's
# lung edges than its top-bottom mirror does (ring RING_WIDTH of the side wide). Both terms change sign when the mask
# is flipped, so a flipped mask scores exactly minus its upright self. Measured (docs/data-checks.md): upright Cohen
# COVID masks >= +0.32 (median 1.17), phantoms >= +0.31 (median 1.42); the flipped ones <= -0.31: the 0 default
# leaves a margin of 0.3 each side.
RING_WIDTH = 0.03
RING_WEIGHT = 5.0
# A (near) constant image holds no anatomy, whatever the network says about it.
BLANK_IMAGE_STD = 2.0
QC_COLUMNS = [
    "area_fraction",
    "n_components",
    "lung_ratio",
    "border_fraction",
    "background_fraction",
    "upright_score",
    "confidence",
    "flags",
    "plausible",
]
POLICY_DECISIONS = {"skip": "skip", "all_valid": "all_valid", "keep": "mask"}


def mask_measures(mask: np.ndarray) -> dict[str, float]:
    """Area fraction, component count, smaller/larger lung ratio and share of border pixels that are lung."""
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask)
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return {
        "area_fraction": float(mask.mean()),
        "n_components": int(count),
        "lung_ratio": float(sizes[1] / sizes[0]) if count >= 2 else 0.0,
        "border_fraction": float(border.mean()),
    }


def background_fraction(image: np.ndarray, mask: np.ndarray) -> float:
    """Share of mask pixels lying on the dark background around the body (a mask that spills off the patient)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, [1, 99])
    dark, count = ndimage.label(image <= low + BACKGROUND_LEVEL * (high - low))
    edge = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
    # A dark region the mask mostly covers is a lung reaching the frame edge, not air around the body.
    covered = ndimage.mean(mask, labels=dark, index=np.arange(1, count + 1)) if count else np.zeros(0)
    air = [label for label in edge[edge > 0] if covered[label - 1] < MAX_AIR_COVERAGE]
    return float((np.isin(dark, air) & mask).sum() / mask.sum())


def lung_droop(mask: np.ndarray) -> float:
    """Slope of each lung's mid-line (halfway between its top and bottom border) outwards, rows per column.

    Upright lungs droop laterally at both ends (apex medial, shoulders and costophrenic angles low): > 0.
    """
    labels, count = ndimage.label(np.asarray(mask, dtype=bool))
    if count == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    columns = np.flatnonzero(labels.any(axis=0))
    centre = columns.mean() if count >= 2 else (labels.shape[1] - 1) / 2
    slopes, weights = [], []
    for label in np.argsort(sizes)[::-1][:2] + 1:
        lung = labels == label
        cols = np.flatnonzero(lung.any(axis=0))
        if len(cols) < 3:
            continue
        top, bottom = lung.argmax(axis=0)[cols], lung.shape[0] - 1 - lung[::-1].argmax(axis=0)[cols]
        lateral = (cols - cols.mean()) * (np.sign(cols.mean() - centre) or 1.0)
        middle = (top + bottom) / 2
        slopes.append(float((lateral * (middle - middle.mean())).sum() / (lateral**2).sum()))
        weights.append(sizes[label - 1])
    return float(np.average(slopes, weights=weights)) if slopes else 0.0


def _edge_contrast(image: np.ndarray, mask: np.ndarray, width: int) -> float:
    """Mean grey level just outside the mask's border minus just inside (lungs are darker than their border)."""
    size = 2 * width + 1  # square rings: separable filters, fast at paper scale
    outside = ndimage.maximum_filter(mask, size=size, mode="constant", cval=0) & ~mask
    inside = mask & ~ndimage.minimum_filter(mask, size=size, mode="constant", cval=0)
    return float(image[outside].mean() - image[inside].mean()) if outside.any() and inside.any() else 0.0


def upright_score(image: np.ndarray, mask: np.ndarray) -> float:
    """Positive for a mask the right way up, negative for one flipped top-bottom (lung where the abdomen is)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0.0
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image, [1, 99])
    width = max(1, round(RING_WIDTH * mask.shape[0]))
    fit = (_edge_contrast(image, mask, width) - _edge_contrast(image, mask[::-1], width)) / max(high - low, 1.0)
    return lung_droop(mask) + RING_WEIGHT * fit


def qc_flags(measures: dict[str, float], image_std: float, thresholds: dict[str, float]) -> list[str]:
    """Names of the plausibility checks a mask fails (empty list = plausible)."""
    limits = {**DEFAULT_THRESHOLDS, **thresholds}
    flags = []
    if image_std < BLANK_IMAGE_STD:
        flags.append("blank_image")
    if measures["area_fraction"] < limits["min_area_fraction"]:
        flags.append("too_small")
    if measures["area_fraction"] > limits["max_area_fraction"]:
        flags.append("too_large")
    if measures["lung_ratio"] < limits["min_lung_ratio"]:
        flags.append("one_lung")
    if measures["border_fraction"] > limits["max_border_fraction"]:
        flags.append("touches_border")
    if measures.get("background_fraction", 0.0) > limits["max_background_fraction"]:
        flags.append("off_body")
    if measures.get("upright_score", 0.0) < limits["min_upright_score"]:
        flags.append("flipped")
    return flags


def qc_table(
    images: np.ndarray, masks: np.ndarray, probabilities: np.ndarray | None, thresholds: dict[str, float]
) -> pd.DataFrame:
    """One row per image: measures, flags, and the network's confidence (mean |2p - 1|, 1 = certain)."""
    rows = []
    for i, (image, mask) in enumerate(zip(images, masks)):
        measures = {
            **mask_measures(mask),
            "background_fraction": background_fraction(image, mask),
            "upright_score": upright_score(image, mask),
        }
        flags = qc_flags(measures, float(np.asarray(image, dtype=np.float32).std()), thresholds)
        confidence = float(np.abs(2 * probabilities[i] - 1).mean()) if probabilities is not None else 1.0
        rows.append({**measures, "confidence": confidence, "flags": ";".join(flags), "plausible": int(not flags)})
    return pd.DataFrame(rows)


def decide(plausible: np.ndarray, policy: str) -> np.ndarray:
    """Per image: 'mask' (use it), or for implausible masks what the policy says ('skip', 'all_valid', 'mask')."""
    if policy not in POLICY_DECISIONS:
        raise ValueError(f"lung_masks.qc_policy must be one of {sorted(POLICY_DECISIONS)}, got {policy!r}")
    return np.where(np.asarray(plausible, dtype=bool), "mask", POLICY_DECISIONS[policy]).astype(object)


def worst_first(table: pd.DataFrame, score: str) -> np.ndarray:
    """Row positions ordered implausible first, then by ascending `score` (lower = worse)."""
    keys = pd.DataFrame({"plausible": table["plausible"].to_numpy(), "score": table[score].to_numpy()})
    return keys.sort_values(["plausible", "score"], kind="stable").index.to_numpy()
