"""Iterative stratification of multilabel data (Sechidis et al. 2011): a grouped holdout and a nested order.

Each image counts for every finding it has, and an image without findings counts for 'No Finding' as a label of
its own, so the share of each finding (and of normal images) is kept in every part and every label budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrmim.data.tasks import SEPARATOR, findings_of

__all__ = ["is_multilabel", "iterative_holdout", "label_sets", "stratified_order"]


def is_multilabel(labels: Sequence[str]) -> bool:
    """True when some label names several findings ('A|B'); single-class data is stratified by class instead."""
    return any(SEPARATOR in str(label) for label in labels)


def label_sets(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Label names and the (N, L) 0/1 membership matrix: the findings of 'A|B', else the label itself."""
    sets = [findings_of(label) or [str(label)] for label in labels]
    names = sorted({name for names in sets for name in names})
    column = {name: j for j, name in enumerate(names)}
    member = np.zeros((len(sets), len(names)), dtype=np.int64)
    for i, names_i in enumerate(sets):
        member[i, [column[name] for name in names_i]] = 1
    return names, member


def iterative_holdout(member: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean holdout mask of about `fraction` of every label's images, never splitting a group (patient).

    Sechidis et al.'s order: the label with the fewest unplaced images goes first, its groups in a seeded random
    order. Each group joins the part (holdout or rest) where it most reduces the shortfall summed over all its
    labels, each relative to the label's size, plus the part's shortfall of images; ties go to the part wanting
    most of the current label, then to a coin. With patients of several images this keeps every label within a
    few images of its target, where the original rule (the current label's desire alone) can miss common labels.
    """
    group_names, group_ids = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_names), member.shape[1]))
    np.add.at(counts, group_ids, member)
    sizes = np.bincount(group_ids, minlength=len(group_names)).astype(float)
    share = np.array([fraction, 1.0 - fraction])
    wanted = share[:, None] * counts.sum(0)[None, :]
    wanted_size = share * sizes.sum()
    unplaced, weight = counts.sum(0), 1.0 / np.maximum(counts.sum(0), 1)
    part = np.full(len(group_names), -1)
    rng = np.random.default_rng(seed)
    while (part < 0).any():
        label = int(np.argmin(np.where(unplaced > 0, unplaced, np.inf)))
        for g in rng.permutation(np.flatnonzero((part < 0) & (counts[:, label] > 0))):
            cost = ((np.abs(wanted - counts[g]) - np.abs(wanted)) * weight).sum(1)
            cost += (np.abs(wanted_size - sizes[g]) - np.abs(wanted_size)) / sizes.sum()
            part[g] = np.lexsort((rng.random(2), -wanted[:, label], cost))[0]
            wanted[part[g]] -= counts[g]
            wanted_size[part[g]] -= sizes[g]
            unplaced -= counts[g]
    return (part == 0)[group_ids]


def stratified_order(member: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of the images in which every prefix holds each label in about its overall share.

    First one image of each label, rarest label first, so that short prefixes already show every label; then,
    step by step, an image of the label set (images with equal label sets are interchangeable, taken in a seeded
    order) that brings the prefix's label counts closest, in L1, to their shares of the prefix. Prefixes of one
    order are nested label budgets.
    """
    n = len(member)
    totals = member.sum(0).astype(float)
    patterns, pattern_of = np.unique(member, axis=0, return_inverse=True)
    queues = [rng.permutation(np.flatnonzero(pattern_of.ravel() == p)) for p in range(len(patterns))]
    taken = np.zeros(len(patterns), dtype=int)
    left = np.array([len(queue) for queue in queues])
    have = np.zeros(member.shape[1])
    order: list[int] = []

    def take(p: int) -> None:
        """Place the next image of label set `p`."""
        order.append(int(queues[p][taken[p]]))
        taken[p] += 1
        left[p] -= 1
        have[:] += patterns[p]

    for label in np.argsort(totals, kind="stable"):
        if have[label] == 0:
            candidates = np.flatnonzero((patterns[:, label] > 0) & (left > 0))
            take(int(rng.choice(candidates, p=left[candidates] / left[candidates].sum())))
    while len(order) < n:
        cost = np.abs(have + patterns - (len(order) + 1) * totals / n).sum(1)
        cost[left == 0] = np.inf
        take(int(np.argmin(cost)))
    return np.asarray(order)
