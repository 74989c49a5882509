"""A real dataset's records as prepare reads them: the kind's reader, dataset.label_map / keep_labels / views, and
an account of what became of every label, finding, column, folder and label file seen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["named_messages", "source_records"]


def source_records(kind: str, root: Path, dataset_cfg: dict[str, Any],
                   report: dict[str, Any] | None = None) -> tuple[list[Any], list[str], Path]:
    """Source records of a real dataset after label mapping and view filtering, warnings, and the path base.

    `report`, when given, receives what became of every label, finding, column, folder and label file seen.
    """
    from cxrmim.data.accounting import finding_fates, label_fates
    from cxrmim.data.public import (
        PUBLIC_KINDS,
        label_file_names,
        public_records,
        restrict_findings,
    )
    from cxrmim.data.sources import (
        apply_label_map,
        covid19_radiography_records,
        filter_views,
        kaggle_folders,
        keep_labels,
        manifest_columns,
        manifest_records,
    )
    from cxrmim.data.tasks import spelling_hint

    report = {} if report is None else report
    if kind == "covid19_radiography":
        records, warnings = covid19_radiography_records(root)
        report["folders"] = kaggle_folders(root)
        base = root
    elif kind in PUBLIC_KINDS:
        labeler = dataset_cfg.get("labeler") or "chexpert"
        records, warnings = public_records(kind, root, dataset_cfg.get("uncertain") or "ignore", labeler)
        report["label_files"] = label_file_names(kind, root, labeler)
        if dataset_cfg.get("task") == "multilabel" and dataset_cfg.get("findings"):
            report["findings"] = finding_fates([r.label for r in records], list(dataset_cfg["findings"]))
            hint = spelling_hint(report["findings"], dataset_cfg["findings"])
            if hint:  # the listed spelling would match no image and the dataset's spelling would be dropped
                raise ValueError(f"dataset.findings and the {kind} labels spell findings differently{hint}; "
                                 "use the dataset's spelling in dataset.findings")
            records, changed = restrict_findings(records, list(dataset_cfg["findings"]))
            if changed:
                warnings.append(f"{changed} images have findings outside dataset.findings; only the listed ones count")
        base = root
    else:
        records, warnings, base = manifest_records(root), [], root.parent
        report["columns"] = manifest_columns(root)
        ignored = [name for name, what in report["columns"].items() if what.startswith("ignored")]
        if ignored:
            warnings.append(f"manifest columns {ignored} are not used (used: image, label, mask, patient_id, view, "
                            "report and their usual spellings)")
    raw = records
    mapped = apply_label_map(records, dataset_cfg.get("label_map") or {})
    unmatched = sorted(set(dataset_cfg.get("keep_labels") or []) - {r.label for r in mapped})
    if unmatched:  # a misspelt label would keep nothing of its class, silently
        raise ValueError(f"dataset.keep_labels lists {unmatched}, which no image has (labels after "
                         f"dataset.label_map: {sorted({r.label for r in mapped})}); fix the spelling")
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
