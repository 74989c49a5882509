"""Train/validation/test splits (stratified by label, grouped by patient) and nested label-budget subsets.

Multilabel labels ('A|B') are stratified on every finding by iterative stratification (cxrmim.data.stratify);
single-class labels are stratified on the class itself.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pandas as pd

from cxrmim.data.stratify import is_multilabel, iterative_holdout, label_sets, stratified_order
from cxrmim.data.tasks import findings_of

log = logging.getLogger(__name__)


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


def split_dataset(
    manifest: pd.DataFrame,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    use_official: bool = False,
    val_count: int | None = None,
) -> pd.DataFrame:
    """Assign each image to train, val or test; returns index,id,label,group,part.

    With `use_official` and a manifest `official` column (public dataset kinds), test is the official test list;
    otherwise test is drawn by test_fraction. Validation is carved from the rest: `val_count` images when given
    (MRM's 5,000 CheXpert training images), else val_fraction of them.
    """
    labels, groups = manifest["label"].to_numpy(str), manifest["group"].to_numpy(str)
    official = manifest["official"].to_numpy(str) if "official" in manifest.columns else np.array([""] * len(labels))
    if use_official and (official == "test").any():
        test = official == "test"
        _check_official(groups, test)
    else:
        if use_official:
            log.warning(
                "split.use_official is true but the dataset has no official test list; "
                "drawing test by split.test_fraction"
            )
        test = _holdout(labels, groups, test_fraction, seed)
    part = np.where(test, "test", "train").astype(object)
    rest = np.flatnonzero(~test)
    if val_count is not None:
        part[rest[_count_holdout(labels[rest], groups[rest], int(val_count), seed + 1)]] = "val"
    elif val_fraction > 0:
        val = _holdout(labels[rest], groups[rest], val_fraction, seed + 1)
        part[rest[val]] = "val"
    out = manifest[["index", "id", "label", "group"]].copy()
    out["part"] = part
    _check_split(out)
    return out


def _holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Holdout mask stratified by finding (multilabel labels) or by class."""
    if is_multilabel(labels):
        return iterative_holdout(label_sets(labels)[1], groups, fraction, seed)
    return grouped_stratified_holdout(labels, groups, fraction, seed)


def _count_holdout(labels: np.ndarray, groups: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Holdout mask of `count` images, stratified as _holdout and never splitting a group (patient)."""
    if count >= len(labels):
        raise ValueError(
            f"split.val_count is {count}, but the training part (all but the test part) has only {len(labels)} "
            f"images; lower split.val_count below {len(labels)}, or set it to null to use split.val_fraction"
        )
    return _exact_count(_holdout(labels, groups, count / len(labels), seed), groups, count, seed)


def _exact_count(held: np.ndarray, groups: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The holdout with whole groups moved in or out until it has `count` images.

    Stratification by fraction lands within a few images of the target; each pass moves groups of at most the
    remaining difference (in a seeded order) and, when none fits, the smallest one across, so the next pass
    closes the gap from the other side. Group sizes that admit no exact sum leave a warning and the nearest count.
    """
    _, group_ids = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_ids)
    inside = np.zeros(len(sizes), dtype=bool)
    inside[group_ids[held]] = True
    rng = np.random.default_rng([seed, count])
    for _ in range(8):
        excess = int(sizes[inside].sum()) - count
        if excess == 0:
            break
        pool = np.flatnonzero(inside if excess > 0 else ~inside)  # groups to take out, or to bring in
        need = abs(excess)
        for g in rng.permutation(pool):
            if sizes[g] <= need:
                inside[g] = not inside[g]
                need -= int(sizes[g])
                if need == 0:
                    break
        if need:
            left = pool[inside[pool] == (excess > 0)]
            if len(left):
                smallest = left[np.argmin(sizes[left])]
                inside[smallest] = not inside[smallest]
    held_count = int(sizes[inside].sum())
    if held_count != count:
        log.warning(
            "split.val_count %d: the patients' image counts allow no exact validation part; it has %d images",
            count,
            held_count,
        )
    return inside[group_ids]


def _check_official(groups: np.ndarray, test: np.ndarray) -> None:
    """The official test list must not share a patient (or duplicate group) with the rest."""
    shared = set(groups[test]) & set(groups[~test])
    if shared:
        raise ValueError(
            f"{len(shared)} patient group(s) have images in the official test list and outside it "
            "(duplicates grouped across parts?); set split.use_official: false or "
            "prepare.duplicates.action: drop"
        )


def _names(labels: pd.Series) -> set[str]:
    """Classes, or findings of multilabel labels, named by some label."""
    return {name for label in set(labels) for name in (findings_of(label) or [label])}


def _split_hint(split: pd.DataFrame, part: str, missing: list[str]) -> str:
    """The setting to change: test is held out first, then validation is taken from what remains."""
    if part == "test":
        return "raise split.test_fraction"
    in_val = _names(split.loc[split["part"] == "val", "label"]) & set(missing)
    if in_val:
        return f"lower split.val_fraction or split.val_count (validation took every training image of {sorted(in_val)})"
    return "lower split.test_fraction"


def _check_split(split: pd.DataFrame) -> None:
    """Every class (or finding) must be present in train and test, or models and metrics are meaningless."""
    for part in ("train", "test"):
        missing = sorted(_names(split["label"]) - _names(split.loc[split["part"] == part, "label"]))
        if missing:
            raise ValueError(
                f"no {part} image for label(s) {missing}: too few images or patients for these classes; "
                f"add data, merge labels with dataset.label_map, or {_split_hint(split, part, missing)}"
            )


def label_subset(split: pd.DataFrame, budget: str | float, subset_seed: int, split_seed: int) -> pd.DataFrame:
    """Labelled training images for one (budget, seed): a tag `frac<f>` / `n<count>` (parse_budget) or a fraction."""
    kind, value = parse_budget(budget) if isinstance(budget, str) else ("fraction", float(budget))
    train = split[split["part"] == "train"].sort_values("index")
    rng = np.random.default_rng([split_seed, subset_seed])
    if is_multilabel(train["label"]):
        picked = _multilabel_subset(train, kind, value, rng)
    elif kind == "fraction":
        picked = _fraction_subset(train, value, rng)
    else:
        picked = _count_subset(train, int(value), rng)
    return picked[["index", "id", "label"]].sort_values("index").reset_index(drop=True)


def _multilabel_subset(train: pd.DataFrame, kind: str, value: float, rng: np.random.Generator) -> pd.DataFrame:
    """A prefix of one seeded stratified order: nested across budgets, every finding present once it can be.

    A fraction takes at least the prefix that first shows every finding (as single-class fractions take at least
    one image per class); a count takes exactly that many images.
    """
    _check_count(kind, value, len(train))
    member = label_sets(train["label"].to_numpy(str))[1]
    order = stratified_order(member, rng)
    if kind == "count":
        return train.iloc[order[: int(value)]]
    covering = int(np.max(np.argmax(member[order] > 0, axis=0))) + 1
    return train.iloc[order[: max(covering, math.ceil(round(value * len(train), 6)))]]


def _fraction_subset(train: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Per class, a prefix of one seeded permutation: nested across fractions, at least one image per class."""
    keys = train["label"].to_numpy(str)
    picked = []
    for key in sorted(set(keys)):
        rows = train[keys == key]
        order = rng.permutation(len(rows))
        take = max(1, math.ceil(round(fraction * len(rows), 6)))
        picked.append(rows.iloc[order[:take]])
    return pd.concat(picked)


def _count_subset(train: pd.DataFrame, count: int, rng: np.random.Generator) -> pd.DataFrame:
    """Exactly `count` images: a prefix of one seeded order that interleaves the classes in proportion.

    Each image's place is its rank within its class over the class size (a seeded permutation), and each
    class's first image comes before all others, so every class is present once `count` allows and subsets of
    one seed are nested across counts.
    """
    _check_count("count", count, len(train))
    keys = train["label"].to_numpy(str)
    position = np.zeros(len(train))
    for key in sorted(set(keys)):
        members = np.flatnonzero(keys == key)
        rank = np.empty(len(members))
        rank[rng.permutation(len(members))] = np.arange(len(members))
        position[members] = np.where(rank == 0, -1.0, (rank + 0.5) / len(members))
    tie_break = rng.random(len(train))
    order = np.lexsort((tie_break, position))
    return train.iloc[order[:count]]


def _check_count(kind: str, value: float, n_train: int) -> None:
    """A count budget cannot exceed the training part."""
    if kind == "count" and value > n_train:
        raise ValueError(
            f"label_fractions.counts has {int(value)}, but the training part has only {n_train} "
            f"images; lower the count (at most {n_train}) or add data"
        )


def budget_tag(fraction: float | None = None, count: int | None = None) -> str:
    """The name of a label budget in file names: 'frac0.01' for a fraction, 'n1000' for a count of images."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    return f"frac{fraction_tag(fraction)}" if fraction is not None else f"n{int(count)}"


def configured_budgets(label_fractions: dict) -> list[str]:
    """Tags of every budget a `label_fractions` section runs: its fractions, then its counts."""
    return [budget_tag(fraction=f) for f in label_fractions.get("fractions") or []] + [
        budget_tag(count=n) for n in label_fractions.get("counts") or []
    ]


def parse_budget(tag: str) -> tuple[str, float]:
    """('fraction', f) for 'frac<f>', ('count', n) for 'n<count>'; ValueError for anything else."""
    match = re.fullmatch(r"frac([0-9]*\.?[0-9]+)|n([0-9]+)", str(tag))
    if match is None:
        raise ValueError(f"label budget {tag!r}: expected frac<fraction> (e.g. frac0.01) or n<count> (e.g. n1000)")
    if match.group(1) is not None:
        fraction = float(match.group(1))
        if not 0 < fraction <= 1:
            raise ValueError(f"label budget {tag!r}: the fraction must be in (0, 1]")
        return "fraction", fraction
    count = int(match.group(2))
    if count < 1:
        raise ValueError(f"label budget {tag!r}: the count must be at least 1")
    return "count", float(count)


def fraction_tag(fraction: float) -> str:
    """Canonical text of a fraction in file names (0.01 -> '0.01', 1.0 -> '1')."""
    return f"{float(fraction):g}"
