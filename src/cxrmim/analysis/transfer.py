"""The cross-dataset summary (the layout of MRM's Table 1): a row per init, a column per evaluation dataset and
label budget, each cell that dataset's headline metric (mean ± std over all runs), as CSV, Markdown and a figure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from cxrmim.analysis.figures import ARCHITECTURE_DASHES, empty_figure, method_colour, save_figure  # noqa: E402
from cxrmim.analysis.markdown import markdown_table  # noqa: E402
from cxrmim.analysis.runs import (  # noqa: E402
    default_variant,
    fraction_label,
    init_label,
    load_runs,
    main_runs,
    sort_runs,
)
from cxrmim.analysis.study import budget_order  # noqa: E402
from cxrmim.analysis.tables import mean_std  # noqa: E402
from cxrmim.analysis.verdict_figures import DODGE, MARKERS  # noqa: E402
from cxrmim.io import write_text_atomic  # noqa: E402

# The number each field reports per task: accuracy for classes, AUC for one finding, mean AUC over findings,
# Dice over the positive test images for segmentation (MRM's SIIM column).
HEADLINE_METRICS = {
    "multiclass": ("test_accuracy", "test accuracy"),
    "binary": ("test_auc", "test AUC"),
    "multilabel": ("test_auc_mean", "test mean AUC"),
    "segmentation": ("test_dice", "test Dice"),
}
MISSING = "–"
TIDY_COLUMNS = [
    "dataset",
    "task",
    "metric",
    "metric_label",
    "init",
    "label",
    "method",
    "architecture",
    "budget",
    "budget_label",
    "mean",
    "std",
    "runs",
]
NOTE = (
    "Each cell: the dataset's headline metric, mean ± sample standard deviation over all runs of the init at that "
    "budget (every pretraining seed × every label-subset seed; baselines: subset seeds); no ± for a single run; "
    f"{MISSING} where the init has no run there (or none with a defined value: an AUC needs both classes). Only the first configured fine-tuning mode and augmentation preset "
    "and the main masking ratio (the ratio study's other ratios are left out)."
)


def budget_text(tag: str) -> str:
    """frac0.01 -> '1%', n1000 -> 'n1000' (the existing tables' budget labels)."""
    return fraction_label(float(tag[4:])) if tag.startswith("frac") else tag


def headline_metric(runs: pd.DataFrame, dataset: str) -> tuple[str, str, str]:
    """(task, metric column, metric label) of one dataset's runs; one task per dataset."""
    tasks = sorted(runs["task"].unique())
    if len(tasks) != 1:
        raise ValueError(f"dataset {dataset!r}: runs of several tasks {tasks}; give each task its own dataset name")
    if tasks[0] not in HEADLINE_METRICS:
        raise ValueError(f"dataset {dataset!r}: unknown task {tasks[0]!r}; expected one of {sorted(HEADLINE_METRICS)}")
    metric, label = HEADLINE_METRICS[tasks[0]]
    if metric not in runs:
        raise ValueError(f"dataset {dataset!r}: its {tasks[0]} runs' metrics.json have no test {metric[5:]!r}")
    return tasks[0], metric, label


def load_datasets(
    datasets: Mapping[str, Iterable[str | Path]],
    variant: tuple[str, str] = ("full", "current"),
    mask_ratio: float | None = None,
) -> pd.DataFrame:
    """Every dataset's runs of one fine-tuning (mode, preset) at the main masking ratio, tagged with `dataset`,
    `task`, `metric` (its headline column) and `value` (that metric's value)."""
    if not datasets:
        raise ValueError("no evaluation datasets given; pass --dataset NAME METRICS_JSON... once per dataset")
    frames = []
    for name, paths in datasets.items():
        paths = list(paths)
        if not paths:
            raise ValueError(f"dataset {name!r}: no metrics.json files given")
        loaded = load_runs(paths)
        runs = default_variant(loaded, {"modes": [variant[0]], "augment_presets": [variant[1]]})
        if runs.empty:
            raise ValueError(
                f"dataset {name!r}: none of its {len(loaded)} runs is of mode {variant[0]!r} and augmentation "
                f"preset {variant[1]!r}; pass the first configured variant (finetune.modes, finetune.augment_presets)"
            )
        runs = main_runs(runs, mask_ratio)  # per dataset: each one's ratio study is its own
        task, metric, label = headline_metric(runs, name)
        frames.append(runs.assign(dataset=name, task=task, metric=metric, metric_label=label, value=runs[metric]))
    return pd.concat(frames, ignore_index=True)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Tidy table: a row per init × dataset × budget of that dataset, in the paper's row order and the datasets'
    given order; `runs` counts the runs with a value, and an init without any at a budget keeps its row (runs 0,
    mean and std NaN)."""
    ordered = sort_runs(runs)
    labels = dict(zip(ordered["init"], init_label(ordered)))
    inits = ordered.drop_duplicates("init")
    rows = []
    for dataset in dict.fromkeys(runs["dataset"]):
        at_dataset = runs[runs["dataset"] == dataset]
        first = at_dataset.iloc[0]
        for _, init in inits.iterrows():
            for budget in budget_order(at_dataset):
                values = at_dataset.loc[
                    (at_dataset["init"] == init["init"]) & (at_dataset["budget"] == budget), "value"
                ].dropna()
                rows.append(
                    {
                        "dataset": dataset,
                        **{key: first[key] for key in ("task", "metric", "metric_label")},
                        "init": init["init"],
                        "label": labels[init["init"]],
                        "method": init["method"],
                        "architecture": init["architecture"],
                        "budget": budget,
                        "budget_label": budget_text(budget),
                        "mean": values.mean() if len(values) else np.nan,
                        "std": values.std(ddof=1) if len(values) > 1 else np.nan,
                        "runs": len(values),
                    }
                )
    return pd.DataFrame(rows, columns=TIDY_COLUMNS)


def cell_text(row: pd.Series) -> str:
    """'0.712 ± 0.021', '0.712' for one run, '–' for none."""
    if row["runs"] == 0:
        return MISSING
    return mean_std(pd.Series([row["mean"]])) if row["runs"] == 1 else f"{row['mean']:.3f} ± {row['std']:.3f}"


def wide_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """A row per init (Method, Architecture), a '<dataset> <budget>' column per dataset and budget."""
    rows = []
    for init, group in tidy.groupby("init", sort=False):
        first = group.iloc[0]
        ambiguous = first["label"].endswith("]")  # another init shares method and architecture (as in Table 2)
        cells = {"Method": f"{first['method']} [{init}]" if ambiguous else first["method"]}
        cells["Architecture"] = first["architecture"]
        for _, row in group.iterrows():
            cells[f"{row['dataset']} {row['budget_label']}"] = cell_text(row)
        rows.append(cells)
    return pd.DataFrame(rows)


def metric_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """The legend of the wide table: per dataset its task, headline metric, budgets and the runs behind it."""
    rows = []
    for dataset, group in tidy.groupby("dataset", sort=False):
        missing = int((group["runs"] == 0).sum())
        rows.append(
            {
                "Dataset": dataset,
                "Task": group["task"].iloc[0],
                "Headline metric": group["metric_label"].iloc[0],
                "Budgets": ", ".join(dict.fromkeys(group["budget_label"])),
                "Runs": int(group["runs"].sum()),
                "Cells without runs": missing,
            }
        )
    return pd.DataFrame(rows)


def transfer_markdown(tidy: pd.DataFrame) -> str:
    """The Markdown page: the metric per dataset, then the wide table."""
    return (
        "# Across datasets: the headline metric of every init\n\n"
        + NOTE
        + "\n\n## The headline metric of each dataset\n\n"
        + markdown_table(metric_table(tidy))
        + "\n## Every init on every dataset and label budget\n\n"
        + markdown_table(wide_table(tidy))
    )


def budget_axis(budgets: list[str]) -> tuple[dict[str, float], bool]:
    """x position per budget tag and whether the axis is logarithmic: fractions (or counts) on a log axis, a dataset
    with both kinds of budget at evenly spaced positions."""
    if all(b.startswith("frac") for b in budgets):
        return {b: float(b[4:]) for b in budgets}, True
    if not any(b.startswith("frac") for b in budgets):
        return {b: float(b[1:]) for b in budgets}, True
    return {b: float(i) for i, b in enumerate(budgets)}, False


def line_style(architecture: str) -> Any:
    """Matplotlib line style of the architecture's dash pattern in the other figures (solid ViT, dashed ResNet)."""
    dashes = ARCHITECTURE_DASHES.get(architecture, (1, 1))
    return "-" if not dashes else (0, dashes)


def transfer_figure(tidy: pd.DataFrame) -> plt.Figure:
    """One panel per dataset: its headline metric against the label budget, a line per init with ± sd bars, in the
    method colours of every other figure; an init without runs on a dataset is named in that panel."""
    if tidy.empty:
        return empty_figure("no runs to show")
    datasets = list(dict.fromkeys(tidy["dataset"]))
    inits = list(dict.fromkeys(tidy["init"]))
    markers = {init: MARKERS[i % len(MARKERS)] for i, init in enumerate(inits)}
    figure, axes = plt.subplots(
        1, len(datasets), figsize=(4.6 * len(datasets) + 3.2, 4.2 + 0.1 * len(inits)), squeeze=False
    )
    handles: dict[str, Any] = {}
    for ax, dataset in zip(axes[0], datasets):
        panel = tidy[tidy["dataset"] == dataset]
        budgets = list(dict.fromkeys(panel["budget"]))
        x_of, log = budget_axis(budgets)
        absent = []
        for position, (init, data) in enumerate(panel.groupby("init", sort=False)):
            label = data["label"].iloc[0]
            data = data[data["runs"] > 0]
            if data.empty:
                absent.append(label)
                continue
            # A small sideways shift per init keeps equal means from hiding one another's bars.
            offset = position - (len(inits) - 1) / 2
            x = np.array([x_of[b] for b in data["budget"]])
            x = x * 10 ** (DODGE * offset) if log else x + 0.02 * offset
            handles.setdefault(
                label,
                ax.errorbar(
                    x,
                    data["mean"],
                    yerr=data["std"].fillna(0.0),  # a single run has no spread
                    color=method_colour(data["method"].iloc[0], init),
                    marker=markers[init],
                    linestyle=line_style(data["architecture"].iloc[0]),
                    capsize=3,
                    label=label,
                ),
            )
        if log:
            ax.set_xscale("log")
        ax.set_xticks([x_of[b] for b in budgets], [budget_text(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(f"{dataset} ({panel['task'].iloc[0]})")
        ax.set_xlabel("label budget" + ("\n(no runs here: " + "; ".join(absent) + ")" if absent else ""))
        ax.set_ylabel(f"{panel['metric_label'].iloc[0]} (mean ± sd)")
    axes[0][-1].legend(
        handles.values(), handles.keys(), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False
    )
    return figure


def write_transfer(
    datasets: Mapping[str, Iterable[str | Path]],
    plots: dict[str, Any],
    out_dir: str | Path,
    variant: tuple[str, str] = ("full", "current"),
    mask_ratio: float | None = None,
) -> dict[str, Path]:
    """Write out_dir/tables/transfer.csv, out_dir/tables/transfer.md and out_dir/figures/transfer.png."""
    out_dir = Path(out_dir)
    tidy = summary_table(load_datasets(datasets, variant, mask_ratio))
    paths = {
        "csv": out_dir / "tables" / "transfer.csv",
        "md": out_dir / "tables" / "transfer.md",
        "png": out_dir / "figures" / "transfer.png",
    }
    write_text_atomic(paths["csv"], tidy.to_csv(index=False))
    write_text_atomic(paths["md"], transfer_markdown(tidy))
    sns.set_theme(style=plots.get("style", "whitegrid"))
    save_figure(transfer_figure(tidy), paths["png"], plots)
    return paths
