"""The paper's tables from fine-tuning runs: label fractions (Table 2), masking ratio (Table 3),
hyperparameters (Table 1) and paired-bootstrap significance, as CSV and Markdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.analysis.runs import (
    correctness,
    default_variant,
    fraction_label,
    init_label,
    load_runs,
    main_runs,
)
from cxrmim.evaluation import paired_bootstrap
from cxrmim.recipe import LR_REFERENCE_BATCH, FinetuneSettings

STD_NOTE = "Mean ± sample standard deviation over label-subset seeds (no ± when only one seed); n = seeds."
SUMMARY_METRICS = {
    "test_accuracy": "Test accuracy",
    "test_f1_macro": "Test macro F1",
    "test_auc_macro": "Test macro AUC",
    "test_f1": "Test F1 (binary)",
    "test_auc": "Test AUC (binary)",
    "test_auc_mean": "Test mean AUC (multilabel)",
}


def mean_std(values: pd.Series) -> str:
    """'0.771 ± 0.012' over seeds, '0.771' for a single seed, '–' when there is no value."""
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def markdown_table(table: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown table of a DataFrame's cells as strings."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(str(cell) for cell in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def fraction_table(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Table 2 layout: one row per method (init), one column per label fraction, mean ± std over seeds."""
    fractions = sorted(runs["fraction"].unique())
    labels = init_label(runs)
    rows = []
    for init, group in runs.groupby("init", sort=False):
        method = group["method"].iloc[0]
        ambiguous = labels[group.index[0]].endswith("]")  # another init shares method and architecture
        cells = {"Method": f"{method} [{init}]" if ambiguous else method, "Architecture": group["architecture"].iloc[0]}
        for fraction in fractions:
            cells[fraction_label(fraction)] = mean_std(group.loc[group["fraction"] == fraction, metric])
        cells["n"] = group["seed"].nunique()
        rows.append(cells)
    return pd.DataFrame(rows)


def mask_ratio_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Pretrained runs at the largest label fraction (100% normally), the setting of Table 3."""
    pretrained = runs[runs["mask_ratio"].notna()]
    if pretrained.empty:
        return pretrained
    return pretrained[pretrained["fraction"] == pretrained["fraction"].max()]


def mask_ratio_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3 layout: method, masking ratio, accuracy (mean ± std over seeds)."""
    rows = [
        {
            "Method": method,
            "Architecture": group["architecture"].iloc[0],
            "Masking ratio": f"{ratio:.2f}",
            "Label fraction": fraction_label(group["fraction"].iloc[0]),
            "Accuracy": mean_std(group.get("test_accuracy", pd.Series(dtype=float))),  # none: multilabel
            "n": group["seed"].nunique(),
        }
        for method, by_method in mask_ratio_runs(runs).groupby("method", sort=False)
        for ratio, group in by_method.groupby("mask_ratio")  # ascending ratio within each method
    ]
    return pd.DataFrame(rows, columns=["Method", "Architecture", "Masking ratio", "Label fraction", "Accuracy", "n"])


def encoder_text(config: dict[str, Any], key: str) -> str:
    """timm name and kwargs of an `encoders:` entry."""
    entry = config.get("encoders", {}).get(key, {})
    kwargs = ", ".join(f"{k}={v}" for k, v in (entry.get("kwargs") or {}).items())
    return f"{entry.get('timm_name', key)}({kwargs})"


def hyperparameter_table(config: dict[str, Any]) -> pd.DataFrame:
    """Table 1 from the config actually used, pretraining and fine-tuning side by side."""
    pre = config.get("pretrain", {})
    fine = FinetuneSettings.from_config(config["finetune"])  # same defaults the training runs applied
    decoder = pre.get("decoder", {})
    rows = [
        ("Epochs", pre.get("epochs"), fine.epochs),
        ("Batch size", pre.get("effective_batch_size", pre.get("batch_size")), fine.batch_size),
        ("Base learning rate", pre.get("base_lr"), fine.base_lr),
        ("Peak learning rate", f"base × batch / {LR_REFERENCE_BATCH}", f"base × batch / {LR_REFERENCE_BATCH}"),
        ("Weight decay", pre.get("weight_decay"), fine.weight_decay),
        ("Momentum β1, β2", ", ".join(map(str, pre.get("betas", []))), ", ".join(map(str, fine.betas))),
        ("Warmup epochs", pre.get("warmup_epochs"), fine.warmup_epochs),
        ("Layer-wise lr decay", "–", fine.layer_decay),
        ("Drop path", "–", fine.drop_path),
        ("Minimum optimiser steps", "–", fine.min_steps),
        ("Crop scale", (pre.get("augment") or {}).get("crop_scale"), list(fine.crop_scale)),
        ("Patch size T", config.get("patch_validity", {}).get("patch_size"), "same"),
        ("Masking ratio σ", pre.get("mask_ratio"), "–"),
        ("Masking ratios studied", pre.get("mask_ratios"), "–"),
        ("Image size", config.get("prepare", {}).get("image_size"), "same"),
        ("Encoder", encoder_text(config, pre.get("encoder", "vit")), "per init (see encoders)"),
        ("Decoder (dim, depth, heads)", ", ".join(str(decoder.get(k)) for k in ("embed_dim", "depth", "num_heads")), "–"),
    ]
    return pd.DataFrame(
        [(name, "–" if a is None else str(a), "–" if b is None else str(b)) for name, a, b in rows],
        columns=["Hyperparameter", "Pretraining", "Fine-tuning"],
    )


