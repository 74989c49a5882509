"""Plausibility checks of predicted and provided lung masks, the QC policy, and the QC figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def plot_mask_grid(images: np.ndarray, masks: np.ndarray, titles: list[str], path: str | Path,
                   reference: np.ndarray | None = None, columns: int = 6, dpi: int = 100) -> None:
    """Images with predicted mask outlines (orange) and, when given, reference outlines (cyan)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(images))
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.1 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (image, mask, title) in enumerate(zip(images, masks, titles)):
        ax = axes.ravel()[i]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        if reference is not None and reference[i].any():
            ax.contour(reference[i].astype(float), levels=[0.5], colors="cyan", linewidths=0.7)
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="tab:orange", linewidths=0.8)
        ax.set_title(title, fontsize=6)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def qc_titles(table: pd.DataFrame, picks: np.ndarray) -> list[str]:
    """Short figure titles: the id (or index), then the flags or 'ok'."""
    titles = []
    for i in picks:
        row = table.iloc[int(i)]
        titles.append(f"{str(row.get('id', i))[-14:]}\n{row['flags'] or 'ok'}")
    return titles


def provided_mask_report(prepared_dir: str | Path, mask_qc: dict[str, Any], table_csv: str | Path,
                         figure: str | Path, chunk: int = 1024) -> pd.DataFrame:
    """The dataset's own masks checked as predicted ones are: per-image QC table (named by id) and worst-first figure."""
    from cxrmim.data.tensors import load_prepared

    data = load_prepared(prepared_dir)
    rows = np.flatnonzero(data.manifest["has_mask"].to_numpy().astype(bool))
    thresholds = mask_qc.get("qc") or {}
    parts = [qc_table(np.asarray(data.images[rows[s:s + chunk]]), np.asarray(data.masks[rows[s:s + chunk]]) > 0,
                      None, thresholds) for s in range(0, len(rows), chunk)]  # a chunk at a time: bounded memory
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QC_COLUMNS)
    table.insert(0, "id", data.manifest["id"].to_numpy()[rows])
    table.insert(0, "index", rows)
    table["decision"] = decide(table["plausible"].to_numpy(), mask_qc.get("qc_policy", "all_valid"))
    Path(table_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_csv, index=False, float_format="%.4g")
    # Every failing mask up to the figure's limit, else a few plausible ones to show what passed.
    shown = min(int(thresholds.get("n_figure_images", 24)), max(6, int((table["plausible"] == 0).sum())))
    picks = worst_first(table, "area_fraction")[:shown]
    plot_mask_grid(np.asarray(data.images[rows[picks]]), np.asarray(data.masks[rows[picks]]) > 0,
                   qc_titles(table, picks), figure)
    return table
