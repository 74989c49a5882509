"""Joint-embedding pretraining figure (SimSiam, BYOL, SKD, Cross): loss and embedding spread (the collapse check)."""

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

from cxrmim.analysis.figures import method_colour  # noqa: E402
from cxrmim.inits import parse_init  # noqa: E402

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


def run_colour(run: str) -> object:
    """The colour of the run's method (the results figures' PALETTE); a folder not named like a run gets its own."""
    try:
        return method_colour(parse_init(run).method)
    except ValueError:
        return method_colour(run)


def plot_contrastive_pretraining(history_paths: list[str | Path], out: str | Path, plots: dict[str, Any]) -> Path:
    """Two panels: each method's loss and std of the normalised embeddings x sqrt(d); a run in its method's colour."""
    sns.set_theme(style=plots.get("style", "whitegrid"))
    data = load_histories(history_paths)
    palette = {run: run_colour(run) for run in data["run"].unique()}
    figure, (loss_ax, std_ax) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    sns.lineplot(data=data, x="epoch", y="loss", hue="run", palette=palette, marker="o", ax=loss_ax)
    # SimSiam, BYOL, Cross: negative cosine terms (-1 = agreement); SKD adds its distillation KL (>= 0).
    loss_ax.set_ylabel("loss (each method's own)")
    loss_ax.set_title("Pretraining loss")
    sns.lineplot(data=data, x="epoch", y="embedding_std_ratio", hue="run", palette=palette, marker="o", ax=std_ax,
                 legend=False)  # fmt: skip
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
