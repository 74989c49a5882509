"""The report's headline figure (test accuracy, or Dice for segmentation, against the label budget with 95% interval
bands, one panel per architecture) and the heatmap of every pairwise comparison; both read the tables rule's CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from cxrmim.analysis.figures import empty_figure, method_colour, save_figure
from cxrmim.analysis.markdown import count_text
from cxrmim.analysis.runs import fraction_label

# Every init also has its own marker, so lines are told apart in grey print and without colour vision.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
DODGE = 0.012  # decades between neighbouring inits' points


def tick_text(at: pd.DataFrame) -> str:
    """'10%\\n(115 images)': the budget and how many labelled images it is."""
    return f"{fraction_label(at['fraction'].iloc[0])}\n({count_text(at['n_labels'].round())} images)"


def score_of(intervals: pd.DataFrame | None) -> str:
    """What the intervals' `accuracy` column holds: 'accuracy', or 'Dice' (files older than the column: accuracy)."""
    if intervals is None or "score" not in intervals or intervals["score"].dropna().empty:
        return "accuracy"
    return str(intervals["score"].dropna().iloc[0])


def headline_figure(intervals: pd.DataFrame) -> plt.Figure:
    """Mean test accuracy (segmentation: Dice) per init against the label budget (log axis) with its 95% interval
    as a band; pretrained inits coloured and solid, baselines dashed; the most-common-class rate dotted."""
    if intervals.empty:
        return empty_figure("no accuracy to show (multilabel task, or no label-fraction runs)")
    architectures = list(dict.fromkeys(intervals["architecture"]))
    n_lines = intervals.groupby("architecture")["init"].nunique().max() + 1
    figure, axes = plt.subplots(
        1, len(architectures), figsize=(5.2 * len(architectures) + 0.6, 4.2 + 0.2 * n_lines), sharey=True, squeeze=False
    )
    fractions = sorted(intervals["fraction"].unique())
    ticks = [tick_text(intervals[np.isclose(intervals["fraction"], f)]) for f in fractions]
    markers = {init: MARKERS[i % len(MARKERS)] for i, init in enumerate(dict.fromkeys(intervals["init"]))}
    for ax, architecture in zip(axes[0], architectures):
        panel = intervals[intervals["architecture"] == architecture]
        n_inits = panel["init"].nunique()
        for position, (init, data) in enumerate(panel.groupby("init", sort=False)):
            data = data.sort_values("fraction")
            # A small sideways shift per init (log axis) keeps equal means from hiding one another's markers.
            x = data["fraction"] * 10 ** (DODGE * (position - (n_inits - 1) / 2))
            colour = method_colour(data["method"].iloc[0], init)
            pretrained = bool(data["pretrained"].iloc[0])
            ax.fill_between(
                x, data["ci_low"], data["ci_high"], color=colour, alpha=0.15 if pretrained else 0.08, linewidth=0
            )
            ax.plot(
                x,
                data["accuracy"],
                color=colour,
                marker=markers[init],
                markersize=6,
                linestyle="-" if pretrained else "--",
                linewidth=2 if pretrained else 1.6,
                label=data["label"].iloc[0],
            )
        majority = intervals.groupby("fraction")["majority_share"].first().dropna()  # none for segmentation
        if not majority.empty:
            ax.plot(
                majority.index,
                majority.to_numpy(),
                color="black",
                linestyle=":",
                linewidth=1,
                label="most common class",
            )
        ax.set_xscale("log")
        ax.set_xticks(fractions, ticks)
        ax.minorticks_off()
        ax.set_title(architecture)
        ax.set_xlabel("labelled training images")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, fontsize="small", frameon=False)
    axes[0][0].set_ylabel(f"test {score_of(intervals)} (mean, 95% interval)")
    return figure


def pair_labels(significance: pd.DataFrame) -> dict[str, str]:
    """init -> its name in the comparison text ('RGMIM (ViT)'), the init itself where two inits share that name."""
    names: dict[str, str] = {}
    for _, row in significance.iterrows():
        a, b = row["comparison"].split(" vs ")
        names.setdefault(row["init_a"], a)
        names.setdefault(row["init_b"], b)
    shared = pd.Series(names).duplicated(keep=False)
    return {init: init if shared[init] else name for init, name in names.items()}


