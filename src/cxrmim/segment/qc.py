"""The lung-mask QC figure and the provided masks' QC report; the plausibility checks and the QC policy are `cxrmim.data.mask_qc` (patch_validity
applies them to provided masks too, so they sit with the data stages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.data.mask_qc import QC_COLUMNS, decide, qc_table, worst_first


def plot_mask_grid(
    images: np.ndarray,
    masks: np.ndarray,
    titles: list[str],
    path: str | Path,
    reference: np.ndarray | None = None,
    columns: int = 6,
    dpi: int = 100,
) -> None:
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


def provided_mask_report(
    prepared_dir: str | Path, mask_qc: dict[str, Any], table_csv: str | Path, figure: str | Path, chunk: int = 1024
) -> pd.DataFrame:
    """The dataset's own masks checked as predicted ones are: per-image QC table (named by id) and worst-first figure."""
    from cxrmim.data.tensors import load_prepared

    data = load_prepared(prepared_dir)
    rows = np.flatnonzero(data.manifest["has_mask"].to_numpy().astype(bool))
    thresholds = mask_qc.get("qc") or {}
    parts = [
        qc_table(
            np.asarray(data.images[rows[s : s + chunk]]),
            np.asarray(data.masks[rows[s : s + chunk]]) > 0,
            None,
            thresholds,
        )
        for s in range(0, len(rows), chunk)
    ]  # a chunk at a time: bounded memory
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=QC_COLUMNS)
    table.insert(0, "id", data.manifest["id"].to_numpy()[rows])
    table.insert(0, "index", rows)
    table["decision"] = decide(table["plausible"].to_numpy(), mask_qc.get("qc_policy", "all_valid"))
    Path(table_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(table_csv, index=False, float_format="%.4g")
    # Every failing mask up to the figure's limit, else a few plausible ones to show what passed.
    shown = min(int(thresholds.get("n_figure_images", 24)), max(6, int((table["plausible"] == 0).sum())))
    picks = worst_first(table, "area_fraction")[:shown]
    plot_mask_grid(
        np.asarray(data.images[rows[picks]]), np.asarray(data.masks[rows[picks]]) > 0, qc_titles(table, picks), figure
    )
    return table
