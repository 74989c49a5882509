"""Train/validation/test splits (stratified by label, grouped by patient) and nested label-fraction subsets."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def grouped_stratified_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean holdout mask of about `fraction` of each label, never splitting a group.

    Groups are visited in a seeded random order and go to the holdout when that brings the per-label
    holdout counts closer to their targets; with one image per group this is exact stratification.
    """
    classes, label_ids = np.unique(labels, return_inverse=True)
    targets = fraction * np.bincount(label_ids, minlength=len(classes)).astype(float)
    group_names, group_ids = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_names), len(classes)))
    np.add.at(counts, (group_ids, label_ids), 1)
    held = np.zeros(len(classes))
    chosen = np.zeros(len(group_names), dtype=bool)
    for g in np.random.default_rng(seed).permutation(len(group_names)):
        if np.abs(held + counts[g] - targets).sum() < np.abs(held - targets).sum():
            chosen[g] = True
            held += counts[g]
    return chosen[group_ids]


def split_dataset(manifest: pd.DataFrame, test_fraction: float, val_fraction: float, seed: int) -> pd.DataFrame:
    """Assign each image to train, val or test; returns index,id,label,group,part."""
    labels, groups = manifest["label"].to_numpy(str), manifest["group"].to_numpy(str)
    test = grouped_stratified_holdout(labels, groups, test_fraction, seed)
    part = np.where(test, "test", "train").astype(object)
    if val_fraction > 0:
        rest = np.flatnonzero(~test)
        val = grouped_stratified_holdout(labels[rest], groups[rest], val_fraction, seed + 1)
        part[rest[val]] = "val"
    out = manifest[["index", "id", "label", "group"]].copy()
    out["part"] = part
    _check_split(out)
    return out


def _split_hint(split: pd.DataFrame, part: str, missing: list[str]) -> str:
    """The setting to change: test is held out first, then validation is taken from what remains."""
    if part == "test":
        return "raise split.test_fraction"
    in_val = set(split.loc[split["part"] == "val", "label"]) & set(missing)
    if in_val:
        return f"lower split.val_fraction (validation took every training image of {sorted(in_val)})"
    return "lower split.test_fraction"


def _check_split(split: pd.DataFrame) -> None:
    """Every class must be present in train and test, or models and metrics are meaningless."""
    for part in ("train", "test"):
        missing = sorted(set(split["label"]) - set(split.loc[split["part"] == part, "label"]))
        if missing:
            raise ValueError(
                f"no {part} image for label(s) {missing}: too few images or patients for these classes; "
                f"add data, merge labels with dataset.label_map, or {_split_hint(split, part, missing)}"
            )


def label_subset(split: pd.DataFrame, fraction: float, subset_seed: int, split_seed: int) -> pd.DataFrame:
    """Labelled training images for one (fraction, seed): per class, a prefix of one seeded permutation.

    Prefixes of the same permutation make subsets nested across fractions; at least one image per class.
    """
    train = split[split["part"] == "train"]
    rng = np.random.default_rng([split_seed, subset_seed])
    picked = []
    for label in sorted(train["label"].unique()):
        rows = train[train["label"] == label].sort_values("index")
        order = rng.permutation(len(rows))
        take = max(1, math.ceil(round(fraction * len(rows), 6)))
        picked.append(rows.iloc[order[:take]])
    return pd.concat(picked)[["index", "id", "label"]].sort_values("index").reset_index(drop=True)


def fraction_tag(fraction: float) -> str:
    """Canonical text of a fraction in file names (0.01 -> '0.01', 1.0 -> '1')."""
    return f"{float(fraction):g}"
