"""Iterative stratification of multilabel data: grouped holdouts and nested stratified orders."""

import numpy as np
import pandas as pd
import pytest

from cxrmim.data.splits import label_subset, split_dataset
from cxrmim.data.stratify import is_multilabel, iterative_holdout, label_sets, stratified_order
from cxrmim.data.tasks import join_findings

FINDINGS = ["Atelectasis", "Effusion", "Nodule", "Hernia"]


def correlated_labels(n: int = 600, seed: int = 0) -> list[str]:
    """Finding sets where a rare finding (Hernia) mostly comes with a common one (Effusion)."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(FINDINGS))) < np.array([0.35, 0.25, 0.1, 0.03])
    present[present[:, 3], 1] |= rng.random(int(present[:, 3].sum())) < 0.8
    return [join_findings([f for f, on in zip(FINDINGS, row) if on], FINDINGS) for row in present]


def test_label_sets_count_no_finding_as_a_label():
    names, member = label_sets(["A|B", "No Finding", "B"])
    assert names == ["A", "B", "No Finding"]
    assert member.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    assert is_multilabel(["A|B", "C"]) and not is_multilabel(["A", "No Finding"])


@pytest.mark.parametrize("images_per_patient", [1, 3])
def test_holdout_keeps_every_labels_share_and_groups(images_per_patient: int):
    labels = correlated_labels()
    groups = np.array([f"p{i // images_per_patient}" for i in range(len(labels))])
    _, member = label_sets(labels)
    held = iterative_holdout(member, groups, 0.2, seed=0)
    for g in np.unique(groups):
        assert len(set(held[groups == g])) == 1
    target = 0.2 * member.sum(0)
    assert np.all(np.abs(member[held].sum(0) - target) <= images_per_patient), (member[held].sum(0), target)
    assert abs(held.sum() - 0.2 * len(labels)) <= 0.02 * len(labels)  # multi-finding images make sizes inexact
    assert not np.array_equal(held, iterative_holdout(member, groups, 0.2, seed=1))


def test_every_prefix_of_the_order_keeps_each_labels_share():
    _, member = label_sets(correlated_labels())
    order = stratified_order(member, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(len(member)))
    cumulative = np.cumsum(member[order], axis=0)
    covering = int(np.max(np.argmax(cumulative > 0, axis=0))) + 1
    assert covering <= member.shape[1]  # the first images show every label
    prefix = np.arange(1, len(order) + 1)[:, None]
    expected = prefix * member.sum(0) / len(order)
    assert np.abs(cumulative - expected)[covering:].max() < 2
    assert not np.array_equal(order, stratified_order(member, np.random.default_rng(1)))


def multilabel_split(n: int = 600) -> pd.DataFrame:
    """A split of correlated finding sets, two images per patient."""
    labels = correlated_labels(n)
    manifest = pd.DataFrame(
        {
            "index": np.arange(n),
            "id": [f"img{i}" for i in range(n)],
            "label": labels,
            "group": [f"p{i // 2}" for i in range(n)],
        }
    )
    return split_dataset(manifest, 0.2, 0.1, seed=0)


@pytest.mark.parametrize("budgets", [("n12", "n60", "n200"), ("frac0.01", "frac0.1", "frac0.5")])
def test_multilabel_budgets_are_nested_and_keep_each_findings_share(budgets: tuple[str, ...]):
    split = multilabel_split()
    train = split[split["part"] == "train"]
    _, member_train = label_sets(train["label"].tolist())
    share = member_train.sum(0) / len(train)
    previous: set[str] = set()
    for budget in budgets:
        subset = label_subset(split, budget, subset_seed=0, split_seed=0)
        assert previous <= set(subset["id"])
        previous = set(subset["id"])
        counts = member_train[train["id"].isin(subset["id"]).to_numpy()].sum(0)
        assert counts.min() >= 1, f"{budget}: a finding is missing"
        if len(subset) >= 60:
            assert np.abs(counts - share * len(subset)).max() < 2, (budget, counts, share * len(subset))
    assert len(label_subset(split, "n60", 0, 0)) == 60
