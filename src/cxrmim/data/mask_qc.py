"""Plausibility checks of lung masks (provided or predicted) and the QC policy; the QC figure is `cxrmim.segment.qc`."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

# Defaults sit outside what the Cohen COVID ground-truth masks and the phantoms show (area 0.09-0.62,
# smaller/larger lung >= 0.4 in 98%, border pixels <= 0.1 in 98%), so a flag means "look at this one".
DEFAULT_THRESHOLDS = {"min_area_fraction": 0.08, "max_area_fraction": 0.7, "min_lung_ratio": 0.25,
                      "max_border_fraction": 0.15, "max_background_fraction": 0.15}
# Near-background: within this share of the 1-99% grey range above the darkest level, and connected to the
# image edge (the air around the body). Cohen COVID ground-truth masks put at most 5% of their pixels there.
BACKGROUND_LEVEL = 0.1
MAX_AIR_COVERAGE = 0.5
# A (near) constant image holds no anatomy, whatever the network says about it.
BLANK_IMAGE_STD = 2.0
QC_COLUMNS = ["area_fraction", "n_components", "lung_ratio", "border_fraction", "background_fraction", "confidence",
              "flags", "plausible"]
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
    return flags


def qc_table(images: np.ndarray, masks: np.ndarray, probabilities: np.ndarray | None,
             thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per image: measures, flags, and the network's confidence (mean |2p - 1|, 1 = certain)."""
    rows = []
    for i, (image, mask) in enumerate(zip(images, masks)):
        measures = {**mask_measures(mask), "background_fraction": background_fraction(image, mask)}
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
