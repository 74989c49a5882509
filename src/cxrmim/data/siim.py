"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019, stage 1) as downloaded: `train-rle.csv` and
`dicom-images-train/<study>/<series>/<ImageId>.dcm`.

The CSV has columns `ImageId` and ` EncodedPixels` (a leading space in the real header; columns are matched
ignoring case, spaces and separators), one row per pneumothorax region in SIIM's relative column-major RLE
(cxrmim.data.rle), `-1` for an image without pneumothorax; one image may have several rows (their union is its
mask) and some rows repeat. One record per image: label `Pneumothorax` when any row has a mask, else `Normal`
(so a classification task works too), its RLE rows as the lesion mask (decoded at load time, on the DICOM's own
grid). The ImageId groups the split (the stage-1 release carries no patient id we read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.data.public import _kept, _require
from cxrmim.data.readers import dicom_view
from cxrmim.data.rle import NO_MASK
from cxrmim.data.sources import KindRead, SourceError, SourceRecord
from cxrmim.data.tasks import fold

__all__ = ["COLUMNS", "read_siim", "siim_files"]

LABELS_CSV = "train-rle.csv"
COLUMNS = ("ImageId", "EncodedPixels")
POSITIVE, NEGATIVE = "Pneumothorax", "Normal"


def siim_files(root: Path, options: dict[str, Any]) -> dict[str, Path | None]:
    """The RLE CSV (registry `label_files`); ambiguity or absence is an error naming it."""
    return {"labels": _require(Path(root), (LABELS_CSV,), LABELS_CSV)}


def _rle_rows(csv_path: Path) -> tuple[dict[str, list[str]], int]:
    """ImageId -> its masked rows' RLE strings ([] for '-1' only), in file order; the number of rows."""
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    by_fold = {fold(name).replace(" ", ""): name for name in table.columns}
    absent = [c for c in COLUMNS if c.lower() not in by_fold]
    if absent:
        raise SourceError(
            f"{csv_path}: missing column(s) {absent} (found {list(table.columns)}); is this the SIIM-ACR "
            f"{LABELS_CSV} (columns {', '.join(COLUMNS)})?"
        )
    ids = table[by_fold["imageid"]].str.strip()
    rles = table[by_fold["encodedpixels"]].str.strip()
    rows: dict[str, list[str]] = {}
    for line, (image, rle) in enumerate(zip(ids, rles), start=2):
        if not image:
            raise SourceError(f"{csv_path}: line {line} has no ImageId; restore the file as downloaded")
        masks = rows.setdefault(image, [])
        if rle in ("", NO_MASK):
            continue
        if not rle.replace(" ", "").isdigit():
            raise SourceError(
                f"{csv_path}: line {line} ({image}): EncodedPixels {rle[:40]!r} is neither -1 nor run-length "
                "pairs; restore the file as downloaded"
            )
        if rle not in masks:  # the release repeats some rows verbatim; a repeat adds nothing to the union
            masks.append(rle)
    return rows, len(table)


def _dicoms(folder: Path) -> dict[str, Path]:
    """ImageId (file stem) -> its DICOM anywhere under folder; one id in two places is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.dcm")):
        if path.stem in found:
            raise SourceError(
                f"{folder}: two DICOM files for image {path.stem}: {found[path.stem]} and {path}; keep one"
            )
        found[path.stem] = path
    return found


def read_siim(root: Path, options: dict[str, Any]) -> KindRead:
    """One record per image of train-rle.csv whose DICOM exists (registry `reader`)."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; set dataset.source to the extracted SIIM-ACR folder")
    csv_path = siim_files(root, options)["labels"]
    rows, n_rows = _rle_rows(csv_path)
    # The images lie in dicom-images-train/ next to the CSV as downloaded; re-packaged copies move them around.
    images = _dicoms(root)
    records, missing = [], 0
    for image_id, rles in rows.items():
        image = images.get(image_id)
        if image is None:
            missing += 1
            continue
        records.append(
            SourceRecord(
                image=image,
                label=POSITIVE if rles else NEGATIVE,
                group=image_id,
                view=dicom_view(image),
                lesion_rle=tuple(rles),
            )
        )
    records, warnings = _kept(records, missing, root, str(root))
    unlabelled = len(set(images) - set(rows))
    if unlabelled:
        warnings.append(f"{unlabelled} DICOM files have no row in {LABELS_CSV} (e.g. the test images) and are not used")
    seen = {
        "rows": {
            "rows (one per region, or -1)": n_rows,
            "regions": sum(len(r) for r in rows.values()),
            "images": len(rows),
            "images with pneumothorax": sum(bool(r) for r in rows.values()),
            "images whose DICOM is absent": missing,
            "DICOM files without a row": unlabelled,
        }
    }
    return KindRead(records, warnings, root, seen)
