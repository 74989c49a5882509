"""The paper's tables from fine-tuning runs: label fractions (Table 2), masking ratio (Table 3),
hyperparameters (Table 1) and the significance of the key comparisons, as CSV and Markdown."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.analysis.hyperparameters import hyperparameter_table
from cxrmim.analysis.markdown import count_text, markdown_table
from cxrmim.analysis.runs import (
    PRETRAIN_MEASURES,
    default_variant,
    fraction_label,
    init_label,
    load_pretrain_histories,
    load_runs,
    main_runs,
    method_rank,
    score_metric,
    score_name,
)
from cxrmim.analysis.significance import (
    significance_heading,
    significance_markdown,
    significance_table,
)
from cxrmim.analysis.verdict import INTERVAL_COLUMNS, accuracy_intervals, verdict_table
from cxrmim.analysis.verdict_text import verdict_markdown
from cxrmim.io import write_text_atomic

STD_NOTE = (
    "Mean ± sample standard deviation over all runs of an init: every pretraining seed × every label-subset seed "
    "(baselines: subset seeds); no ± for a single run; n = runs per cell."
)
PRETRAIN_NOTE = (
    "Fallback images: share of the last pretraining epoch's images whose masking had to cover patches outside the "
    "lung (too few lung-valid patches for the ratio); for region-guided masking these images were masked partly at "
    "random. Visible lung patches: share of lung-valid patches left visible to the encoder; the lower it is, the "
    "more of the lung the model had to reconstruct. Means over pretraining seeds; – where the history predates "
    "these columns."
)
SUMMARY_METRICS = {
    "test_accuracy": "Test accuracy",
    "test_f1_macro": "Test macro F1",
    "test_auc_macro": "Test macro AUC",
    "test_f1": "Test F1 (binary)",
    "test_auc": "Test AUC (binary)",
    "test_auc_mean": "Test mean AUC (multilabel)",
    "test_dice": "Test Dice (segmentation, positive images)",
    "test_iou": "Test IoU (segmentation, positive images)",
    "test_kaggle_dice": "Test Kaggle Dice (all images; an empty prediction on an empty mask scores 1)",
}


def has_negatives(runs: pd.DataFrame) -> bool:
    """Whether segmentation runs were tested on images without a true mask (SIIM-style lesions), where the Kaggle
    Dice differs from the Dice of the positive images; lung masks are never empty, so it would repeat the Dice."""
    if "test_n" not in runs or "test_n_positive" not in runs:
        return False
    return bool((runs["test_n_positive"] < runs["test_n"]).any())


def summary_metrics(runs: pd.DataFrame) -> dict[str, str]:
    """The Table 2 sections these runs have: their task's metrics (Kaggle Dice only where test masks can be empty)."""
    shown = {m: title for m, title in SUMMARY_METRICS.items() if m in runs}
    if not has_negatives(runs):
        shown.pop("test_kaggle_dice", None)
    return shown


def mean_std(values: pd.Series) -> str:
    """'0.771 ± 0.012' over seeds, '0.771' for a single seed, '–' when there is no value."""
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def fraction_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Table 2 layout: one row per init family, one column per label fraction, mean ± std over its runs."""
    fractions = sorted(runs["fraction"].unique())
    labels = init_label(runs)
    rows = []
    for init, group in runs.groupby("init", sort=False):
        method = group["method"].iloc[0]
        ambiguous = labels[group.index[0]].endswith("]")  # another init shares method and architecture
        cells = {"Method": f"{method} [{init}]" if ambiguous else method, "Architecture": group["architecture"].iloc[0]}
        for fraction in fractions:
            cells[fraction_label(fraction)] = mean_std(group.loc[group["fraction"] == fraction, metric])
        cells["n"] = count_text(group.groupby("fraction").size())
        rows.append(cells)
    return pd.DataFrame(rows)


def mask_ratio_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Pretrained runs at the largest label fraction (100% normally), the setting of Table 3."""
    pretrained = runs[runs["mask_ratio"].notna()]
    if pretrained.empty:
        return pretrained
    return pretrained[pretrained["fraction"] == pretrained["fraction"].max()]


