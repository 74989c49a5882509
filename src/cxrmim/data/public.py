"""Public chest X-ray datasets in their official layouts: MIMIC-CXR-JPG, CheXpert and NIH ChestX-ray14.

Each reader returns SourceRecords whose label is the set of positive findings joined by '|' ("No Finding" when
none), the findings labelled uncertain, the patient, the view and the official split part ("train" / "test").
Each works from a subset of the files (a sample): rows whose image is absent are skipped with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.data.sources import KindRead, SourceError, SourceRecord
from cxrmim.data.tasks import NO_FINDING, join_findings
from cxrmim.data.uncertain import CHEXPERT_FINDINGS, finding_policies

__all__ = ["CHEXPERT_FINDINGS", "NIH_FINDINGS", "label_files", "public_records"]

NIH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
# dataset.uncertain: one policy, or a mapping finding -> policy (cxrmim.data.uncertain)
Policy = str | Mapping[str, str]
LABELERS = ("chexpert", "negbio")  # MIMIC-CXR-JPG's two label files
SEARCH_DEPTH = 3  # folder levels searched below dataset.source for the CSVs (archives often add one or two)


def _find(root: Path, patterns: tuple[str, ...], what: str) -> Path | None:
    """The one file matching `patterns` in root or up to SEARCH_DEPTH folders below it, or None.

    Two candidates anywhere in that range (Data_Entry_2017.csv and Data_Entry_2017_v2020.csv, or a copy in a
    sub-folder) are an error: the labels would depend on which one sorts or lies first.
    """
    found = sorted(
        {
            path
            for depth in range(SEARCH_DEPTH + 1)
            for pattern in patterns
            for path in root.glob("*/" * depth + pattern)
        }
    )
    if len(found) > 1:
        names = ", ".join(str(path.relative_to(root)) for path in found)
        raise SourceError(
            f"{root}: several files could be the {what}: {names}; keep the one to use and move "
            "the others out of dataset.source, so the labels are the ones you mean"
        )
    return found[0] if found else None


def _require(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    """A file that must exist, or a SourceError naming it and where it was looked for."""
    found = _find(root, patterns, what)
    if found is None:
        raise SourceError(
            f"{root}: {what} not found (looked for {' or '.join(patterns)} up to {SEARCH_DEPTH} folders "
            "down); point dataset.source at the dataset's folder as downloaded"
        )
    return found


def label_files(kind: str, root: Path, labeler: str = "chexpert") -> dict[str, Path | None]:
    """The label, split and report files a public kind reads (None: optional and absent); ambiguity is an error."""
    root = Path(root)
    if kind == "chexpert":
        return {
            part: _find(root, (f"CheXpert-v1.0*/{name}", name), f"CheXpert {name}")
            for part, name in (("train", "train.csv"), ("test", "valid.csv"))
        }
    if kind == "nih_cxr14":
        entry = _require(root, ("Data_Entry_2017*.csv",), "Data_Entry_2017.csv")
        lists = {
            part: entry.parent / name for part, name in (("train", "train_val_list.txt"), ("test", "test_list.txt"))
        }
        return {"labels": entry, **{part: path if path.is_file() else None for part, path in lists.items()}}
    if labeler not in LABELERS:
        raise SourceError(f"dataset.labeler is {labeler!r}; use one of {list(LABELERS)}")
    return {
        "metadata": _require(root, ("mimic-cxr-2.0.0-metadata.csv*",), "mimic-cxr-2.0.0-metadata.csv"),
        "labels": _require(
            root, (f"mimic-cxr-2.0.0-{labeler}.csv*",), f"mimic-cxr-2.0.0-{labeler}.csv (dataset.labeler: {labeler})"
        ),
        "split": _find(root, ("mimic-cxr-2.0.0-split.csv*",), "mimic-cxr-2.0.0-split.csv"),
        "reports": _find(root, ("mimic-cxr-reports",), "mimic-cxr-reports folder"),
    }


def _policies(policy: Policy) -> dict[str, str]:
    """dataset.uncertain as CheXpert finding -> policy; an unknown policy or finding is a SourceError."""
    try:
        return finding_policies(policy, CHEXPERT_FINDINGS)
    except ValueError as error:
        raise SourceError(str(error)) from None


def _observations(row: pd.Series, policies: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """Label and uncertain findings of a CheXpert-style row: 1 positive, 0 / blank negative, -1 by its finding's
    policy (ones: positive, zeros: negative, ignore: uncertain)."""
    positive, uncertain = [], []
    for name, policy in policies.items():
        value = pd.to_numeric(row.get(name), errors="coerce")
        if value == 1 or (value == -1 and policy == "ones"):
            positive.append(name)
        elif value == -1 and policy == "ignore":
            uncertain.append(name)
    return join_findings(positive, list(policies)), tuple(uncertain)


def _kept(records: list[SourceRecord], missing: int, root: Path, where: str) -> tuple[list[SourceRecord], list[str]]:
    """Records with a warning for absent images, or an error when none of the listed images exists."""
    if not records:
        raise SourceError(
            f"{root}: none of the images listed in the CSVs exists under {where}; check dataset.source "
            "(the folder holding the CSVs and the image folders as downloaded)"
        )
    note = f"{missing} images listed in the CSVs are absent (a sample of the dataset?) and skipped"
    warnings = [note] if missing else []
    return records, warnings


# ----------------------------------------------------------------------------- CheXpert


def chexpert_records(root: Path, policy: Policy = "ignore") -> tuple[list[SourceRecord], list[str]]:
    """CheXpert-v1.0(-small): train.csv (official train) and valid.csv (official test); patient from the path."""
    policies = _policies(policy)
    csvs = label_files("chexpert", root)
    if not any(csvs.values()):
        raise SourceError(
            f"{root}: CheXpert train.csv / valid.csv not found; point dataset.source at the folder "
            "holding CheXpert-v1.0-small (or CheXpert-v1.0)"
        )
    warnings = [f"CheXpert {part} CSV absent: no official {part} images" for part, path in csvs.items() if path is None]
    records, missing = [], 0
    for part, csv_path in csvs.items():
        if csv_path is None:
            continue
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
        if "Path" not in table.columns:
            raise SourceError(f"{csv_path}: no Path column; is this CheXpert's {csv_path.name}?")
        for _, row in table.iterrows():
            # Paths start with the release folder (CheXpert-v1.0-small/train/...), so resolve from its parent.
            image = csv_path.parent.parent / row["Path"]
            if not image.is_file():
                missing += 1
                continue
            label, uncertain = _observations(row, policies)
            patient = re.search(r"patient\d+", row["Path"])
            view = (row.get("AP/PA") or "") if row.get("Frontal/Lateral", "Frontal") == "Frontal" else "Lateral"
            records.append(
                SourceRecord(
                    image=image,
                    label=label,
                    group=patient.group(0) if patient else None,
                    view=view or None,
                    official=part,
                    uncertain=uncertain,
                )
            )
    records, more = _kept(records, missing, root, "the CheXpert folder")
    return records, warnings + more


# ----------------------------------------------------------------------------- NIH ChestX-ray14


def nih_records(root: Path) -> tuple[list[SourceRecord], list[str]]:
    """NIH ChestX-ray14: Data_Entry_2017*.csv, images in images*/ (or images*/images/), official split lists."""
    files = label_files("nih_cxr14", root)
    entry = files["labels"]
    base = entry.parent
    folders = [f for f in sorted(base.glob("images*")) if f.is_dir()]
    if not folders:
        raise SourceError(f"{base}: no images*/ folder next to {entry.name}; extract the image archives there")
    images = {p.name: p for folder in folders for p in folder.rglob("*.png")}
    official = {}
    for part in ("train", "test"):
        listed = files[part]
        if listed is not None:
            official.update({line.strip(): part for line in listed.read_text().splitlines() if line.strip()})
    table = pd.read_csv(entry, dtype=str, keep_default_na=False)
    absent = [c for c in ("Image Index", "Finding Labels", "Patient ID") if c not in table.columns]
    if absent:
        raise SourceError(f"{entry}: missing column(s) {absent}; is this the NIH Data_Entry_2017 CSV?")
    records, missing = [], 0
    for _, row in table.iterrows():
        image = images.get(row["Image Index"])
        if image is None:
            missing += 1
            continue
        findings = [f.strip() for f in row["Finding Labels"].split("|") if f.strip() and f.strip() != NO_FINDING]
        records.append(
            SourceRecord(
                image=image,
                label=join_findings(findings),
                group=row["Patient ID"],
                view=row.get("View Position") or None,
                official=official.get(row["Image Index"]),
            )
        )
    warnings = [] if official else ["train_val_list.txt / test_list.txt absent: no official split"]
    records, more = _kept(records, missing, root, ", ".join(f.name for f in folders))
    return records, warnings + more


# ----------------------------------------------------------------------------- MIMIC-CXR-JPG


def report_sections(text: str) -> str:
    """The FINDINGS and IMPRESSION sections of a MIMIC-CXR report (the whole text when it has neither)."""
    sections = re.split(r"\n\s*([A-Z][A-Z /&]+):", "\n" + text)
    wanted = [
        sections[i + 1].strip()
        for i in range(1, len(sections) - 1, 2)
        if sections[i].strip() in ("FINDINGS", "IMPRESSION")
    ]
    return " ".join(" ".join(w.split()) for w in wanted) or " ".join(text.split())


def _mimic_images(root: Path) -> Path:
    """The files/ folder of the JPEGs (not mimic-cxr-reports/files/, which holds the reports)."""
    for depth in range(SEARCH_DEPTH + 1):
        for folder in sorted(root.glob("*/" * depth + "files")):
            if folder.is_dir() and "mimic-cxr-reports" not in folder.relative_to(root).parts:
                return folder
    raise SourceError(
        f"{root}: the files/ image folder (files/pXX/p<subject>/s<study>/*.jpg) not found up to "
        f"{SEARCH_DEPTH} folders down; point dataset.source at the MIMIC-CXR-JPG folder as downloaded"
    )


def _report_file(reports_dir: Path | None, subject: str, study: str) -> Path | None:
    """The study's report text file (mimic-cxr-reports[/files]/pXX/p<subject>/s<study>.txt), when present."""
    if reports_dir is None:
        return None
    relative = Path(f"p{subject[:2]}", f"p{subject}", f"s{study}.txt")
    return next((p for p in (reports_dir / "files" / relative, reports_dir / relative) if p.is_file()), None)


