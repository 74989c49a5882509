#!/usr/bin/env python
"""How closely multilabel splits and label budgets keep every finding's share, for three ways of stratifying.

Finding sets with a rare finding that mostly comes with a common one, patients of 1 and 3 images:
    python benchmarks/multilabel_stratification.py --seeds 20
Prints, per method, the largest miss of any finding's target count (mean and worst over seeds) and of the part size.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import numpy as np

from cxrmim.data.splits import grouped_stratified_holdout
from cxrmim.data.stratify import iterative_holdout, label_sets, stratified_order
from cxrmim.data.tasks import findings_of, join_findings

FINDINGS = ("Atelectasis", "Effusion", "Nodule", "Hernia")


def finding_sets(n: int, seed: int) -> list[str]:
    """Independent findings at 35/25/10/3%, Hernia coming with Effusion 80% of the time."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, len(FINDINGS))) < np.array([0.35, 0.25, 0.1, 0.03])
    present[present[:, 3], 1] |= rng.random(int(present[:, 3].sum())) < 0.8
    return [join_findings([f for f, on in zip(FINDINGS, row) if on], FINDINGS) for row in present]


def rarest_finding_holdout(labels: list[str], groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The earlier approximation: each image stratified on its rarest finding, as a single class."""
    sets = [findings_of(label) or [label] for label in labels]
    frequency = Counter(name for names in sets for name in names)
    keys = np.array([min(names, key=lambda n: (frequency[n], n)) for names in sets])
    return grouped_stratified_holdout(keys, groups, fraction, seed)


def sechidis_holdout(member: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sechidis et al.'s rule: the part wanting most of the current label, then most images, then a coin."""
    group_names, group_ids = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_names), member.shape[1]))
    np.add.at(counts, group_ids, member)
    sizes = np.bincount(group_ids).astype(float)
    share = np.array([fraction, 1.0 - fraction])
    wanted, wanted_size = share[:, None] * counts.sum(0), share * sizes.sum()
    unplaced, part = counts.sum(0), np.full(len(group_names), -1)
    rng = np.random.default_rng(seed)
    while (part < 0).any():
        label = int(np.argmin(np.where(unplaced > 0, unplaced, np.inf)))
        for g in rng.permutation(np.flatnonzero((part < 0) & (counts[:, label] > 0))):
            part[g] = np.lexsort((rng.random(2), wanted_size, wanted[:, label]))[-1]
            wanted[part[g]] -= counts[g]
            wanted_size[part[g]] -= sizes[g]
            unplaced -= counts[g]
    return (part == 0)[group_ids]


def holdout_misses(n: int, per_patient: int, fraction: float, seeds: int) -> dict[str, np.ndarray]:
    """(seeds, 2) arrays of the worst finding miss and the size miss, per method."""
    misses: dict[str, list[tuple[float, float]]] = {"rarest finding": [], "Sechidis": [], "cxrmim": []}
    for seed in range(seeds):
        labels = finding_sets(n, seed)
        groups = np.array([f"p{i // per_patient}" for i in range(n)])
        member = label_sets(labels)[1]
        target = fraction * member.sum(0)
        for method, held in (
            ("rarest finding", rarest_finding_holdout(labels, groups, fraction, seed)),
            ("Sechidis", sechidis_holdout(member, groups, fraction, seed)),
            ("cxrmim", iterative_holdout(member, groups, fraction, seed)),
        ):
            misses[method].append((np.abs(member[held].sum(0) - target).max(), abs(held.sum() - fraction * n)))
    return {method: np.array(rows) for method, rows in misses.items()}


def prefix_misses(n: int, seeds: int) -> dict[str, np.ndarray]:
    """Worst miss of any finding's proportional count over all prefixes past the first few images, per order."""
    misses: dict[str, list[float]] = {"random order": [], "cxrmim order": []}
    for seed in range(seeds):
        member = label_sets(finding_sets(n, seed))[1]
        rng = np.random.default_rng(seed)
        for method, order in (("random order", rng.permutation(n)), ("cxrmim order", stratified_order(member, rng))):
            counts = np.cumsum(member[order], axis=0)
            expected = np.arange(1, n + 1)[:, None] * member.sum(0) / n
            misses[method].append(np.abs(counts - expected)[member.shape[1] :].max())
    return {method: np.array(rows) for method, rows in misses.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    for per_patient in (1, 3):
        print(f"holdout of {args.fraction:g}, {args.images} images, {per_patient} per patient, {args.seeds} seeds:")
        for method, miss in holdout_misses(args.images, per_patient, args.fraction, args.seeds).items():
            print(
                f"  {method:15s} finding miss mean {miss[:, 0].mean():.2f} worst {miss[:, 0].max():.1f}"
                f" | size miss mean {miss[:, 1].mean():.2f} worst {miss[:, 1].max():.0f}"
            )
    print(f"label-budget orders, {args.images} images, {args.seeds} seeds (worst finding miss over all prefixes):")
    for method, miss in prefix_misses(args.images, args.seeds).items():
        print(f"  {method:15s} mean {miss.mean():.2f} worst {miss.max():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
