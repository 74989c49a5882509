"""Tests for cxrmim.data.sources: the Kaggle COVID-19 Radiography layout, CSV manifests, label maps, views."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrmim.data.archive import safe_extract
from cxrmim.data.readers import check_mask_fits, read_grey, read_mask
from cxrmim.data.sources import (
    SourceError,
    SourceRecord,
    apply_label_map,
    covid19_radiography_records,
    filter_views,
    manifest_records,
)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


# ----------------------------------------------------------------------------- helpers


def _png(path: Path, size: int, value: int = 128) -> Path:
    """Write a small constant grey PNG (size x size), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


def _kaggle_tree(root: Path) -> Path:
    """A tiny current-release tree: 299x299 images, 256x256 masks, Viral Pneumonia without masks."""
    base = root / "COVID-19_Radiography_Dataset"
    for label, count in (("COVID", 3), ("Lung_Opacity", 2), ("Normal", 2), ("Viral Pneumonia", 2)):
        for i in range(1, count + 1):
            _png(base / label / "images" / f"{label}-{i}.png", 299)
            lacks_mask = label == "Viral Pneumonia" or (label == "COVID" and i == 3)
            if not lacks_mask:
                _png(base / label / "masks" / f"{label}-{i}.png", 256, 255)
        (base / f"{label}.metadata.xlsx").write_bytes(b"not really a spreadsheet")
    (base / "README.md.txt").write_text("readme")
    return base


def _zip_folder(folder: Path, archive: Path) -> Path:
    """Zip a folder with its own name as the top-level entry."""
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(folder.rglob("*")):
            handle.write(path, path.relative_to(folder.parent).as_posix())
    return archive


def _csv(path: Path, text: str) -> Path:
    """Write a CSV file from dedented text."""
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


# ----------------------------------------------------------------------------- Kaggle layout


def test_kaggle_zip_extract_and_parse(tmp_path):
    archive = _zip_folder(_kaggle_tree(tmp_path / "build"), tmp_path / "archive.zip")
    extracted = safe_extract(archive, tmp_path / "raw")
    records, warnings = covid19_radiography_records(extracted)  # the folder containing the dataset folder
    assert len(records) == 9
    assert [r.label for r in records] == ["COVID"] * 3 + ["Lung_Opacity"] * 2 + ["Normal"] * 2 + ["Viral Pneumonia"] * 2
    assert records == sorted(records, key=lambda r: (r.label, r.image.name))
    missing = {r.image.name for r in records if r.mask is None}
    assert missing == {"COVID-3.png", "Viral Pneumonia-1.png", "Viral Pneumonia-2.png"}
    assert any(w.startswith("Viral Pneumonia: no masks folder; 2 images have no lung mask") for w in warnings)
    assert any(w.startswith("COVID: 1 of 3 images have no lung mask") for w in warnings)
    assert all(r.group is None and r.view is None for r in records)
    first = records[0]
    image, mask = read_grey(first.image), read_mask(first.mask)
    assert image.shape == (299, 299) and mask.shape == (256, 256) and mask.all()
    check_mask_fits(image.shape, mask.shape, first.image, first.mask)


def test_kaggle_dataset_folder_itself(tmp_path):
    base = _kaggle_tree(tmp_path)
    records, _ = covid19_radiography_records(base)
    assert len(records) == 9 and all(r.image.is_relative_to(base) for r in records)


def test_kaggle_old_flat_layout(tmp_path):
    base = tmp_path / "COVID-19 Radiography Database"
    for folder in ("COVID-19", "NORMAL", "Viral Pneumonia"):
        _png(base / folder / f"{folder} (1).png", 16)
    records, warnings = covid19_radiography_records(tmp_path)
    assert [r.label for r in records] == ["COVID", "Normal", "Viral Pneumonia"]
    assert all(r.mask is None for r in records)
    assert any("Lung_Opacity: class folder missing" in w for w in warnings)
    assert sum("no masks folder" in w for w in warnings) == 3


def test_kaggle_missing_classes_lists_found(tmp_path):
    _png(tmp_path / "COVID" / "images" / "a.png", 8)
    (tmp_path / "something_else").mkdir()
    with pytest.raises(SourceError, match="Normal") as error:
        covid19_radiography_records(tmp_path)
    assert "something_else" in str(error.value) and "COVID" in str(error.value)


# ----------------------------------------------------------------------------- manifests