def mimic_records(
    root: Path, policy: Policy = "ignore", labeler: str = "chexpert"
) -> tuple[list[SourceRecord], list[str]]:
    """MIMIC-CXR-JPG: files/pXX/p<subject>/s<study>/<dicom>.jpg with the metadata, label and split CSVs.

    `labeler` picks the label CSV: chexpert (mimic-cxr-2.0.0-chexpert.csv) or negbio (-negbio.csv, the paper's).
    """
    policies = _policies(policy)
    files = label_files("mimic_cxr_jpg", root, labeler)
    metadata = pd.read_csv(files["metadata"], dtype=str, keep_default_na=False)
    labels = pd.read_csv(files["labels"], dtype=str, keep_default_na=False).set_index(["subject_id", "study_id"])
    split_csv = files["split"]
    official = {} if split_csv is None else dict(pd.read_csv(split_csv, dtype=str)[["dicom_id", "split"]].values)
    reports_dir = files["reports"]
    files = _mimic_images(root)
    records, missing = [], 0
    for _, row in metadata.iterrows():
        subject, study = row["subject_id"], row["study_id"]
        folder = files / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        image = folder / f"{row['dicom_id']}.jpg"
        if not image.is_file():
            missing += 1
            continue
        key = (subject, study)
        label, uncertain = _observations(labels.loc[key], policies) if key in labels.index else (NO_FINDING, ())
        report_file = _report_file(reports_dir, subject, study)
        part = official.get(row["dicom_id"])
        records.append(
            SourceRecord(
                image=image,
                label=label,
                group=subject,
                view=row.get("ViewPosition") or None,
                uncertain=uncertain,
                report=report_sections(report_file.read_text(errors="replace")) if report_file else None,
                official="test" if part == "test" else ("train" if part else None),
            )
        )
    warnings = [] if split_csv else ["mimic-cxr-2.0.0-split.csv absent: no official split"]
    warnings += [] if reports_dir else ["mimic-cxr-reports absent: the manifest has no report text"]
    records, more = _kept(records, missing, root, str(files))
    return records, warnings + more


