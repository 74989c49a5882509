"""The worst test predictions of each init on a segmentation task: the k positive test images with the lowest Dice,
each drawn with the outline of its true mask and of the predicted one (worst_segmentations.png)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cxrmim.analysis.figures import empty_figure, figure_runs, method_colour, save_figure, seed_text  # noqa: E402
from cxrmim.analysis.runs import fraction_label, init_label, load_runs, main_runs  # noqa: E402

WORST_FIGURE = "worst_segmentations"
DEFAULT_K = 4
# The prepared cache file of each `dataset.segment` (the masks the segmentation runs were trained and tested on).
MASK_FILES = {"lung": "masks.npy", "lesion": "lesion_masks.npy"}
# Truth solid, prediction dashed: the outlines are told apart without colour too (print, colour vision).
TRUTH_STYLE = {"colors": "#00c853", "linestyles": "solid", "linewidths": 1.4}
PREDICTED_STYLE = {"colors": "#ff4081", "linestyles": "dashed", "linewidths": 1.4}


def shown_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One run per init at the largest label fraction: its first pretraining seed and first subset seed."""
    at = runs[np.isclose(runs["fraction"], runs["fraction"].max())]
    first = at.sort_values(["pretrain_seed", "seed"], na_position="first").groupby("init", sort=False).head(1)
    return first.loc[[i for i in at.index if i in first.index]]  # the runs' (paper) order of inits


def worst_images(run_dir: str | Path, k: int) -> pd.DataFrame:
    """The k positive test images with the lowest Dice: cache `index`, `dice` and `row` (in predicted_masks.npy)."""
    path = Path(run_dir) / "predictions.csv"
    predictions = pd.read_csv(path)
    missing = {"index", "positive", "dice"} - set(predictions.columns)
    if missing:
        raise ValueError(f"{path}: no {sorted(missing)} column; a segmentation run writes index, positive and dice")
    predictions["row"] = np.arange(len(predictions))  # rows of predicted_masks.npy follow predictions.csv
    positive = predictions[predictions["positive"].astype(int) == 1]
    return positive.sort_values(["dice", "index"]).head(k)[["index", "dice", "row"]]


def mask_file(run: pd.Series, prepared: Path) -> Path:
    """The prepared masks a run segmented, from its metrics.json `segment` (lung: masks.npy, lesion: lesion_masks)."""
    metrics_path = Path(run["run_dir"]) / "metrics.json"
    segment = json.loads(metrics_path.read_text()).get("segment")
    if segment not in MASK_FILES:
        raise ValueError(
            f"{metrics_path}: segment is {segment!r}; a segmentation run names one of {sorted(MASK_FILES)}"
        )
    return prepared / MASK_FILES[segment]


def outline(ax: plt.Axes, mask: np.ndarray, style: dict[str, Any]) -> bool:
    """Draw a mask's outline; False (nothing drawn) when the mask is empty or full, which has no outline."""
    if not 0 < int(mask.sum()) < mask.size:
        return False
    ax.contour(mask.astype(float), levels=[0.5], **style)
    return True


def load_predicted(run_dir: str | Path, n_rows: int, grid: tuple[int, ...]) -> np.ndarray:
    """A run's predicted_masks.npy (memory-mapped), checked against predictions.csv and the prepared grid."""
    path = Path(run_dir) / "predicted_masks.npy"
    if not path.is_file():
        raise ValueError(f"{path} is missing; a segmentation run writes its test masks there (re-run its fine-tune)")
    predicted = np.load(path, mmap_mode="r")
    if predicted.shape != (n_rows, *grid):
        raise ValueError(
            f"{path} has shape {predicted.shape}, expected {(n_rows, *grid)} (a row per predictions.csv row on the "
            "prepared grid); re-run its fine-tune"
        )
    return predicted


def worst_segmentations(runs: pd.DataFrame, prepared: Path, k: int = DEFAULT_K) -> plt.Figure:
    """A row per init (its first seeds at the largest label fraction), the k lowest-Dice positive test images:
    the image, the true mask's outline (solid) and the predicted one (dashed)."""
    shown = shown_runs(runs)
    images = np.load(prepared / "images.npy", mmap_mode="r")
    figure, axes = plt.subplots(len(shown), k, figsize=(2.3 * k + 0.8, 2.5 * len(shown) + 0.6), squeeze=False)
    for row_axes, (_, run) in zip(axes, shown.iterrows()):
        masks = np.load(mask_file(run, prepared), mmap_mode="r")
        if masks.shape != images.shape:
            raise ValueError(
                f"{mask_file(run, prepared)} has shape {masks.shape}, {prepared / 'images.npy'} {images.shape}: "
                "pass the prepared folder the runs were trained on"
            )
        worst = worst_images(run["run_dir"], k)
        n_rows = len(pd.read_csv(Path(run["run_dir"]) / "predictions.csv", usecols=["index"]))
        predicted = load_predicted(run["run_dir"], n_rows, images.shape[1:])
        for position, ax in enumerate(row_axes):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if position >= len(worst):
                ax.text(0.5, 0.5, "no further\npositive test image", ha="center", va="center", fontsize="small")
                continue
            image = worst.iloc[position]
            index = int(image["index"])
            ax.imshow(images[index], cmap="gray", vmin=0, vmax=255)  # the prepared cache is uint8
            outline(ax, np.asarray(masks[index]) > 0, TRUTH_STYLE)
            mask = np.asarray(predicted[int(image["row"])]) > 0
            outline(ax, mask, PREDICTED_STYLE)
            empty = "" if mask.any() else ", empty prediction"  # no outline to draw: say so
            ax.set_title(f"Dice {image['dice']:.2f} (image {index}{empty})", fontsize="x-small")
        row_axes[0].set_ylabel(
            f"{run['label']}\n{seed_text(run)}", fontsize="small", color=method_colour(run["method"], run["init"])
        )
    # The key goes in the title: tight_layout (save_figure) leaves no room for a figure-level legend.
    figure.suptitle(
        f"Worst positive test images at {fraction_label(shown['fraction'].iloc[0])} labels, lowest Dice first\n"
        "true mask: solid green outline; predicted mask: dashed pink outline",
        fontsize="small",
    )
    return figure


def write_segmentation_figures(
    metrics_paths: list[str | Path],
    plots: dict[str, Any],
    out_dir: str | Path,
    prepared: str | Path | None = None,
    mask_ratio: float | None = None,
    variant: tuple[str, str] = ("full", "current"),
    k: int = DEFAULT_K,
) -> list[Path]:
    """Write out_dir/worst_segmentations.png: the worst predictions of segmentation runs (images and true masks from
    the `prepared` cache folder), a figure saying why it is empty for other tasks."""
    if k < 1:
        raise ValueError(f"--worst-k is {k}; show at least one image per init")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style=plots.get("style", "whitegrid"))
    runs = figure_runs(load_runs(metrics_paths), variant)
    path = out_dir / f"{WORST_FIGURE}.png"
    if runs.empty or not (runs["task"] == "segmentation").all():
        why = "no label-fraction runs of this mode and preset" if runs.empty else "not a segmentation task"
        return [save_figure(empty_figure(f"{why}: no predicted masks to show"), path, plots)]
    if prepared is None:
        raise ValueError(
            "segmentation runs: pass --prepared results/<dataset>/prepared (images.npy and the masks the runs "
            "segmented) for the worst predictions figure"
        )
    main = main_runs(runs, mask_ratio)
    figure = worst_segmentations(main.assign(label=init_label(main)), Path(prepared), k)
    return [save_figure(figure, path, plots)]