def paired_correctness(run_a: pd.DataFrame, run_b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(n_seeds, n_images) correctness of two inits, seeds paired, images aligned by cache index."""
    seeds = sorted(set(run_a["seed"]) & set(run_b["seed"]))
    rows_a, rows_b = [], []
    for seed in seeds:
        a = correctness(run_a.loc[run_a["seed"] == seed, "run_dir"].iloc[0])
        b = correctness(run_b.loc[run_b["seed"] == seed, "run_dir"].iloc[0])
        if not a.index.equals(b.index):
            raise ValueError(f"seed {seed}: the two runs were tested on different images; use one split")
        rows_a.append(a.to_numpy())
        rows_b.append(b.to_numpy())
    return np.array(rows_a), np.array(rows_b)


def find_init(runs: pd.DataFrame, method: str, architecture: str) -> pd.DataFrame:
    """Runs of one method/architecture (after the main-ratio filter there is one init per pair)."""
    return runs[(runs["method"] == method) & (runs["architecture"] == architecture)]


COMPARISONS = [(("RGMIM", "ViT"), ("MAE", "ViT")), (("RGMIM", "ViT"), ("From Scratch", "ViT"))]


def significance_table(runs: pd.DataFrame, n_samples: int, seed: int) -> pd.DataFrame:
    """Per fraction, paired bootstrap of the accuracy difference for each comparison with both sides present."""
    rows = []
    if (runs["task"] == "multilabel").any():  # multilabel runs decide no class per image: no accuracy to pair
        return pd.DataFrame()
    for fraction, at_fraction in runs.groupby("fraction"):
        for (method_a, arch_a), (method_b, arch_b) in COMPARISONS:
            run_a, run_b = find_init(at_fraction, method_a, arch_a), find_init(at_fraction, method_b, arch_b)
            if run_a.empty or run_b.empty or not set(run_a["seed"]) & set(run_b["seed"]):
                continue
            correct_a, correct_b = paired_correctness(run_a, run_b)
            result = paired_bootstrap(correct_a, correct_b, n_samples=n_samples, seed=seed)
            rows.append({
                "fraction": fraction,
                "comparison": f"{method_a} ({arch_a}) vs {method_b} ({arch_b})",
                "init_a": run_a["init"].iloc[0],
                "init_b": run_b["init"].iloc[0],
                **result,
            })
    return pd.DataFrame(rows)


def significance_markdown(table: pd.DataFrame) -> pd.DataFrame:
    """Readable view of the significance table."""
    if table.empty:
        return pd.DataFrame({"Note": ["no pair of runs to compare"]})
    return pd.DataFrame({
        "Label fraction": table["fraction"].map(fraction_label),
        "Comparison": table["comparison"],
        "Accuracy A": table["accuracy_a"].map("{:.3f}".format),
        "Accuracy B": table["accuracy_b"].map("{:.3f}".format),
        "Difference (95% CI)": [
            f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for d, lo, hi in zip(table["difference"], table["ci_low"], table["ci_high"])
        ],
        "p": [f"< {1 / n:.3f}" if p == 0 else f"{p:.3f}" for p, n in zip(table["p_value"], table["n_bootstrap"])],
        "Seeds": table["n_seeds"],
        "Test images": table["n_images"],
    })


def write_text(path: Path, text: str) -> None:
    """Write through a temporary sibling and rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_tables(
    metrics_paths: list[str | Path], config: dict[str, Any], out_dir: str | Path, settings: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write every table as CSV and Markdown under out_dir; returns the Markdown paths by table name.

    `config` is the configuration used (Table 1, pretrain.mask_ratio); `settings` the tables: section.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Tables 1-3 compare inits: only the first configured mode and preset; the study table shows every variant.
    # and count budgets (n<count>) appear there only: Tables 2-3 are laid out by label fraction.
    runs = default_variant(load_runs(metrics_paths), config.get("finetune") or {})
    runs = runs[runs["budget"].str.startswith("frac")]
    main = main_runs(runs, (config.get("pretrain") or {}).get("mask_ratio"))
    tables_cfg = settings if settings is not None else config.get("tables") or {}

    sections = [
        f"## {title} by label fraction\n\n{markdown_table(fraction_table(main, metric))}"
        for metric, title in SUMMARY_METRICS.items()
        if metric in main  # the task's metrics: binary and multilabel runs have no macro metrics
    ]
    label_fractions_md = "# Label fractions (Table 2)\n\n" + STD_NOTE + "\n\n" + "\n".join(sections)
    ratio_table = mask_ratio_table(runs)
    significance = significance_table(
        main, int(tables_cfg.get("bootstrap_samples", 1000)), int(tables_cfg.get("seed", 0))
    )
    hyperparameters = hyperparameter_table(config)
    outputs = {
        "label_fractions": (runs.drop(columns=["run_dir"]), label_fractions_md),
        "mask_ratio": (
            ratio_table,
            "# Masking ratio (Table 3)\n\n" + STD_NOTE + "\n\n" + markdown_table(ratio_table)
            if not ratio_table.empty else "# Masking ratio (Table 3)\n\nNo pretrained runs.\n",
        ),
        "hyperparameters": (hyperparameters, "# Hyperparameters (Table 1)\n\n" + markdown_table(hyperparameters)),
        "significance": (
            significance,
            "# Paired bootstrap over test images\n\nAccuracy difference A − B, seeds paired, "
            f"{tables_cfg.get('bootstrap_samples', 1000)} resamples, 95% percentile interval.\n\n"
            + markdown_table(significance_markdown(significance)),
        ),
    }
    written = {}
    for name, (csv_table, markdown) in outputs.items():
        write_text(out_dir / f"{name}.csv", csv_table.to_csv(index=False))
        write_text(out_dir / f"{name}.md", markdown)
        written[name] = out_dir / f"{name}.md"
    return written