def restrict_findings(records: list[SourceRecord], findings: list[str]) -> tuple[list[SourceRecord], int]:
    """Labels keeping only the listed findings (e.g. CheXpert's 5 competition tasks), and how many images lost one.

    An image whose findings are all unlisted becomes "No Finding": absent for every listed finding, as the
    field's per-finding evaluation treats it.
    """
    from dataclasses import replace

    from cxrmim.data.tasks import findings_of

    listed, changed, out = set(findings), 0, []
    for record in records:
        present = findings_of(record.label)
        kept = [f for f in present if f in listed]
        changed += len(kept) < len(present)
        out.append(
            replace(
                record, label=join_findings(kept, findings), uncertain=tuple(u for u in record.uncertain if u in listed)
            )
        )
    return out, changed


def public_records(
    kind: str, root: Path, policy: Policy = "ignore", labeler: str = "chexpert"
) -> tuple[list[SourceRecord], list[str]]:
    """Records and warnings of one public dataset kind (policy: dataset.uncertain, one or per finding; labeler:
    MIMIC's label file)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; set dataset.source to the extracted {kind} dataset folder")
    _policies(policy)  # before reading: a bad policy fails fast, whatever the kind
    if kind == "mimic_cxr_jpg":
        return mimic_records(root, policy, labeler)
    return nih_records(root) if kind == "nih_cxr14" else chexpert_records(root, policy)


# ----------------------------------------------------------------------------- the kinds' registry functions


def chexpert_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """CheXpert's label CSVs (registry `label_files`)."""
    return label_files("chexpert", root)


def nih_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """NIH ChestX-ray14's label CSV and split lists (registry `label_files`)."""
    return label_files("nih_cxr14", root)


def mimic_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """MIMIC-CXR-JPG's metadata, label (dataset.labeler) and split CSVs and report folder (registry `label_files`)."""
    return label_files("mimic_cxr_jpg", root, options["labeler"])


def _read(kind: str, root: Path, options: dict[str, Any]) -> KindRead:
    """One public kind's records with dataset.uncertain and dataset.labeler."""
    records, warnings = public_records(kind, root, options["uncertain"], options["labeler"])
    return KindRead(records, warnings, Path(root))


def read_chexpert(root: Path, options: dict[str, Any]) -> KindRead:
    """The `chexpert` kind (registry `reader`)."""
    return _read("chexpert", root, options)


def read_nih(root: Path, options: dict[str, Any]) -> KindRead:
    """The `nih_cxr14` kind (registry `reader`)."""
    return _read("nih_cxr14", root, options)


def read_mimic(root: Path, options: dict[str, Any]) -> KindRead:
    """The `mimic_cxr_jpg` kind (registry `reader`)."""
    return _read("mimic_cxr_jpg", root, options)
