"""CheXpert-style uncertain (-1) labels: one policy for every finding, or a policy per finding.

`dataset.uncertain` is `ignore` (255 in labels.npy, left out of loss and metrics), `ones` or `zeros`, or a mapping
finding -> one of those, with an optional `"*"` entry for the findings it does not name (default `ignore`). MRM's
CheXpert protocol is `{Atelectasis: ones, Edema: ones, Pleural Effusion: ones, Cardiomegaly: zeros,
Consolidation: zeros}` (U-Ones / U-Zeros); blank labels are negative under every policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CHEXPERT_FINDINGS",
    "OTHERS",
    "POLICIES",
    "UNCERTAIN_KINDS",
    "check_uncertain",
    "finding_policies",
    "task_findings",
]

CHEXPERT_FINDINGS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)  # the labeler's observations in CheXpert and MIMIC-CXR-JPG; the 14th, "No Finding", is the empty set here
POLICIES = ("ignore", "ones", "zeros")
OTHERS = "*"  # the mapping entry for every finding it does not name
UNCERTAIN_KINDS = ("chexpert", "mimic_cxr_jpg")  # kinds whose labels have -1 (uncertain) values


def finding_policies(
    policy: str | Mapping[str, str], findings: Sequence[str], where: str = "dataset.uncertain"
) -> dict[str, str]:
    """Finding -> its policy for each of `findings`; a mapping naming a finding not in `findings` is an error."""
    if isinstance(policy, str):
        _check_value(policy, where)
        return dict.fromkeys(findings, policy)
    if not isinstance(policy, Mapping):
        raise ValueError(f"{where} is {policy!r}; use one of {list(POLICIES)} or a mapping finding -> policy")
    for name, value in policy.items():
        _check_value(value, f"{where}.{name}")
    unknown = sorted(set(policy) - set(findings) - {OTHERS})
    if unknown:
        # A misspelt or dropped finding would silently keep the default policy for the finding meant.
        raise ValueError(
            f"{where} names {unknown}, which the task does not have (its findings: {list(findings)}); "
            "fix the spelling or remove the entry"
        )
    rest = policy.get(OTHERS, "ignore")
    return {name: policy.get(name, rest) for name in findings}


def _check_value(value: Any, where: str) -> None:
    """One policy value is known."""
    if value not in POLICIES:
        raise ValueError(f"{where} is {value!r}; use one of {list(POLICIES)}")


def task_findings(dataset_cfg: dict[str, Any]) -> list[str]:
    """The findings a dataset's labels keep: dataset.findings of a multilabel task, else all CheXpert findings."""
    if dataset_cfg.get("task") == "multilabel" and dataset_cfg.get("findings"):
        return list(dataset_cfg["findings"])
    return list(CHEXPERT_FINDINGS)


def check_uncertain(dataset_cfg: dict[str, Any], where: str = "dataset") -> None:
    """A dataset section's uncertain policy is valid for its task's findings (kinds with uncertain labels only)."""
    if dataset_cfg.get("kind") in UNCERTAIN_KINDS and dataset_cfg.get("uncertain") is not None:
        finding_policies(dataset_cfg["uncertain"], task_findings(dataset_cfg), f"{where}.uncertain")
