"""Which accuracy (segmentation: Dice) differences hold up: a hierarchical bootstrap over runs and test images per
label fraction."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrmim.analysis.runs import fraction_label, image_scores, method_rank, task_of
from cxrmim.evaluation import hierarchical_bootstrap

SCRATCH = "From Scratch"


def method_text(runs: pd.DataFrame) -> str:
    """'RGMIM (ViT)' for the runs of one init."""
    return f"{runs['method'].iloc[0]} ({runs['architecture'].iloc[0]})"


def comparisons(at_fraction: pd.DataFrame) -> list[tuple[str, str]]:
    """(init A, init B) pairs: each pretrained init against every later pretrained init of its architecture
    (METHOD_ORDER) and against training that architecture from scratch; the first pretrained init (RGMIM in the
    paper's order) also against the pretrained inits of other architectures (e.g. SimSiam / BYOL on ResNets); inits
    pretrained elsewhere (ImageNet) against scratch of their architecture."""
    inits = at_fraction.drop_duplicates("init")
    inits = inits.assign(_m=method_rank(inits))
    inits = inits.sort_values(["_m", "method", "init"])
    pretrained = inits[inits["pretrain_seed"].notna()]
    pairs = []
    for position, (_, a) in enumerate(pretrained.iterrows()):
        same_arch = inits["architecture"] == a["architecture"]
        later = pretrained.iloc[position + 1 :]
        partners = [
            *later[later["architecture"] == a["architecture"]]["init"],
            *inits[same_arch & (inits["method"] == SCRATCH)]["init"],
        ]
        if position == 0:
            partners += list(pretrained[pretrained["architecture"] != a["architecture"]]["init"])
        pairs += [(a["init"], b) for b in partners]
    # Inits pretrained elsewhere (ImageNet transfer, published encoders: no pretraining seed of ours) against scratch.
    elsewhere = inits[inits["pretrain_seed"].isna() & (inits["method"] != SCRATCH)]
    for _, a in elsewhere.iterrows():
        scratch = inits[(inits["architecture"] == a["architecture"]) & (inits["method"] == SCRATCH)]
        pairs += [(a["init"], b) for b in scratch["init"]]
    return pairs


def init_scores(runs: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """(n_runs, n_images) per-image test scores of one init's runs (0/1 correctness; segmentation: Dice of the
    positive images) and the test images' cache indices."""
    task = task_of(runs)
    columns = [image_scores(run_dir, task) for run_dir in runs["run_dir"]]
    images = columns[0].index
    for run_dir, column in zip(runs["run_dir"], columns):
        if not column.index.equals(images):
            raise ValueError(f"{run_dir}: tested on other images than {runs['run_dir'].iloc[0]}; use one split")
    return np.stack([c.to_numpy() for c in columns]), images


# Columns of significance.csv, written even when nothing is compared (count budgets only, multilabel), so that
# readers get a table with no rows rather than a file without a header.
SIGNIFICANCE_COLUMNS = [
    "fraction",
    "comparison",
    "init_a",
    "init_b",
    "accuracy_a",
    "accuracy_b",
    "difference",
    "ci_low",
    "ci_high",
    "p_value",
    "n_images",
    "n_runs_a",
    "n_runs_b",
    "n_bootstrap",
]


def significance_table(runs: pd.DataFrame, n_samples: int, seed: int) -> pd.DataFrame:
    """Per fraction and comparison, the hierarchical bootstrap of the accuracy (segmentation: Dice) difference A - B;
    the accuracy_* columns hold the task's score."""
    rows = []
    if (runs["task"] == "multilabel").any():  # multilabel runs decide no class per image: no accuracy to compare
        return pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)
    for fraction, at_fraction in runs.groupby("fraction"):
        for init_a, init_b in comparisons(at_fraction):
            runs_a, runs_b = at_fraction[at_fraction["init"] == init_a], at_fraction[at_fraction["init"] == init_b]
            correct_a, images_a = init_scores(runs_a)
            correct_b, images_b = init_scores(runs_b)
            if not images_a.equals(images_b):
                raise ValueError(
                    f"{init_a} and {init_b} at {fraction_label(fraction)} were tested on other images; use one split"
                )
            rows.append(
                {
                    "fraction": fraction,
                    "comparison": f"{method_text(runs_a)} vs {method_text(runs_b)}",
                    "init_a": init_a,
                    "init_b": init_b,
                    **hierarchical_bootstrap(correct_a, correct_b, n_samples=n_samples, seed=seed),
                }
            )
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)


def significance_heading(n_samples: int, score: str = "accuracy") -> str:
    """What the significance table's numbers are, stated above it (`score`: 'accuracy' or 'Dice')."""
    what = "accuracy" if score == "accuracy" else f"{score} (per positive test image, then averaged)"
    return (
        "# Significance: hierarchical bootstrap over runs and test images\n\n"
        f"Difference A − B of the mean test {what} over all runs of each init (pretraining seeds × label-subset "
        f"seeds). Each of {n_samples} bootstrap replicates resamples the runs of A and of B with replacement and "
        "the test images (one draw shared by A and B, so the images stay paired); 95% percentile interval; "
        "two-sided p = twice the share of replicates on the far side of zero. With one run per init only the "
        "test images are resampled: seed-to-seed variation is then not in the interval.\n\n"
    )


def significance_markdown(table: pd.DataFrame, score: str = "accuracy") -> pd.DataFrame:
    """Readable view of the significance table (`score` names its columns: 'accuracy' or 'Dice')."""
    title = score[0].upper() + score[1:]
    if table.empty:
        return pd.DataFrame({"Note": ["no pair of runs to compare"]})
    return pd.DataFrame(
        {
            "Label fraction": table["fraction"].map(fraction_label),
            "Comparison": table["comparison"],
            f"{title} A": table["accuracy_a"].map("{:.3f}".format),
            f"{title} B": table["accuracy_b"].map("{:.3f}".format),
            "Difference (95% CI)": [interval_text(row) for _, row in table.iterrows()],
            "p": [p_text(p, n) for p, n in zip(table["p_value"], table["n_bootstrap"])],
            "Runs A": table["n_runs_a"],
            "Runs B": table["n_runs_b"],
            "Test images": table["n_images"],
        }
    )


def interval_text(row: pd.Series) -> str:
    """'+0.097 [+0.025, +0.163]'."""
    return f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def p_text(p_value: float, n_bootstrap: int) -> str:
    """The p-value, or its bound when no replicate crossed zero."""
    return f"< {1 / n_bootstrap:.3f}" if p_value == 0 else f"{p_value:.3f}"
