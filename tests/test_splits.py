"""Splits: stratified, grouped by patient, nested label fractions, reproducible."""

import numpy as np
import pandas as pd
import pytest

from cxrmim.data.splits import fraction_tag, grouped_stratified_holdout, label_subset, split_dataset


def make_manifest(n_per_class=(50, 30, 20), images_per_patient=1) -> pd.DataFrame:
    """A manifest with the given class sizes; consecutive images share a patient."""
    labels = np.concatenate([[f"c{k}"] * n for k, n in enumerate(n_per_class)])
    n = len(labels)
    groups = [f"p{i // images_per_patient}-{labels[i]}" for i in range(n)]
    return pd.DataFrame({"index": np.arange(n), "id": [f"img{i}" for i in range(n)], "label": labels, "group": groups})


def test_split_is_stratified_and_reproducible():
    manifest = make_manifest()
    first = split_dataset(manifest, 0.2, 0.1, seed=3)
    assert first.equals(split_dataset(manifest, 0.2, 0.1, seed=3))
    assert not first.equals(split_dataset(manifest, 0.2, 0.1, seed=4))
    test_counts = first[first["part"] == "test"].groupby("label").size()
    assert test_counts.to_dict() == {"c0": 10, "c1": 6, "c2": 4}
    val_counts = first[first["part"] == "val"].groupby("label").size()
    assert val_counts.to_dict() == {"c0": 4, "c1": 2, "c2": 2}


def test_split_never_puts_a_patient_on_both_sides():
    manifest = make_manifest((60, 40, 40), images_per_patient=3)
    split = split_dataset(manifest, 0.2, 0.1, seed=0)
    parts_per_group = split.groupby("group")["part"].nunique()
    assert (parts_per_group == 1).all()
    share = (split["part"] == "test").mean()
    assert 0.15 < share < 0.25


def test_holdout_targets_each_class():
    labels = np.array(["a"] * 100 + ["b"] * 10)
    held = grouped_stratified_holdout(labels, np.arange(110).astype(str), 0.3, seed=1)
    assert held[:100].sum() == 30 and held[100:].sum() == 3


def test_split_errors_when_a_class_cannot_reach_test():
    manifest = make_manifest((40, 1))
    with pytest.raises(ValueError, match="c1"):
        split_dataset(manifest, 0.2, 0.0, seed=0)


def test_label_subsets_nested_stratified_at_least_one_per_class():
    split = split_dataset(make_manifest((200, 60, 15)), 0.2, 0.1, seed=0)
    train = split[split["part"] == "train"]
    previous: set = set()
    for fraction in (0.01, 0.05, 0.1, 0.5, 1.0):
        subset = label_subset(split, fraction, subset_seed=0, split_seed=0)
        ids = set(subset["id"])
        assert previous <= ids, "subsets must be nested"
        previous = ids
        assert set(subset["id"]) <= set(train["id"])
        counts = subset.groupby("label").size()
        assert (counts >= 1).all() and len(counts) == 3
    assert previous == set(train["id"])
    one = label_subset(split, 0.05, subset_seed=0, split_seed=0)
    assert one.equals(label_subset(split, 0.05, subset_seed=0, split_seed=0))
    assert set(one["id"]) != set(label_subset(split, 0.05, subset_seed=1, split_seed=0)["id"])


def test_fraction_tag():
    assert fraction_tag(0.01) == "0.01" and fraction_tag(1.0) == "1" and fraction_tag(0.5) == "0.5"


def test_val_count_takes_exactly_that_many_patient_grouped_and_reproducibly():
    manifest = make_manifest((90, 60, 30), images_per_patient=3)
    manifest.loc[::7, "group"] = [f"single{i}" for i in range(len(manifest.loc[::7]))]  # some 1-image patients
    split = split_dataset(manifest, 0.2, 0.5, seed=0, val_count=23)  # val_fraction is not used
    assert (split["part"] == "val").sum() == 23
    assert (split.groupby("group")["part"].nunique() == 1).all()
    assert split.equals(split_dataset(manifest, 0.2, 0.5, seed=0, val_count=23))
    val = split[split["part"] == "val"].groupby("label").size()
    assert set(val.index) == {"c0", "c1", "c2"} and val["c0"] > val["c2"]  # stratified, roughly 3:2:1
    same = split_dataset(manifest, 0.2, 0.5, seed=0, val_count=None)  # null: val_fraction
    assert abs((same["part"] == "val").sum() - 0.5 * (same["part"] != "test").sum()) <= 6


def test_val_count_not_below_the_training_part_is_an_error():
    manifest = make_manifest((40, 40))
    with pytest.raises(ValueError, match=r"split.val_count is 64, but the training part .* only 64 images"):
        split_dataset(manifest, 0.2, 0.1, seed=0, val_count=64)