def test_manifest_relative_absolute_and_optional_columns(tmp_path):
    _png(tmp_path / "imgs" / "a.png", 8)
    _png(tmp_path / "masks" / "a.png", 8)
    absolute = _png(tmp_path / "elsewhere" / "b.png", 8)
    csv_path = _csv(
        tmp_path / "manifest.csv",
        f"""
        image,label,mask,patient_id,view,report,license
        imgs/a.png,COVID-19,masks/a.png,p1,PA,ground glass,CC BY
        {absolute},Normal,,,,,
        """,
    )
    a, b = manifest_records(csv_path)
    assert a == SourceRecord(
        tmp_path / "imgs" / "a.png", "COVID-19", tmp_path / "masks" / "a.png", "p1", "PA", "ground glass"
    )
    assert b == SourceRecord(absolute, "Normal")


def test_manifest_missing_column(tmp_path):
    csv_path = _csv(tmp_path / "m.csv", "image,diagnosis\na.png,x")
    with pytest.raises(SourceError, match="missing required column label") as error:
        manifest_records(csv_path)
    assert str(csv_path) in str(error.value) and "image, diagnosis" in str(error.value)


def test_manifest_finding_alias(tmp_path):
    _png(tmp_path / "a.png", 8)
    (record,) = manifest_records(_csv(tmp_path / "m.csv", "Image,Finding\na.png,Pneumonia"))
    assert record.label == "Pneumonia"


def test_manifest_row_errors_name_row_and_fix(tmp_path):
    _png(tmp_path / "a.png", 8)
    csv_path = _csv(
        tmp_path / "m.csv",
        """
        image,label,mask
        a.png,Normal,
        missing.png,Normal,
        a.png,,
        a.png,COVID,nomask.png
        """,
    )
    with pytest.raises(SourceError) as error:
        manifest_records(csv_path)
    message = str(error.value)
    assert str(csv_path) in message and "3 bad rows" in message
    assert "row 2 (line 3): image file" in message and "missing.png not found" in message
    assert "row 3 (line 4): empty label" in message
    assert "row 4 (line 5): mask file" in message and "nomask.png" in message


def test_manifest_empty(tmp_path):
    with pytest.raises(SourceError, match="no rows"):
        manifest_records(_csv(tmp_path / "m.csv", "image,label"))


# ----------------------------------------------------------------------------- transforms


def test_apply_label_map_renames_and_merges():
    records = [SourceRecord(Path(f"{i}.png"), label) for i, label in enumerate(["COVID", "Viral Pneumonia", "Normal"])]
    mapped = apply_label_map(records, {"COVID": "COVID-19", "Viral Pneumonia": "Pneumonia"})
    assert [r.label for r in mapped] == ["COVID-19", "Pneumonia", "Normal"]
    assert [r.image for r in mapped] == [r.image for r in records]


def test_filter_views_case_insensitive():
    views = ["PA", "ap", "AP Supine", None, "L"]
    records = [SourceRecord(Path(f"{i}.png"), "x", view=v) for i, v in enumerate(views)]
    kept, dropped = filter_views(records, ["pa", "AP"])
    assert [r.view for r in kept] == ["PA", "ap", "AP Supine"] and dropped == 2
    assert filter_views(records, []) == (records, 0)
    kept, dropped = filter_views(records, ["ap supine"])
    assert [r.view for r in kept] == ["AP Supine"] and dropped == 4


# ----------------------------------------------------------------------------- real manifests


def _real_manifest(name: str) -> Path:
    """Path to a shared real-data manifest, or skip when the folder is absent."""
    path = REALDATA / name / "manifest.csv"
    if not path.is_file():
        pytest.skip(f"real data manifest not found at {path} (shared/realdata is optional)")
    return path


@pytest.mark.realdata
def test_real_cohen_manifest_with_masks():
    records = manifest_records(_real_manifest("cohen_covid_lungmasks"))
    assert len(records) == 233
    assert sum(r.label == "COVID-19" for r in records) == 215
    assert all(r.mask is not None and r.group for r in records)
    for record in records[:: len(records) // 4]:
        image, mask = read_grey(record.image), read_mask(record.mask)
        assert image.ndim == 2 and max(image.shape) <= 512 and 0.0 <= image.min() < image.max() <= 1.0
        check_mask_fits(image.shape, mask.shape, record.image, record.mask)
        assert 0.05 < mask.mean() < 0.8  # lungs cover a plausible share of the image
    frontal, dropped = filter_views(records, ["PA", "AP"])
    assert dropped == len(records) - len(frontal) and len(frontal) > 200


@pytest.mark.realdata
def test_real_kermany_manifest_without_masks():
    records = manifest_records(_real_manifest("kermany_pediatric_nomasks"))
    assert len(records) == 108 and all(r.mask is None for r in records)
    assert {r.label for r in records} == {"Normal", "Viral Pneumonia"}
    for record in records[:3]:
        assert read_grey(record.image).ndim == 2
