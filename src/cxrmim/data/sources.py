"""Dataset layouts: the COVID-19 Radiography Database folder tree and CSV manifests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrmim.data.csvtext import (
    SourceError,
    column_positions,
    manifest_columns,
    read_manifest_table,
)
from cxrmim.data.tasks import fold

__all__ = [
    "KindRead",
    "SourceError",
    "SourceRecord",
    "apply_label_map",
    "column_positions",
    "covid19_radiography_records",
    "filter_views",
    "kaggle_folders",
    "keep_labels",
    "manifest_columns",
    "manifest_records",
    "map_label",
    "read_covid19_radiography",
    "read_manifest",
    "read_manifest_table",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
KAGGLE_FOLDER = "COVID-19_Radiography_Dataset"

# Class folder names across releases (case-insensitive) -> label used in the records.
# v1/v2 used `COVID-19` and `NORMAL`; v4+ uses the names on the right.
KAGGLE_CLASSES = {
    "covid": "COVID",
    "covid-19": "COVID",
    "lung_opacity": "Lung_Opacity",
    "normal": "Normal",
    "viral pneumonia": "Viral Pneumonia",
}
# Every release has these two; Lung_Opacity only appeared in v4.
KAGGLE_REQUIRED = ("COVID", "Normal")

MAX_LISTED_PROBLEMS = 10


@dataclass(frozen=True)
class SourceRecord:
    """One image of a source dataset with its label and optional mask, patient group, view and report."""

    image: Path
    label: str
    mask: Path | None = None
    group: str | None = None
    view: str | None = None
    report: str | None = None
    official: str | None = None  # the dataset's official split part (train / test), when it has one
    uncertain: tuple[str, ...] = ()  # findings labelled uncertain (left out of training and metrics)
    # Lesion mask as SIIM RLE strings on the image's own grid (cxrmim.data.rle; union of all, () = annotated and
    # empty); None = the source has no lesion annotation. Strings, not arrays: a 1024x1024 mask per record would
    # hold gigabytes before any image is read.
    lesion_rle: tuple[str, ...] | None = None


@dataclass
class KindRead:
    """What a dataset kind's reader returns (registry.DatasetKind.reader): records, warnings, path base, `seen`."""

    records: list[SourceRecord]
    warnings: list[str]
    base: Path  # what `prepare.source_paths: relative` paths are relative to
    seen: dict[str, Any] = field(default_factory=dict)  # what became of its folders, columns, rows (summary.json)


# ----------------------------------------------------------------------------- Kaggle layout


KAGGLE_BY_FOLD = {fold(name): label for name, label in KAGGLE_CLASSES.items()}


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    """Known class labels and the sub-folders of `folder` whose names are a spelling of them."""
    found: dict[str, list[Path]] = {}
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        label = KAGGLE_BY_FOLD.get(fold(child.name))
        if child.is_dir() and label:
            found.setdefault(label, []).append(child)
    return found


def _find_kaggle_root(root: Path) -> Path:
    """Locate the folder holding the class folders: root, root/COVID-19_Radiography_Dataset or one level down."""
    candidates = [root, root / KAGGLE_FOLDER]
    candidates += sorted(child for child in root.iterdir() if child.is_dir()) if root.is_dir() else []
    for candidate in candidates:
        if len(_class_folders(candidate)) >= 2:
            return candidate
    return root


def kaggle_folders(root: Path) -> dict[str, str]:
    """What became of every sub-folder of the database's class-folder level: 'class <label>' or why it is ignored."""
    base = _find_kaggle_root(Path(root))
    classes = {child: label for label, paths in _class_folders(base).items() for child in paths}
    return {
        child.name: f"class {classes[child]}"
        if child in classes
        else "ignored: not a class folder of the database (known: "
        + ", ".join(sorted(set(KAGGLE_CLASSES.values())))
        + ")"
        for child in sorted(base.iterdir())
        if child.is_dir() and not child.name.startswith(".")
    }


