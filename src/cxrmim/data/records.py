"""A real dataset's records as prepare reads them: the kind's reader, dataset.label_map / keep_labels / views, and
an account of what became of every label, finding, column, folder and label file seen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["named_messages", "source_records"]


def source_records(
    kind: str, root: Path, dataset_cfg: dict[str, Any], report: dict[str, Any] | None = None
) -> tuple[list[Any], list[str], Path]:
    """Source records of a real dataset after label mapping and view filtering, warnings, and the path base.

    `report`, when given, receives what became of every label, finding, column, folder and label file seen.
    """
    from cxrmim import registry
    from cxrmim.data.accounting import finding_fates, label_fates
    from cxrmim.data.kinds import label_file_names, read_kind
    from cxrmim.data.public import restrict_findings
    from cxrmim.data.sources import apply_label_map, filter_views, keep_labels
    from cxrmim.data.tasks import spelling_hint
    from cxrmim.data.uncertain import check_uncertain

    report = {} if report is None else report
    entry = registry.dataset_kind(kind)
    check_uncertain(dataset_cfg)  # a per-finding policy names only findings the task keeps
    read = read_kind(kind, root, dataset_cfg)
    records, warnings, base = read.records, read.warnings, read.base
    if entry.label_files:
        report["label_files"] = label_file_names(kind, root, dataset_cfg)
    report.update(read.seen)
    if entry.findings and dataset_cfg.get("task") == "multilabel" and dataset_cfg.get("findings"):
        report["findings"] = finding_fates([r.label for r in records], list(dataset_cfg["findings"]))
        hint = spelling_hint(report["findings"], dataset_cfg["findings"])
        if hint:  # the listed spelling would match no image and the dataset's spelling would be dropped
            raise ValueError(
                f"dataset.findings and the {kind} labels spell findings differently{hint}; "
                "use the dataset's spelling in dataset.findings"
            )
        records, changed = restrict_findings(records, list(dataset_cfg["findings"]))
        if changed:
            warnings.append(f"{changed} images have findings outside dataset.findings; only the listed ones count")
    raw = records
    mapped = apply_label_map(records, dataset_cfg.get("label_map") or {})
    unmatched = sorted(set(dataset_cfg.get("keep_labels") or []) - {r.label for r in mapped})
    if unmatched:  # a misspelt label would keep nothing of its class, silently
        raise ValueError(
            f"dataset.keep_labels lists {unmatched}, which no image has (labels after "
            f"dataset.label_map: {sorted({r.label for r in mapped})}); fix the spelling"
        )
    records, dropped = keep_labels(mapped, dataset_cfg.get("keep_labels") or [])
    if dropped:
        warnings.append(f"dataset.keep_labels {dataset_cfg['keep_labels']} dropped {dropped} images of other labels")
    records, dropped = filter_views(records, dataset_cfg.get("views") or [])
    if dropped:
        warnings.append(f"view filter {dataset_cfg['views']} dropped {dropped} images")
    final = {id(r) for r in records}
    report["labels"] = label_fates([r.label for r in raw], [r.label for r in mapped], [id(r) in final for r in mapped])
    report["raw_labels"] = [r.label for r, m in zip(raw, mapped) if id(m) in final]  # per kept record, in order
    report["positions"] = [i for i, m in enumerate(mapped) if id(m) in final]
    if not records:
        raise ValueError(f"{root}: no images left to prepare (check dataset.views and the source)")
    return records, warnings, base


def named_messages(items: Iterator[Any], records: list[Any], names: list[str]) -> Iterator[Any]:
    """Items whose messages name the row instead of the file (file names often carry patient identifiers)."""
    for item, record, name in zip(items, records, names):
        for attr in ("error", "mask_problem"):
            message = getattr(item, attr)
            if message:
                if record.mask is not None:
                    message = message.replace(f" and mask {record.mask}", " and its mask")
                    message = message.replace(str(record.mask), f"the mask of {name}")
                setattr(item, attr, message.replace(str(record.image), name))
        yield item
