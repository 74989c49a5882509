"""Figures of the fine-tuning results: metrics vs label fraction, Fig. 3 (accuracy vs epoch), masking ratio,
confusion matrices; for segmentation runs the accuracy figures draw Dice. One colour per method everywhere
(PALETTE); line style tells the architecture."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

from cxrmim import registry  # noqa: E402
from cxrmim.analysis.runs import (  # noqa: E402
    fraction_label,
    init_label,
    load_history,
    load_predictions,
    load_runs,
    main_runs,
    score_metric,
    score_name,
)
from cxrmim.analysis.tables import mask_ratio_runs  # noqa: E402
from cxrmim.io import atomic_path  # noqa: E402

# Colours come from the registry: every figure (and the pretraining ones, if they import it) agrees.
PALETTE = registry.palette()
FALLBACK_COLOURS = sns.color_palette("colorblind", 10)
ARCHITECTURE_DASHES = {"ViT": "", "ResNet-50": (4, 2)}


def method_colour(method: str, init: str = "") -> Any:
    """Colour of a method (a published encoder's label: its init kind's); others get a stable colour from their name."""
    method = registry.place_label(method, init)
    if method in PALETTE:
        return PALETTE[method]
    return FALLBACK_COLOURS[sum(map(ord, method)) % len(FALLBACK_COLOURS)]


def label_palette(runs: pd.DataFrame) -> dict[str, Any]:
    """Legend label -> its method's colour."""
    return {label: method_colour(m, i) for label, m, i in zip(runs["label"], runs["method"], runs["init"])}


def dashes_for(runs: pd.DataFrame) -> dict[str, Any]:
    """Architecture -> dash pattern (solid ViT, dashed ResNet-50, dotted others)."""
    return {arch: ARCHITECTURE_DASHES.get(arch, (1, 1)) for arch in runs["architecture"].unique()}


def empty_figure(message: str) -> plt.Figure:
    """Placeholder so a missing study still yields the expected file, saying why it is empty."""
    figure, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return figure


def lines_by_init(data: pd.DataFrame, x: str, y: str, ylabel: str) -> plt.Figure:
    """One line per init with ± sd bars over seeds; hue = method colour, dashes = architecture."""
    figure, ax = plt.subplots(figsize=(8.5, 4.5))
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue="label",
        style="architecture",
        palette=label_palette(data),
        dashes=dashes_for(data),
        markers=True,
        errorbar="sd",
        err_style="bars",
        ax=ax,
    )
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    return figure


def auc_column(runs: pd.DataFrame) -> tuple[str, str]:
    """The AUC a task's runs have: macro over classes (multiclass) or the positive class's (binary)."""
    if "test_auc_macro" in runs and runs["test_auc_macro"].notna().any():
        return "test_auc_macro", "test macro AUC"
    return "test_auc", "test AUC"


