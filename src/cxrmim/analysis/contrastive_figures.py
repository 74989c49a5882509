"""SimSiam / BYOL pretraining figure: loss and embedding spread (the collapse check) per epoch of every run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("epoch", "loss", "embedding_std_ratio")


def load_histories(history_paths: list[str | Path]) -> pd.DataFrame:
    """Every run's history.csv, tagged with its run folder name."""
    frames = []
    for path in map(Path, history_paths):
        history = pd.read_csv(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in history]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; not a contrastive_pretrain history, re-run that rule")
        frames.append(history.assign(run=path.parent.name))
    if not frames:
        raise ValueError("no contrastive history.csv files given")
    return pd.concat(frames, ignore_index=True)


def plot_contrastive_pretraining(history_paths: list[str | Path], out: str | Path, plots: dict[str, Any]) -> Path:
    """Two panels: negative-cosine loss (-1 is perfect agreement) and std of the normalised embeddings x sqrt(d)."""
    sns.set_theme(style=plots.get("style", "whitegrid"))
    data = load_histories(history_paths)
    figure, (loss_ax, std_ax) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    sns.lineplot(data=data, x="epoch", y="loss", hue="run", marker="o", ax=loss_ax)
    loss_ax.set_ylabel("loss (negative cosine similarity)")
    loss_ax.set_title("Pretraining loss")
    sns.lineplot(data=data, x="epoch", y="embedding_std_ratio", hue="run", marker="o", ax=std_ax, legend=False)
    std_ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    std_ax.set_ylim(0, max(1.2, 1.1 * float(data["embedding_std_ratio"].max())))
    for ax in (loss_ax, std_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    std_ax.set_ylabel("std of normalised embedding × √d")
    std_ax.set_title("Collapse check (0 = collapsed, ~1 = spread)")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=int(plots.get("dpi", 110)))
    plt.close(figure)
    log.info("wrote %s", out)
    return out
