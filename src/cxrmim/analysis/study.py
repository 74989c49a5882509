"""Task-aware results tables: one table per label budget with a row per init, fine-tuning mode and augmentation
preset (the MAE-vs-ResNet study's layout), and the paired significance of each init against a reference init."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.analysis.markdown import markdown_table
from cxrmim.analysis.runs import init_label, load_runs, score_name
from cxrmim.analysis.significance import init_scores
from cxrmim.analysis.tables import STD_NOTE, has_negatives, mean_std
from cxrmim.evaluation import hierarchical_bootstrap
from cxrmim.io import write_text_atomic

# Test metrics of each task in the study's column order (accuracy, precision, F1, recall, AUC).
TASK_METRICS = {
    "multiclass": {
        "accuracy": "Accuracy",
        "precision_macro": "Precision (macro)",
        "f1_macro": "F1 (macro)",
        "recall_macro": "Recall (macro)",
        "auc_macro": "AUC (macro)",
    },
    "binary": {"accuracy": "Accuracy", "precision": "Precision", "f1": "F1", "recall": "Recall", "auc": "AUC"},
    "multilabel": {"auc_mean": "Mean AUC"},
    "segmentation": {"dice": "Dice", "iou": "IoU", "kaggle_dice": "Kaggle Dice"},
}
MODE_LABELS = {"full": "Full network", "probe": "Linear probe"}
VARIANT = ["init", "mode", "augment"]


def budget_order(runs: pd.DataFrame) -> list[str]:
    """Budget tags, fractions before counts, each ascending."""

    def key(tag: str) -> tuple[int, float]:
        return (0, float(tag[4:])) if tag.startswith("frac") else (1, float(tag[1:]))

    return sorted(runs["budget"].unique(), key=key)


def budget_label(tag: str) -> str:
    """'10% of the labels' for frac0.1, '1,000 labelled images' for n1000."""
    return f"{float(tag[4:]) * 100:g}% of the labels" if tag.startswith("frac") else f"{int(tag[1:]):,} labelled images"


def task_metrics(runs: pd.DataFrame) -> dict[str, str]:
    """Columns of the study table for the runs' task (multilabel adds one AUC column per finding; segmentation shows
    the Kaggle Dice only where test masks can be empty)."""
    tasks = runs["task"].unique()
    if len(tasks) != 1:
        raise ValueError(
            f"fine-tuning runs of different tasks {sorted(tasks)} cannot share one table; "
            "use one results folder per dataset task"
        )
    metrics = dict(TASK_METRICS[tasks[0]])
    if tasks[0] == "multilabel":
        findings = [c[len("test_auc_") :] for c in runs.columns if c.startswith("test_auc_") and c != "test_auc_mean"]
        metrics |= {f"auc_{f}": f"AUC {f}" for f in findings}
    if tasks[0] == "segmentation" and not has_negatives(runs):
        metrics.pop("kaggle_dice")
    return metrics


def study_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table: a row per budget, init, mode and preset; metric cells mean ± std over all seeds."""
    metrics = task_metrics(runs)
    labels = init_label(runs)
    rows = []
    for budget in budget_order(runs):
        at_budget = runs[runs["budget"] == budget]
        for (init, mode, augment), group in at_budget.groupby(VARIANT, sort=False):
            applied = group["augment_applied"].iloc[0] if "augment_applied" in group else augment
            cells = {
                "Budget": budget_label(budget),
                "Model": labels[group.index[0]],
                "Init": init,
                "Fine-tuning": MODE_LABELS.get(mode, mode),
                "Augmentation": augment if applied == augment else f"{augment} ({applied})",
            }
            cells |= {title: mean_std(group[f"test_{m}"]) for m, title in metrics.items() if f"test_{m}" in group}
            cells["Labelled images"] = int(group["n_labels"].iloc[0])
            cells["n"] = len(group)
            rows.append(cells)
    return pd.DataFrame(rows)


def study_significance(runs: pd.DataFrame, reference: str | None, n_samples: int, seed: int) -> pd.DataFrame:
    """Per budget, mode and preset: hierarchical bootstrap (runs and test images) of each init's accuracy
    (segmentation: Dice) against the reference init's, as in the significance table."""
    if not reference or reference not in set(runs["init"]) or runs["task"].iloc[0] == "multilabel":
        return pd.DataFrame()
    rows = []
    for (budget, mode, augment), group in runs.groupby(["budget", "mode", "augment"], sort=False):
        base = group[group["init"] == reference]
        for init, other in group[group["init"] != reference].groupby("init", sort=False):
            if base.empty:
                continue
            (correct_a, images_a), (correct_b, images_b) = init_scores(other), init_scores(base)
            if not images_a.equals(images_b):
                raise ValueError(f"{init} and {reference} were tested on other images; use one split")
            result = hierarchical_bootstrap(correct_a, correct_b, n_samples=n_samples, seed=seed)
            rows.append(
                {"budget": budget, "mode": mode, "augment": augment, "init_a": init, "init_b": reference, **result}
            )
    return pd.DataFrame(rows)


def study_markdown(table: pd.DataFrame, significance: pd.DataFrame, score: str = "accuracy") -> str:
    """One Markdown table per budget (the study's layout), then the significance of `score` (accuracy or Dice)
    against the reference."""
    parts = ["# Results by label budget\n", STD_NOTE.replace("label-subset seeds", "seeds") + "\n"]
    for budget, group in table.groupby("Budget", sort=False):
        parts.append(f"## {budget}\n\n" + markdown_table(group.drop(columns=["Budget"])))
    if not significance.empty:
        view = pd.DataFrame(
            {
                "Budget": significance["budget"].map(budget_label),
                "Mode": significance["mode"],
                "Augmentation": significance["augment"],
                "A": significance["init_a"],
                "B": significance["init_b"],
                f"{score[0].upper() + score[1:]} A − B (95% CI)": [
                    f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                    for d, lo, hi in zip(significance["difference"], significance["ci_low"], significance["ci_high"])
                ],
                "p": [
                    f"< {1 / n:.3f}" if p == 0 else f"{p:.3f}"
                    for p, n in zip(significance["p_value"], significance["n_bootstrap"])
                ],
                "Runs A, B": [f"{a}, {b}" for a, b in zip(significance["n_runs_a"], significance["n_runs_b"])],
            }
        )
        parts.append(
            "## Hierarchical bootstrap (runs and test images) against the reference init\n\n" + markdown_table(view)
        )
    return "\n".join(parts)


def write_study(metrics_paths: list[str | Path], out_dir: str | Path, settings: dict[str, Any]) -> Path:
    """study.csv (cells per budget and variant, and the significance rows) and study.md; returns the Markdown path.

    `settings` is the tables: section; `reference` names the init every other init is compared with.
    """
    runs = load_runs(metrics_paths)
    table = study_table(runs)
    significance = study_significance(
        runs, settings.get("reference"), int(settings.get("bootstrap_samples", 1000)), int(settings.get("seed", 0))
    )
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "study.csv", table.to_csv(index=False))
    write_text_atomic(out_dir / "study_significance.csv", significance.to_csv(index=False))
    write_text_atomic(out_dir / "study.md", study_markdown(table, significance, score_name(runs)))
    return out_dir / "study.md"