def _image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name (hidden files skipped)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _class_records(label: str, folder: Path) -> tuple[list[SourceRecord], list[str]]:
    """Records and warnings for one class folder (new layout images/ + masks/, or old flat layout)."""
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    images = _image_files(image_dir)
    if not images:
        return [], [f"{label}: no images found in {image_dir}"]
    mask_dir = folder / "masks"
    if not mask_dir.is_dir():
        return [SourceRecord(image=p, label=label) for p in images], [
            f"{label}: no masks folder; {len(images)} images have no lung mask (see patch_validity.no_mask_policy)"
        ]
    # masks share the image's file name; fall back to the same stem with another suffix
    masks = {p.name: p for p in _image_files(mask_dir)}
    masks_by_stem = {p.stem: p for p in masks.values()}
    records = [SourceRecord(image=p, label=label, mask=masks.get(p.name) or masks_by_stem.get(p.stem)) for p in images]
    warnings = []
    missing = sum(r.mask is None for r in records)
    if missing:
        warnings.append(
            f"{label}: {missing} of {len(images)} images have no lung mask (see patch_validity.no_mask_policy)"
        )
    orphans = len(masks) - (len(records) - missing)
    if orphans > 0:
        warnings.append(f"{label}: {orphans} masks have no matching image and are ignored")
    return records, warnings


def covid19_radiography_records(root: Path) -> tuple[list[SourceRecord], list[str]]:
    """Records (sorted by label, then file name) and warnings for the COVID-19 Radiography Database."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError(
            f"{root}: not a folder; set dataset.source to the extracted {KAGGLE_FOLDER} folder or its archive"
        )
    base = _find_kaggle_root(root)
    folders = _class_folders(base)
    repeated = {label: paths for label, paths in folders.items() if len(paths) > 1}
    if repeated:
        label, paths = next(iter(sorted(repeated.items())))
        raise SourceError(
            f"{base}: folders {', '.join(p.name for p in paths)} are all the class {label} (names differing only in "
            "spelling or release); merge their images into one folder or move the extra one out of the dataset"
        )
    classes = {label: paths[0] for label, paths in folders.items()}
    missing = [label for label in KAGGLE_REQUIRED if label not in classes]
    if missing:
        found = sorted(child.name for child in base.iterdir()) or ["nothing"]
        raise SourceError(
            f"{root}: not a COVID-19 Radiography Database: class folders {missing} missing "
            f"(looked in {base}, found: {', '.join(found)}); point dataset.source at the extracted "
            f"{KAGGLE_FOLDER} folder (with COVID, Lung_Opacity, Normal, Viral Pneumonia)"
        )
    records: list[SourceRecord] = []
    absent = sorted(set(KAGGLE_CLASSES.values()) - set(classes))
    warnings = [f"{label}: class folder missing (older release?)" for label in absent]
    warnings += [f"folder {name}: {what}" for name, what in kaggle_folders(root).items() if what.startswith("ignored")]
    for label, folder in sorted(classes.items()):
        class_records, class_warnings = _class_records(label, folder)
        records += class_records
        warnings += class_warnings
    return sorted(records, key=lambda r: (r.label, r.image.name)), warnings


def read_covid19_radiography(root: Path, options: dict[str, Any]) -> KindRead:
    """The `covid19_radiography` kind: its records and what became of every class-level folder."""
    records, warnings = covid19_radiography_records(root)
    return KindRead(records, warnings, Path(root), {"folders": kaggle_folders(root)})


# ----------------------------------------------------------------------------- CSV manifests


def _cell(row: list[str], columns: dict[str, int], key: str) -> str | None:
    """Trimmed value of a canonical column in a row, or None when absent or empty."""
    position = columns.get(key)
    value = row[position] if position is not None and position < len(row) else ""
    return value.strip() or None


def _resolve(folder: Path, value: str) -> Path:
    """A manifest path: absolute as given, relative to the manifest's folder otherwise."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _manifest_row(folder: Path, row: list[str], columns: dict[str, int]) -> tuple[SourceRecord | None, str | None]:
    """Turn one CSV row into a record, or return the problem with the fix."""
    image, label = _cell(row, columns, "image"), _cell(row, columns, "label")
    if image is None:
        return None, "empty image path; fill it in or remove the row"
    if label is None:
        return None, "empty label; fill it in or remove the row"
    image_path = _resolve(folder, image)
    if not image_path.is_file():
        return None, f"image file {image_path} not found; fix the path (relative to the CSV's folder) or remove the row"
    mask = _cell(row, columns, "mask")
    mask_path = _resolve(folder, mask) if mask else None
    if mask_path is not None and not mask_path.is_file():
        return None, f"mask file {mask_path} not found; fix the path, leave the mask cell empty, or remove the row"
    record = SourceRecord(
        image=image_path,
        label=label,
        mask=mask_path,
        group=_cell(row, columns, "patient_id"),
        view=_cell(row, columns, "view"),
        report=_cell(row, columns, "report"),
    )
    return record, None


