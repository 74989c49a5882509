"""RSNA Pneumonia Detection Challenge (Kaggle, stage 2) as downloaded: `stage_2_train_labels.csv` and
`stage_2_train_images/<patientId>.dcm`.

The CSV has one row per box (patientId, x, y, width, height, Target): several rows for a patient with several
opacities, one row with an empty box for a patient without. One image per patient, labelled `Pneumonia` when any
of its rows has Target 1, else `Normal`; the patient id groups the split. The boxes are not kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.data.public import _kept, _require
from cxrmim.data.readers import dicom_view
from cxrmim.data.sources import KindRead, SourceError, SourceRecord

__all__ = ["COLUMNS", "read_rsna", "rsna_files"]

LABELS_CSV = "stage_2_train_labels.csv"
IMAGES = "stage_2_train_images"
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
POSITIVE, NEGATIVE = "Pneumonia", "Normal"


def rsna_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """The label CSV (registry `label_files`); ambiguity or absence is an error naming it."""
    return {"labels": _require(Path(root), (LABELS_CSV,), LABELS_CSV)}


def _targets(csv_path: Path) -> tuple[dict[str, int], int, int]:
    """patientId -> 1 when any of its rows has Target 1 (a box), else 0, in file order; rows; boxes."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    absent = [c for c in COLUMNS if c not in table.columns]
    if absent:
        raise SourceError(
            f"{csv_path}: missing column(s) {absent}; is this the RSNA {LABELS_CSV} (columns {', '.join(COLUMNS)})?"
        )
    target = table["Target"].str.strip()
    bad = sorted(set(target) - {"0", "1"})
    if bad:
        raise SourceError(f"{csv_path}: Target holds {bad[:5]}; it must be 1 (a box) or 0 (no box)")
    boxless = (target == "1") & (table["width"].str.strip() == "")
    if boxless.any():  # a positive row without its box is a damaged file, not a negative
        raise SourceError(
            f"{csv_path}: {int(boxless.sum())} rows with Target 1 have no box (x, y, width, height); "
            "restore the file as downloaded"
        )
    targets: dict[str, int] = {}
    for patient, value in zip(table["patientId"].str.strip(), target):
        targets[patient] = max(targets.get(patient, 0), int(value))
    return targets, len(table), int((target == "1").sum())


def read_rsna(root: Path, options: dict[str, Any]) -> KindRead:
    """One record per patient (Pneumonia / Normal), its DICOM's ViewPosition as the view (registry `reader`)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; set dataset.source to the extracted RSNA pneumonia folder")
    csv_path = rsna_files(root, options)["labels"]
    images = csv_path.parent / IMAGES
    if not images.is_dir():
        raise SourceError(f"{csv_path.parent}: no {IMAGES}/ folder next to {LABELS_CSV}; extract the images there")
    targets, rows, boxes = _targets(csv_path)
    records, missing = [], 0
    for patient, target in targets.items():
        image = images / f"{patient}.dcm"
        if not image.is_file():
            missing += 1
            continue
        records.append(
            SourceRecord(image=image, label=POSITIVE if target else NEGATIVE, group=patient, view=dicom_view(image))
        )
    records, warnings = _kept(records, missing, root, str(images))
    seen = {
        "rows": {
            "rows (one per box, or one without a box)": rows,
            "boxes": boxes,
            "patients": len(targets),
            "patients whose image is absent": missing,
        }
    }
    return KindRead(records, warnings, root, seen)