def metric_vs_fraction(runs: pd.DataFrame, metric: str, ylabel: str) -> plt.Figure:
    """Test metric against label fraction on a log axis."""
    data = runs.dropna(subset=[metric]) if metric in runs else runs.iloc[:0]
    if data.empty:
        return empty_figure(f"no runs with {ylabel}")
    figure = lines_by_init(data, "fraction", metric, ylabel)
    ax = figure.axes[0]
    ax.set_xscale("log")
    fractions = sorted(data["fraction"].unique())
    ax.set_xticks(fractions, [fraction_label(f) for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images")
    return figure


def score_column(runs: pd.DataFrame) -> tuple[str, str]:
    """(test column, axis label) of the runs' per-image score: test accuracy, or test Dice for segmentation."""
    return f"test_{score_metric(runs)}", f"test {score_name(runs)}"


def accuracy_vs_epoch(runs: pd.DataFrame) -> plt.Figure:
    """The paper's Fig. 3: test accuracy (segmentation: Dice) per fine-tuning epoch at the largest label fraction."""
    full = runs[runs["fraction"] == runs["fraction"].max()]
    history = load_history(full)
    column, ylabel = score_column(runs)
    if history.empty or column not in history:
        return empty_figure("no history" if history.empty else f"the runs' history.csv has no {column} column")
    history = history.merge(full[["init", "label"]].drop_duplicates(), on="init")
    figure = lines_by_init(history, "epoch", column, ylabel)
    figure.axes[0].set_title(f"{fraction_label(full['fraction'].iloc[0])} labels")
    figure.axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def accuracy_vs_mask_ratio(runs: pd.DataFrame) -> plt.Figure:
    """Table 3 as a figure: test accuracy (segmentation: Dice) against masking ratio, one line per method."""
    data = mask_ratio_runs(runs)
    if data.empty:
        return empty_figure("no pretrained runs")
    figure = lines_by_init(data.assign(label=data["method"]), "mask_ratio", *score_column(data))
    figure.axes[0].set_xlabel("masking ratio σ")
    return figure


def best_seed_run(group: pd.DataFrame) -> pd.Series:
    """The run (pretraining seed, subset seed) with the best validation accuracy: the test set does not pick it."""
    seeds = ["pretrain_seed", "seed"]
    if "val_accuracy" not in group or group["val_accuracy"].isna().all():  # runs without a validation part
        return group.sort_values(seeds).iloc[0]
    return group.sort_values(["val_accuracy", *seeds], ascending=[False, True, True]).iloc[0]


def seed_text(run: pd.Series) -> str:
    """'seed 1' or, for a pretrained init, 'pretraining seed 0, seed 1'."""
    pretrain = "" if pd.isna(run["pretrain_seed"]) else f"pretraining seed {int(run['pretrain_seed'])}, "
    return f"{pretrain}seed {int(run['seed'])}"


def draw_matrix(ax: plt.Axes, matrix: np.ndarray, classes: list[str], show_rows: bool) -> None:
    """Annotated matrix image (plain imshow: seaborn's heatmap redraws the canvas and is ~10x slower)."""
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    for (true, pred), value in np.ndenumerate(matrix):
        ax.text(
            pred, true, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.6 else "black"
        )
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, classes if show_rows else [])
    ax.grid(False)


def decisions(predictions: pd.DataFrame) -> tuple[list[str], pd.Series, pd.Series | None]:
    """Class names, true and predicted class per test image; binary runs' 0/1 become "not <positive>"/"<positive>",
    multilabel runs have no prediction (None)."""
    outputs = [c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_")]
    if "pred" not in predictions:
        return outputs, predictions["label"], None
    if "target" in predictions:
        names = [f"not {outputs[0]}", outputs[0]]
        return (
            names,
            predictions["target"].map(lambda v: names[int(v)]),
            predictions["pred"].map(lambda v: names[int(v)]),
        )
    return outputs, predictions["label"].astype(str), predictions["pred"].astype(str)


def confusion_matrices(runs: pd.DataFrame) -> plt.Figure:
    """Row-normalised test confusion matrices per init at the lowest and highest label fraction."""
    if (runs["task"] == "segmentation").any():
        return empty_figure("segmentation task: no classes to confuse\n(see worst_segmentations.png)")
    fractions = sorted({runs["fraction"].min(), runs["fraction"].max()})
    inits = list(dict.fromkeys(runs["init"]))
    figure, axes = plt.subplots(
        len(fractions), len(inits), figsize=(3.6 * len(inits) + 1, 3.8 * len(fractions)), squeeze=False
    )
    for row, fraction in enumerate(fractions):
        for col, init in enumerate(inits):
            ax = axes[row, col]
            group = runs[(runs["fraction"] == fraction) & (runs["init"] == init)]
            if group.empty:
                ax.axis("off")
                continue
            run = best_seed_run(group)
            classes, truth, pred = decisions(load_predictions(run["run_dir"]))
            if pred is None:  # multilabel runs score findings without deciding them
                ax.axis("off")
                continue
            matrix = confusion_matrix(truth, pred, labels=classes)
            matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            draw_matrix(ax, matrix, classes, show_rows=col == 0)
            ax.set_title(
                f"{run['label']}\n{fraction_label(fraction)}, {seed_text(run)}",
                fontsize="small",
                color=method_colour(run["method"], run["init"]),
            )
            ax.set_xlabel("predicted")
            ax.set_ylabel("true" if col == 0 else "")
    return figure


FIGURES: dict[str, Callable[[pd.DataFrame, pd.DataFrame], plt.Figure]] = {
    # name -> figure from (all runs, runs of the label-fraction study)
    "accuracy_vs_fraction": lambda runs, main: metric_vs_fraction(main, *score_column(main)),
    "auc_vs_fraction": lambda runs, main: (
        empty_figure("segmentation task: no AUC\n(Dice: accuracy_vs_fraction.png; IoU: tables/label_fractions.md)")
        if (main["task"] == "segmentation").any()
        else metric_vs_fraction(main, *auc_column(main))
    ),
    "accuracy_vs_epoch": lambda runs, main: accuracy_vs_epoch(main),
    "accuracy_vs_mask_ratio": lambda runs, main: accuracy_vs_mask_ratio(runs),
    "confusion_matrices": lambda runs, main: confusion_matrices(main),
}


def write_figures(
    metrics_paths: list[str | Path],
    plots: dict[str, Any],
    out_dir: str | Path,
    mask_ratio: float | None = None,
    variant: tuple[str, str] = ("full", "current"),
) -> list[Path]:
    """Draw every figure in FIGURES to out_dir/<name>.png; `mask_ratio` picks the label-fraction study's inits,
    `variant` the (mode, augmentation preset) whose runs are drawn."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style=plots.get("style", "whitegrid"))
    runs = figure_runs(load_runs(metrics_paths), variant)
    if runs.empty or (runs["task"] == "multilabel").any():
        why = "no label-fraction runs of this mode and preset" if runs.empty else "multilabel task: see tables/study.md"
        return [save_figure(empty_figure(why), out_dir / f"{name}.png", plots) for name in FIGURES]
    main = main_runs(runs, mask_ratio)
    # Legend labels name the init only where it is ambiguous within the runs a figure shows.
    runs, main = runs.assign(label=init_label(runs)), main.assign(label=init_label(main))
    written = []
    for name, draw in FIGURES.items():
        written.append(save_figure(draw(runs, main), out_dir / f"{name}.png", plots))
    return written


def figure_runs(runs: pd.DataFrame, variant: tuple[str, str]) -> pd.DataFrame:
    """The runs the paper's figures compare inits on: one mode and preset, label-fraction budgets only."""
    return runs[(runs["mode"] == variant[0]) & (runs["augment"] == variant[1]) & runs["budget"].str.startswith("frac")]


def save_figure(figure: plt.Figure, path: Path, plots: dict[str, Any]) -> Path:
    """Lay out, write through a temporary sibling, close."""
    figure.tight_layout()
    with atomic_path(path) as tmp:  # keeps the suffix, from which matplotlib picks the format
        figure.savefig(tmp, dpi=int(plots.get("dpi", 110)))
        plt.close(figure)
    return path
