"""Label tasks of the data layer: multiclass, binary (a named positive class) and multilabel (sets of findings).

A multilabel image's `label` is its findings joined by `|` ("No Finding" when none); the label matrix
(`prepared/labels.npy`) holds 1 present, 0 absent and 255 uncertain-ignored, columns in `dataset.findings` order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["NO_FINDING", "SEPARATOR", "UNCERTAIN", "LabelTask", "findings_of", "fold", "join_findings", "label_matrix"]

NO_FINDING = "No Finding"
SEPARATOR = "|"
UNCERTAIN = 255
TASKS = ("multiclass", "binary", "multilabel", "segmentation")  # segmentation: labels only stratify the split


def fold(name: str) -> str:
    """A name's spelling-insensitive form: case, spaces, '_' and '-' ignored ('Viral_Pneumonia' = 'viral pneumonia')."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().casefold()).strip()


def findings_of(label: str) -> list[str]:
    """The findings named by a label ('A|B' -> [A, B]; 'No Finding' -> [])."""
    return [part for part in (p.strip() for p in str(label).split(SEPARATOR)) if part and part != NO_FINDING]


def join_findings(findings: Iterable[str], order: Sequence[str] | None = None) -> str:
    """The label of a set of findings, in `order` when given (or sorted); 'No Finding' when empty."""
    present = set(findings)
    ordered = [f for f in order if f in present] if order is not None else sorted(present)
    return SEPARATOR.join(ordered) or NO_FINDING


@dataclass(frozen=True)
class LabelTask:
    """What a label means: one class of many, positive versus the other class, or a set of findings."""

    kind: str = "multiclass"
    findings: tuple[str, ...] = ()
    positive: str | None = None

    @classmethod
    def from_config(cls, dataset_cfg: dict[str, Any]) -> LabelTask:
        """The task of `dataset.task` / `dataset.findings` / `dataset.positive`, checked for consistency."""
        kind = dataset_cfg.get("task") or "multiclass"
        findings = tuple(str(f) for f in dataset_cfg.get("findings") or ())
        positive = dataset_cfg.get("positive")
        if kind not in TASKS:
            raise ValueError(f"dataset.task is {kind!r}; use one of {list(TASKS)}")
        if kind == "multilabel" and not findings:
            raise ValueError("dataset.task is multilabel but dataset.findings is empty; list the finding names")
        if kind == "multilabel" and len(set(findings)) != len(findings):
            raise ValueError(f"dataset.findings has repeated names: {list(findings)}")
        bad = [f for f in findings if SEPARATOR in f or f == NO_FINDING]
        if bad:
            raise ValueError(
                f"dataset.findings: {bad} cannot be finding names ('|' joins findings, {NO_FINDING!r} means none)"
            )
        if kind == "binary" and not positive:
            raise ValueError("dataset.task is binary: set dataset.positive to the positive class (e.g. Finding)")
        return cls(kind=kind, findings=findings, positive=positive)

    def check_labels(self, labels: Sequence[str]) -> None:
        """Fail when the prepared labels do not fit the task (the message names the config key to change)."""
        classes = sorted(set(labels))
        if self.kind == "multilabel":
            seen = sorted({f for label in classes for f in findings_of(label)})
            _check_spellings(seen, "findings")
            unknown = sorted(set(seen) - set(self.findings))
            if unknown:
                raise ValueError(
                    f"labels name findings {unknown} that dataset.findings does not list; add them "
                    f"there or merge them with dataset.label_map{spelling_hint(unknown, self.findings)}"
                )
            absent = [f for f in self.findings if f not in seen]
            if absent:  # a typo or another dataset's finding: its AUC would be undefined, its mean quietly smaller
                raise ValueError(
                    f"dataset.findings lists {absent}, which no image has (findings seen: {seen}); "
                    "fix the spelling or remove them from dataset.findings"
                )
            return
        with_separator = [c for c in classes if SEPARATOR in c]
        if with_separator:
            raise ValueError(
                f"labels {with_separator[:5]} hold several findings ('|'); set dataset.task: multilabel "
                "with dataset.findings, or map them to single classes with dataset.label_map"
            )
        _check_spellings(classes, "labels")
        if self.kind == "binary" and (len(classes) != 2 or self.positive not in classes):
            raise ValueError(
                f"dataset.task is binary with positive {self.positive!r}, but the labels are {classes}; "
                "merge them into two classes with dataset.label_map (e.g. every finding -> Finding)"
            )
        if len(classes) < 2 and self.kind != "segmentation":  # one class: every metric is trivially perfect
            raise ValueError(
                f"every image has the label {classes}: a classifier needs at least two classes; check "
                "the label column and dataset.label_map / dataset.keep_labels (a '*' key merges all)"
            )

    def summary(self, labels: Sequence[str]) -> dict[str, Any]:
        """The task's entries of prepared/summary.json."""
        if self.kind == "multilabel":
            return {"task": self.kind, "findings": list(self.findings)}
        entry: dict[str, Any] = {"task": self.kind, "classes": sorted(set(labels))}
        if self.kind == "binary":
            entry["positive"] = self.positive
        return entry

    def matrix(self, labels: Sequence[str], uncertain: Sequence[Iterable[str]] | None = None) -> np.ndarray:
        """prepared/labels.npy: the finding matrix (multilabel) or the one-hot class matrix (columns = classes)."""
        if self.kind == "multilabel":
            return label_matrix(labels, self.findings, uncertain)
        classes = sorted(set(labels))
        return label_matrix(labels, classes)


def spelling_hint(names: Iterable[str], listed: Iterable[str]) -> str:
    """'; note: X is spelt Y in dataset.findings' for names that match a listed one but for spelling ('' if none)."""
    by_fold = {fold(n): n for n in listed}
    pairs = [f"{n!r} / {by_fold[fold(n)]!r}" for n in names if fold(n) in by_fold and by_fold[fold(n)] != n]
    return f" (spelling differs: {', '.join(pairs)})" if pairs else ""


def _check_spellings(names: Sequence[str], what: str) -> None:
    """Fail when names differ only in case, spaces, '_' or '-' (e.g. Normal / normal): one class split in two."""
    variants: dict[str, list[str]] = {}
    for name in names:
        variants.setdefault(fold(name), []).append(name)
    clashes = [sorted(v) for v in variants.values() if len(v) > 1]
    if clashes:
        raise ValueError(
            f"{what} {clashes} differ only in spelling, so one class would count as several; merge "
            f"them with dataset.label_map (e.g. {{{clashes[0][1]!r}: {clashes[0][0]!r}}}) or fix the source"
        )


def label_matrix(
    labels: Sequence[str], columns: Sequence[str], uncertain: Sequence[Iterable[str]] | None = None
) -> np.ndarray:
    """uint8 (N, len(columns)): 1 where the label names the column, 255 where uncertain, else 0."""
    position = {name: j for j, name in enumerate(columns)}
    out = np.zeros((len(labels), len(columns)), dtype=np.uint8)
    for i, label in enumerate(labels):
        names = [label] if label in position else findings_of(label)
        for name in names:
            out[i, position[name]] = 1
        for name in uncertain[i] if uncertain is not None else ():
            if name in position and out[i, position[name]] == 0:
                out[i, position[name]] = UNCERTAIN
    return out
