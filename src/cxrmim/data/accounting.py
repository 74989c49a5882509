"""What became of every label, finding, column, folder and label file a source holds (prepared/summary.json `seen`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from cxrmim.data.tasks import findings_of

__all__ = ["finding_fates", "label_fates", "prepared_counts"]


def label_fates(raw: Sequence[str], mapped: Sequence[str], kept: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """Per label as the source spells it: images, the label it became (dataset.label_map), images past the filters."""
    fates: dict[str, dict[str, Any]] = {}
    for label, became, keep in zip(raw, mapped, kept):
        entry = fates.setdefault(label, {"images": 0, "became": became, "kept": 0})
        entry["images"] += 1
        entry["kept"] += int(keep)
    for entry in fates.values():
        if not entry["kept"]:
            entry["became"] = f"{entry['became']} (every image dropped by dataset.keep_labels / dataset.views)"
    return dict(sorted(fates.items()))


def finding_fates(raw: Sequence[str], listed: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per finding the source names: images with it, and whether dataset.findings keeps it."""
    counts = Counter(f for label in raw for f in findings_of(label))
    return {
        finding: {
            "images": n,
            "became": "kept"
            if finding in listed or not listed
            else "ignored: not in dataset.findings (those images count as without it)",
        }
        for finding, n in sorted(counts.items())
    }


def prepared_counts(seen: dict[str, Any], raw_labels: Sequence[str], prepared: Sequence[bool]) -> dict[str, Any]:
    """`seen` with each label's images in the prepared cache (after bad images and dropped duplicates)."""
    counts = Counter(label for label, ok in zip(raw_labels, prepared) if ok)
    for label, entry in seen.get("labels", {}).items():
        entry["prepared"] = counts.get(label, 0)
    return seen
