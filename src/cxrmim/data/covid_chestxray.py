"""The ieee8023 COVID-19 Image Data Collection (covid-chestxray-dataset) as downloaded: `metadata.csv` and
`<folder>/<filename>`.

`finding` is a '/'-separated hierarchy in later versions (`Pneumonia/Viral/COVID-19`) and a flat name in the 2020
ones (`COVID-19`, `Streptococcus`); flat names of known pathogens are placed in the same hierarchy, so both
versions give the same labels. X-ray rows only, frontal views (PA, AP, AP Supine, ...) unless `dataset.views`
chooses; `todo`, `Unknown` and empty findings are left out. `dataset.covid_task` chooses the labels: `finding`
(the finding's last part), `covid` (COVID-19 vs Other pneumonia: MRM's iscovid) or `viral` (Viral vs Bacterial
pneumonia: MRM's isviral).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.data.public import _kept, _require
from cxrmim.data.sources import KindRead, SourceError, SourceRecord

__all__ = ["TASKS", "finding_path", "metadata_files", "read_covid_chestxray", "task_label"]

TASKS = ("finding", "covid", "viral")
REQUIRED = ("patientid", "finding", "view", "filename")
FRONTAL = {"pa", "ap"}  # first word of the view: PA, AP, AP Supine, AP semi erect, AP erect
NO_LABEL = {"", "todo", "unknown"}
# Flat (2020) findings -> their place in the later hierarchy.
PATHOGENS = {
    "Viral": ("COVID-19", "SARS", "MERS-CoV", "MERS", "Varicella", "Influenza", "Herpes", "H1N1"),
    "Bacterial": (
        "Streptococcus",
        "Klebsiella",
        "Mycoplasma",
        "Legionella",
        "Chlamydophila",
        "E.Coli",
        "Staphylococcus",
        "Nocardia",
        "MRSA",
    ),
    "Fungal": ("Pneumocystis", "Aspergillosis", "Candida"),
}
FLAT = {name.casefold(): ("Pneumonia", family, name) for family, names in PATHOGENS.items() for name in names}
FLAT |= {name.casefold(): ("Pneumonia", name) for name in ("Lipoid", "Aspiration")}
FLAT["pneumonia"] = ("Pneumonia",)


def metadata_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """The metadata CSV (registry `label_files`); ambiguity or absence is an error naming it."""
    return {"metadata": _require(Path(root), ("metadata.csv",), "metadata.csv")}


def finding_path(finding: str) -> tuple[str, ...]:
    """A finding as its hierarchy: split on '/', or a flat name placed by PATHOGENS ('COVID-19, ARDS' too)."""
    if "/" in finding:
        return tuple(part.strip() for part in finding.split("/") if part.strip())
    for part in (p.strip() for p in finding.split(",")):  # 2020 combinations such as "COVID-19, ARDS"
        for key in (part.casefold(), part.split()[0].casefold() if part else ""):  # "Herpes pneumonia"
            if key in FLAT:
                return FLAT[key]
    return (finding.strip(),)


def task_label(path: tuple[str, ...], task: str) -> tuple[str | None, str]:
    """The label of a finding under dataset.covid_task, or None with why it is left out."""
    if task == "finding":
        return path[-1], ""
    if path[0] != "Pneumonia":
        return None, f"left out: not pneumonia (dataset.covid_task: {task})"
    if task == "covid":
        return ("COVID-19" if "COVID-19" in path else "Other pneumonia"), ""
    family = path[1] if len(path) > 1 else ""
    if family in ("Viral", "Bacterial"):
        return family, ""
    return None, "left out: neither viral nor bacterial (dataset.covid_task: viral)"


def _row_fate(row: pd.Series, has_modality: bool, any_view: bool) -> str:
    """'' for an X-ray row to read, else why it is left out."""
    modality = row.get("modality", "").strip() if has_modality else "X-ray"
    if modality.casefold() != "x-ray" or row.get("folder", "").strip() == "volumes":
        return "left out: not X-ray (CT)"
    view = row["view"].strip()
    if not any_view and (not view or view.split()[0].casefold() not in FRONTAL):
        return "left out: not a frontal view (dataset.views chooses others)"
    if row["finding"].strip().casefold() in NO_LABEL:
        return "left out: no finding yet (todo / Unknown)"
    return ""


def read_covid_chestxray(root: Path, options: dict[str, Any]) -> KindRead:
    """Frontal X-ray records labelled by dataset.covid_task, patient id as group (registry `reader`)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; set dataset.source to the covid-chestxray-dataset folder")
    task = options["covid_task"]
    if task not in TASKS:
        raise SourceError(f"dataset.covid_task is {task!r}; use one of {list(TASKS)}")
    csv_path = metadata_files(root, options)["metadata"]
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    absent = [c for c in REQUIRED if c not in table.columns]
    if absent:
        raise SourceError(
            f"{csv_path}: missing column(s) {absent}; is this the covid-chestxray-dataset "
            "metadata.csv (patientid, finding, view, modality, folder, filename)?"
        )
    fates: dict[str, dict[str, Any]] = {}
    records, missing = [], 0
    for _, row in table.iterrows():
        finding = row["finding"].strip()
        fate = _row_fate(row, "modality" in table.columns, bool(options.get("views")))
        label = None
        if not fate:
            label, fate = task_label(finding_path(finding), task)
        if label is not None:
            image = csv_path.parent / (row.get("folder", "").strip() or "images") / row["filename"].strip()
            if image.is_file():
                records.append(
                    SourceRecord(
                        image=image,
                        label=label,
                        group=row["patientid"].strip() or None,
                        view=row["view"].strip() or None,
                    )
                )
                fate = label
            else:
                missing += 1
                fate = "left out: image absent"
        entry = fates.setdefault(finding, {})
        entry[fate] = entry.get(fate, 0) + 1
    records, warnings = _kept(records, missing, root, str(csv_path.parent))
    left = sum(
        n
        for entry in fates.values()
        for fate, n in entry.items()
        if fate.startswith("left out") and "absent" not in fate
    )
    if left:
        warnings.append(
            f"{left} of {len(table)} metadata.csv rows left out (CT, lateral views, todo findings, "
            f"dataset.covid_task {task}); summary.json seen.finding_rows says which"
        )
    return KindRead(records, warnings, root, {"finding_rows": dict(sorted(fates.items()))})