def difference_matrix(rows: pd.DataFrame, inits: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(row − column difference, interval excludes zero) over `inits`; NaN / False where not compared."""
    index = {init: i for i, init in enumerate(inits)}
    values = np.full((len(inits), len(inits)), np.nan)
    decided = np.zeros_like(values, dtype=bool)
    for _, row in rows.iterrows():
        a, b = index[row["init_a"]], index[row["init_b"]]
        values[a, b], values[b, a] = row["difference"], -row["difference"]
        decided[a, b] = decided[b, a] = row["ci_low"] > 0 or row["ci_high"] < 0
    return values, decided


def significance_heatmap(significance: pd.DataFrame, score: str = "accuracy") -> plt.Figure:
    """One panel per label fraction: accuracy (or `score`: Dice) difference row − column of every compared pair; cells whose 95%
    interval excludes zero carry a star and a black frame (not colour alone)."""
    if significance.empty:
        return empty_figure("no pairwise comparisons (count budgets or a multilabel task)")
    names = pair_labels(significance)
    inits, labels = list(names), list(names.values())
    fractions = sorted(significance["fraction"].unique())
    size = 0.55 * len(labels) + 2.5
    figure, all_axes = plt.subplots(
        1,
        len(fractions) + 1,
        figsize=(size * len(fractions) + 1.2, size + 1.2),
        squeeze=False,
        gridspec_kw={"width_ratios": [1] * len(fractions) + [0.04]},
    )
    axes, colour_bar = all_axes[:, :-1], all_axes[0, -1]  # a colour-bar axis of its own keeps tight_layout exact
    limit = max(float(significance["difference"].abs().max()), 1e-6)
    image = None
    for ax, fraction in zip(axes[0], fractions):
        values, decided = difference_matrix(significance[np.isclose(significance["fraction"], fraction)], inits)
        image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
        for (i, j), value in np.ndenumerate(values):
            if np.isnan(value):
                continue
            ax.text(
                j,
                i,
                f"{value:+.2f}{'*' if decided[i, j] else ''}",
                ha="center",
                va="center",
                fontsize=7,
                fontweight="bold" if decided[i, j] else "normal",
                color="white" if abs(value) > 0.6 * limit else "black",
            )
            if decided[i, j]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.5))
        ticks = np.arange(len(labels))
        ax.set_xticks(ticks, labels, rotation=45, ha="right", rotation_mode="anchor", fontsize="small")
        ax.set_yticks(ticks, labels if ax is axes[0][0] else [], fontsize="small")
        ax.set_title(f"{fraction_label(fraction)} labels: row − column (*: 95% CI excludes 0)", fontsize="small")
        ax.grid(False)
    figure.colorbar(image, cax=colour_bar, label=f"test {score} difference")
    return figure


VERDICT_FIGURES = ["accuracy_by_budget", "significance_heatmap"]


def write_verdict_figures(
    intervals_csv: str | Path | None,
    significance_csv: str | Path | None,
    plots: dict[str, Any],
    out_dir: str | Path,
) -> list[Path]:
    """Draw VERDICT_FIGURES from tables/accuracy_intervals.csv and tables/significance.csv (a figure saying so where
    a table is not given)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style=plots.get("style", "whitegrid"))
    intervals = pd.read_csv(intervals_csv) if intervals_csv else None
    headline = (
        headline_figure(intervals)
        if intervals is not None
        else empty_figure("no accuracy intervals given (tables/accuracy_intervals.csv)")
    )
    heatmap = (
        significance_heatmap(pd.read_csv(significance_csv), score_of(intervals))
        if significance_csv
        else empty_figure("no significance table given (tables/significance.csv)")
    )
    return [
        save_figure(figure, out_dir / f"{name}.png", plots)
        for name, figure in zip(VERDICT_FIGURES, [headline, heatmap])
    ]
