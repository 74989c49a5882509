"""The answer first: per label budget, every pretrained init against its own architecture's scratch baseline and
every other masked-image-modelling init against MAE (the comparisons the papers make), in plain words from the
hierarchical bootstrap of the significance table, with each init's accuracy (segmentation: Dice) and its 95%
interval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrmim.analysis.runs import init_label, load_predictions, score_name, task_of
from cxrmim.analysis.significance import (
    SCRATCH,
    init_scores,
)
from cxrmim.evaluation import hierarchical_bootstrap

BETTER, WORSE, UNCLEAR = "better", "worse", "cannot tell at this size"
MAE = "MAE"  # the reference of RGMIM's, MRM's and MedIM's papers
VERDICT_COLUMNS = [
    "fraction",
    "init",
    "label",
    "reference",
    "reference_label",
    "against",
    "accuracy",
    "reference_accuracy",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "n_images",
    "n_runs",
    "n_runs_reference",
    "n_bootstrap",
    "verdict",
]
INTERVAL_COLUMNS = [
    "fraction",
    "init",
    "label",
    "method",
    "architecture",
    "pretrained",
    "n_labels",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_runs",
    "n_images",
    "majority_share",
    "n_bootstrap",
    "score",  # what `accuracy` holds: 'accuracy', or 'Dice' for segmentation (the headline figure's axis)
]


def verdict_word(ci_low: float, ci_high: float) -> str:
    """'better' / 'worse' when the 95% interval excludes zero, else 'cannot tell at this size'."""
    return BETTER if ci_low > 0 else WORSE if ci_high < 0 else UNCLEAR


def verdict_pairs(at_fraction: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(init, reference init, what the reference is) at one fraction: each pretrained init (ours or ImageNet's)
    against scratch of its architecture, each other init with a masking ratio (masked image modelling) against MAE
    of its architecture."""
    inits = at_fraction.drop_duplicates("init")
    pairs = []
    for _, init in inits[inits["method"] != SCRATCH].iterrows():
        same_arch = inits[inits["architecture"] == init["architecture"]]
        pairs += [(init["init"], ref, "scratch") for ref in same_arch.loc[same_arch["method"] == SCRATCH, "init"]]
        if pd.notna(init["mask_ratio"]) and init["method"] != MAE:
            pairs += [(init["init"], ref, MAE) for ref in same_arch.loc[same_arch["method"] == MAE, "init"]]
    return pairs


def oriented(rows: pd.DataFrame, init: str, reference: str) -> dict | None:
    """The significance row of init vs reference, flipped to init − reference where it was stored the other way."""
    forward = rows[(rows["init_a"] == init) & (rows["init_b"] == reference)]
    if not forward.empty:
        row = forward.iloc[0]
        return {
            "accuracy": row["accuracy_a"],
            "reference_accuracy": row["accuracy_b"],
            "difference": row["difference"],
            "ci_low": row["ci_low"],
            "ci_high": row["ci_high"],
            "n_runs": row["n_runs_a"],
            "n_runs_reference": row["n_runs_b"],
            **shared(row),
        }
    backward = rows[(rows["init_a"] == reference) & (rows["init_b"] == init)]
    if backward.empty:
        return None
    row = backward.iloc[0]
    # 0.0 - x rather than -x: a zero difference stays +0.000, not -0.000.
    return {
        "accuracy": row["accuracy_b"],
        "reference_accuracy": row["accuracy_a"],
        "difference": 0.0 - row["difference"],
        "ci_low": 0.0 - row["ci_high"],
        "ci_high": 0.0 - row["ci_low"],
        "n_runs": row["n_runs_b"],
        "n_runs_reference": row["n_runs_a"],
        **shared(row),
    }


def shared(row: pd.Series) -> dict:
    """The columns that do not depend on the direction of a comparison."""
    return {key: row[key] for key in ("p_value", "n_images", "n_bootstrap")}


def verdict_table(runs: pd.DataFrame, significance: pd.DataFrame) -> pd.DataFrame:
    """One row per budget and verdict pair, in the runs' (paper) order; pairs the bootstrap did not compare are left
    out (a significance table that lacks a pair is older than this code, or the task has no accuracy)."""
    runs = runs.dropna(subset=["fraction"])  # count budgets (n<count>) are judged in the study table
    if runs.empty or significance.empty:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    labels = dict(zip(runs["init"], init_label(runs)))
    rows = []
    for fraction, at_fraction in runs.groupby("fraction"):
        compared = significance[np.isclose(significance["fraction"], fraction)]
        for init, reference, against in verdict_pairs(at_fraction):
            found = oriented(compared, init, reference)
            if found is not None:
                rows.append(
                    {
                        "fraction": fraction,
                        "init": init,
                        "label": labels[init],
                        "reference": reference,
                        "reference_label": labels[reference],
                        "against": against,
                        **found,
                        "verdict": verdict_word(found["ci_low"], found["ci_high"]),
                    }
                )
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def majority_share(run_dir: str, task: str = "multiclass") -> float:
    """Share of the test images in their most common class: the accuracy of always guessing it (NaN for
    segmentation, whose Dice has no such baseline)."""
    if task == "segmentation":
        return float("nan")
    predictions = load_predictions(run_dir)
    truth = predictions["target"] if "target" in predictions else predictions["label"]
    return float(truth.astype(str).value_counts(normalize=True).iloc[0])


def accuracy_intervals(runs: pd.DataFrame, n_samples: int, seed: int) -> pd.DataFrame:
    """Per budget and init: mean test accuracy (segmentation: Dice of the positive images) over its runs and the 95%
    interval of the same hierarchical bootstrap (runs and test images resampled): the bootstrap of its difference to
    an init that scores 0 on every image; the `accuracy` column holds the task's score."""
    labels = init_label(runs)
    rows = []
    for (fraction, init), group in runs.groupby(["fraction", "init"], sort=False):
        correct, _ = init_scores(group)
        boot = hierarchical_bootstrap(correct, np.zeros((1, correct.shape[1])), n_samples=n_samples, seed=seed)
        rows.append(
            {
                "fraction": fraction,
                "init": init,
                "label": labels[group.index[0]],
                "method": group["method"].iloc[0],
                "architecture": group["architecture"].iloc[0],
                "pretrained": bool(group["pretrain_seed"].notna().any()),
                "n_labels": group["n_labels"].mean(),
                "accuracy": boot["accuracy_a"],
                "ci_low": boot["ci_low"],
                "ci_high": boot["ci_high"],
                "n_runs": len(group),
                "n_images": boot["n_images"],
                "majority_share": majority_share(group["run_dir"].iloc[0], task_of(group)),
                "n_bootstrap": n_samples,
                "score": score_name(group),
            }
        )
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS)