def percent(value: float) -> str:
    """0.125 -> '12.5%', NaN -> '–'."""
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def mask_ratio_table(runs: pd.DataFrame, histories: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 3 layout: method, masking ratio, accuracy (segmentation: Dice; mean ± std over runs) and, from the
    pretraining histories, the last epoch's share of fallback images and of visible lung patches (mean over seeds)."""
    score = score_name(runs)
    columns = [
        "Method",
        "Architecture",
        "Masking ratio",
        "Label fraction",
        score[0].upper() + score[1:],
        "n",
        "Fallback images",
        "Visible lung patches",
    ]
    data = mask_ratio_runs(runs)
    if data.empty:
        return pd.DataFrame(columns=columns)
    measures = (
        histories.groupby("init")[PRETRAIN_MEASURES].mean()
        if histories is not None and not histories.empty
        else pd.DataFrame(columns=PRETRAIN_MEASURES)
    )
    data = data.assign(_m=method_rank(data))
    data = data.sort_values(["_m", "method", "architecture", "mask_ratio"])
    rows = []
    for init, group in data.groupby("init", sort=False):
        pretraining = measures.loc[init] if init in measures.index else pd.Series(np.nan, index=PRETRAIN_MEASURES)
        rows.append(
            {
                "Method": group["method"].iloc[0],
                "Architecture": group["architecture"].iloc[0],
                "Masking ratio": f"{group['mask_ratio'].iloc[0]:.2f}",
                "Label fraction": fraction_label(group["fraction"].iloc[0]),
                columns[4]: mean_std(group.get(f"test_{score_metric(group)}", pd.Series(dtype=float))),  # multilabel: –
                "n": len(group),
                "Fallback images": percent(pretraining["fallback_fraction"]),
                "Visible lung patches": percent(pretraining["visible_lung_fraction"]),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def write_tables(
    metrics_paths: list[str | Path],
    config: dict[str, Any],
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
    pretrain_histories: Iterable[str | Path] = (),
) -> dict[str, Path]:
    """Write every table as CSV and Markdown under out_dir; returns the Markdown paths by table name.

    `config` is the configuration used (Table 1, pretrain.mask_ratio); `settings` the tables: section;
    `pretrain_histories` the pretraining runs' history.csv (Table 3's fallback and visible-lung columns).
    """
    out_dir = Path(out_dir)
    # Tables 1-3 compare inits: only the first configured mode and preset; the study table shows every variant.
    # and count budgets (n<count>) appear there only: Tables 2-3 are laid out by label fraction.
    runs = default_variant(load_runs(metrics_paths), config.get("finetune") or {})
    runs = runs[runs["budget"].str.startswith("frac")]
    main = main_runs(runs, (config.get("pretrain") or {}).get("mask_ratio"))
    tables_cfg = settings if settings is not None else config.get("tables") or {}
    n_bootstrap = int(tables_cfg.get("bootstrap_samples", 1000))

    sections = [
        f"## {title} by label fraction\n\n{markdown_table(fraction_table(main, metric))}"
        for metric, title in summary_metrics(main).items()  # the task's: binary and multilabel runs have no macro ones
    ]
    label_fractions_md = "# Label fractions (Table 2)\n\n" + STD_NOTE + "\n\n" + "\n".join(sections)
    ratio_table = mask_ratio_table(runs, load_pretrain_histories(pretrain_histories))
    significance = significance_table(main, n_bootstrap, int(tables_cfg.get("seed", 0)))
    hyperparameters = hyperparameter_table(config, runs)
    verdict = verdict_table(main, significance)
    score = score_name(main)  # what the verdict and significance judge: accuracy, or Dice for segmentation
    intervals = (
        pd.DataFrame(columns=INTERVAL_COLUMNS)
        if main.empty or (main["task"] == "multilabel").any()
        else accuracy_intervals(main, n_bootstrap, int(tables_cfg.get("seed", 0)))
    )
    outputs = {
        "verdict": (verdict, verdict_markdown(verdict, intervals, score)),
        "accuracy_intervals": (intervals, ""),  # the headline figure's data; its Markdown is the verdict's
        "label_fractions": (runs.drop(columns=["run_dir"]), label_fractions_md),
        "mask_ratio": (
            ratio_table,
            "# Masking ratio (Table 3)\n\n" + STD_NOTE + "\n\n" + PRETRAIN_NOTE + "\n\n" + markdown_table(ratio_table)
            if not ratio_table.empty
            else "# Masking ratio (Table 3)\n\nNo pretrained runs.\n",
        ),
        "hyperparameters": (
            hyperparameters,
            "# Hyperparameters (Table 1)\n\nFrom the config used; the model rows from the fine-tuning runs' "
            "metrics.json (encoder without classification head; – where a run predates them).\n\n"
            + markdown_table(hyperparameters),
        ),
        "significance": (
            significance,
            significance_heading(n_bootstrap, score) + markdown_table(significance_markdown(significance, score)),
        ),
    }
    written = {}
    for name, (csv_table, markdown) in outputs.items():
        write_text_atomic(out_dir / f"{name}.csv", csv_table.to_csv(index=False))
        if markdown:
            write_text_atomic(out_dir / f"{name}.md", markdown)
            written[name] = out_dir / f"{name}.md"
    return written
