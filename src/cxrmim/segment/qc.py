"""The lung-mask QC figure; the plausibility checks and the QC policy are `cxrmim.data.mask_qc` (patch_validity
applies them to provided masks too, so they sit with the data stages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


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