def _raise_problems(csv_path: Path, problems: list[str]) -> None:
    """Raise one SourceError listing the first problems of a manifest."""
    if not problems:
        return
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    raise SourceError(f"{csv_path}: {len(problems)} bad rows:\n  " + "\n  ".join(shown) + tail)


def manifest_records(csv_path: Path) -> list[SourceRecord]:
    """Records from a CSV manifest with columns image,label[,mask,patient_id,view,report], in file order."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: manifest not found; set dataset.source to an existing CSV file")
    header, rows = read_manifest_table(csv_path)
    columns = column_positions(csv_path, header)
    records: list[SourceRecord] = []
    problems: list[str] = []
    for row_number, (line, row) in enumerate(rows, start=1):
        record, problem = _manifest_row(csv_path.parent, row, columns)
        if problem:
            problems.append(f"row {row_number} (line {line}): {problem}")
        else:
            records.append(record)
    _raise_problems(csv_path, problems)
    if not records:
        raise SourceError(f"{csv_path}: the manifest has no rows; add one row per image")
    return records


def read_manifest(root: Path, options: dict[str, Any]) -> KindRead:
    """The `manifest` kind: its rows (paths relative to the CSV's folder) and what became of every column."""
    records, columns = manifest_records(root), manifest_columns(root)
    ignored = [name for name, what in columns.items() if what.startswith("ignored")]
    warnings = (
        [
            f"manifest columns {ignored} are not used (used: image, label, mask, patient_id, view, report and "
            "their usual spellings)"
        ]
        if ignored
        else []
    )
    return KindRead(records, warnings, Path(root).parent, {"columns": columns})


# ----------------------------------------------------------------------------- record transforms


def map_label(label: str, label_map: dict[str, str]) -> str:
    """A label renamed by `dataset.label_map`; the key "*" renames every label not listed (else it is kept)."""
    return label_map.get(label, label_map.get("*", label))


def apply_label_map(records: Iterable[SourceRecord], label_map: dict[str, str]) -> list[SourceRecord]:
    """Rename or merge labels (map_label); e.g. {"No Finding": "No Finding", "*": "Finding"} makes a binary task."""
    return [dataclasses.replace(r, label=map_label(r.label, label_map)) for r in records]


def keep_labels(records: Iterable[SourceRecord], labels: list[str]) -> tuple[list[SourceRecord], int]:
    """Keep records whose (mapped) label is listed, e.g. Pleural Effusion vs No Finding; empty list keeps all."""
    records = list(records)
    if not labels:
        return records, 0
    kept = [r for r in records if r.label in set(labels)]
    return kept, len(records) - len(kept)


def _view_keys(view: str | None) -> set[str]:
    """Normalised forms a view matches: the whole value and its first word ('AP Supine' -> AP)."""
    if not view or not view.strip():
        return set()
    words = view.strip().casefold().split()
    return {" ".join(words), words[0]}


def filter_views(records: Iterable[SourceRecord], views: list[str]) -> tuple[list[SourceRecord], int]:
    """Keep records whose view is listed (case-insensitive, whole value or first word); empty list keeps all."""
    records = list(records)
    wanted = {" ".join(v.strip().casefold().split()) for v in views if v and v.strip()}
    if not wanted:
        return records, 0
    kept = [r for r in records if _view_keys(r.view) & wanted]
    return kept, len(records) - len(kept)
