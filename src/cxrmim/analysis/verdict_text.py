"""The verdict in words: a few generated sentences on what the run shows (honest when it is too small to tell),
and tables/verdict.md, one table per label budget."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrmim.analysis.markdown import count_text, markdown_table
from cxrmim.analysis.runs import fraction_label
from cxrmim.analysis.significance import interval_text, p_text
from cxrmim.analysis.verdict import BETTER, MAE, UNCLEAR, WORSE

TITLE = "# Verdict: does pretraining help at each label budget?"
METHOD_NOTE = (
    "Difference = {score} of the pretrained init − {score} of the reference, mean over all runs of each (pretraining "
    "seeds × label-subset seeds); 95% interval and two-sided p from the hierarchical bootstrap over runs and test "
    "images (tables/significance.md). better / worse: the interval excludes zero; cannot tell at this size: it "
    "includes zero, so more runs or test images are needed to tell."
)
DICE_NOTE = " Dice: per positive test image (one with a non-empty true mask), then averaged over them."


def joined(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def labels_text(intervals: pd.DataFrame) -> str:
    """'12' or '12–13' labelled images per run at one budget."""
    return count_text(intervals["n_labels"].round()) if not intervals.empty else "?"


def claim(row: pd.Series) -> str:
    """'RGMIM (ViT) (+0.084 [+0.025, +0.142])'."""
    return f"{row['label']} ({interval_text(row)})"


def budget_sentence(fraction: float, rows: pd.DataFrame, intervals: pd.DataFrame, score: str = "accuracy") -> str:
    """What one budget shows against the scratch baselines, with the score's range (accuracy or Dice) and, for
    classification, the majority-class rate."""
    at = intervals[np.isclose(intervals["fraction"], fraction)]
    where = f"At {fraction_label(fraction)} labels ({labels_text(at)} labelled images"
    if not at.empty:
        where += f"; test {score} {at['accuracy'].min():.2f}–{at['accuracy'].max():.2f}"
        if pd.notna(at["majority_share"].iloc[0]):  # segmentation has no most common class
            where += f", always guessing the most common class gives {at['majority_share'].iloc[0]:.2f}"
    where += ")"
    scratch = rows[rows["against"] == "scratch"]
    better, worse = scratch[scratch["verdict"] == BETTER], scratch[scratch["verdict"] == WORSE]
    unclear = scratch[scratch["verdict"] == UNCLEAR]
    if better.empty and worse.empty:
        return f"{where} no pretrained init can be told apart from its architecture's scratch baseline."
    parts = []
    if not better.empty:
        parts.append(
            f"{joined([claim(r) for _, r in better.iterrows()])} "
            f"{'beats' if len(better) == 1 else 'beat'} training from scratch"
        )
    if not worse.empty:
        parts.append(
            f"{joined([claim(r) for _, r in worse.iterrows()])} "
            f"{'falls' if len(worse) == 1 else 'fall'} below {'it' if parts else 'training from scratch'}"
        )
    if not unclear.empty:
        parts.append(f"the other {len(unclear)} cannot be told apart from it")
    return f"{where} {joined(parts)}."


def reference_sentence(rows: pd.DataFrame) -> str | None:
    """The masked-image-modelling inits against MAE over every budget: the decided ones, or that none is."""
    against = rows[rows["against"] == MAE]
    if against.empty:
        return None
    decided = against[against["verdict"] != UNCLEAR]
    if decided.empty:
        return (
            f"Against MAE, the comparison the papers make, no masked-image-modelling variant can be told apart "
            f"at any budget ({len(against)} comparisons)."
        )
    parts = [
        f"{row['label']} is {row['verdict']} at {fraction_label(row['fraction'])} ({interval_text(row)})"
        for _, row in decided.iterrows()
    ]
    rest = len(against) - len(decided)
    tail = f"; the other {rest} comparisons with MAE cannot tell" if rest else ""
    return f"Against MAE, the comparison the papers make: {joined(parts)}{tail}."


def images_text(score: str) -> str:
    """What the bootstrap's images are: 'test images', or 'positive test images' for Dice."""
    return "positive test images" if score == "Dice" else "test images"


def size_sentence(rows: pd.DataFrame, score: str = "accuracy") -> str:
    """How much data each claim rests on and the smallest difference it could resolve."""
    half_width = float(np.median((rows["ci_high"] - rows["ci_low"]) / 2))
    text = (
        f"Each claim rests on {count_text(rows['n_images'])} {images_text(score)} and {count_text(rows['n_runs'])} runs "
        f"per pretrained init ({count_text(rows['n_runs_reference'])} per reference); at this size differences "
        f"smaller than about ±{half_width:.2f} (the median half-width of the intervals) cannot be told apart, "
        "and more seeds (pretrain.seeds, label_fractions.seeds) or test images narrow them."
    )
    if (rows["n_runs"] == 1).any() or (rows["n_runs_reference"] == 1).any():
        text += (
            " With one run on a side only the test images are resampled: seed-to-seed variation is not in the interval."
        )
    return text


def verdict_sentences(verdict: pd.DataFrame, intervals: pd.DataFrame, score: str = "accuracy") -> list[str]:
    """One sentence per budget against scratch, one against MAE and one on the size of the evidence."""
    if verdict.empty:
        return [
            (
                "Nothing to judge: no pretrained init shares a label fraction with its architecture's scratch "
                "baseline or MAE (count budgets and presets are compared in the study table; multilabel runs have no "
                "accuracy)."
            )
        ]
    sentences = [budget_sentence(f, rows, intervals, score) for f, rows in verdict.groupby("fraction")]
    return [*sentences, *filter(None, [reference_sentence(verdict)]), size_sentence(verdict, score)]


def budget_table(rows: pd.DataFrame, score: str = "accuracy") -> pd.DataFrame:
    """Readable rows of one budget's verdicts (`score`: 'accuracy' or 'Dice')."""
    return pd.DataFrame(
        {
            "Pretrained init": rows["label"],
            "Against": rows["reference_label"],
            score[0].upper() + score[1:]: rows["accuracy"].map("{:.3f}".format),
            f"Reference {score}": rows["reference_accuracy"].map("{:.3f}".format),
            "Difference (95% CI)": [interval_text(row) for _, row in rows.iterrows()],
            "p": [p_text(p, n) for p, n in zip(rows["p_value"], rows["n_bootstrap"])],
            "Runs": [f"{int(a)} vs {int(b)}" for a, b in zip(rows["n_runs"], rows["n_runs_reference"])],
            "Verdict": rows["verdict"],
        }
    )


def verdict_markdown(verdict: pd.DataFrame, intervals: pd.DataFrame, score: str = "accuracy") -> str:
    """tables/verdict.md: the sentences, then per budget its table (headed with labelled and test images); `score`
    is what the runs are judged on: 'accuracy', or 'Dice' for segmentation."""
    text = TITLE + "\n\n" + "\n\n".join(verdict_sentences(verdict, intervals, score)) + "\n\n"
    for fraction, rows in verdict.groupby("fraction"):
        at = intervals[np.isclose(intervals["fraction"], fraction)]
        text += (
            f"## {fraction_label(fraction)} labels: {labels_text(at)} labelled images, "
            f"{count_text(rows['n_images'])} {images_text(score)}\n\n{markdown_table(budget_table(rows, score))}\n"
        )
    return text + METHOD_NOTE.format(score=score) + (DICE_NOTE if score == "Dice" else "") + "\n"
