"""The SIIM-ACR pneumothorax kind on a fake Kaggle tree with the real column layout: a leading-space header, several
rows for one image, repeated rows, `-1` rows, DICOMs in study/series folders; prepared with its lesion masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_dataset_kinds import SETTINGS, write_dicom

from cxrmim.data.prepare import prepare
from cxrmim.data.records import source_records
from cxrmim.data.rle import encode
from cxrmim.data.source_check import check_source
from cxrmim.data.sources import SourceError

HEADER = "ImageId, EncodedPixels\n"  # as downloaded: the second name starts with a space
SIZE = 64  # the fake DICOMs' side (write_dicom's texture); real ones are 1024


def lesions() -> dict[str, list[np.ndarray]]:
    """Per image, the regions drawn here (several for 'a', none for the negatives)."""
    a1, a2, c1 = (np.zeros((SIZE, SIZE), dtype=bool) for _ in range(3))
    a1[10:30, 5:20] = True  # a tall region (runs down columns)
    a2[40:44, 30:60] = True  # a wide one in the same image
    c1[0:64, 50:52] = True  # whole columns: one run crossing column boundaries
    return {"1.2.a": [a1, a2], "1.2.b": [], "1.2.c": [c1], "1.2.d": []}


def siim_tree(root: Path) -> Path:
    """Kaggle's layout: train-rle.csv and dicom-images-train/<study>/<series>/<ImageId>.dcm (1.2.e has no DICOM)."""
    regions = lesions()
    lines = [
        f"1.2.a, {encode(regions['1.2.a'][0])}",
        "1.2.b, -1",
        f"1.2.c, {encode(regions['1.2.c'][0])}",
        f"1.2.a, {encode(regions['1.2.a'][1])}",
        f"1.2.c, {encode(regions['1.2.c'][0])}",  # the release repeats some rows verbatim
        "1.2.d, -1",
        "1.2.e, -1",
    ]
    (root / "siim").mkdir(parents=True)
    (root / "siim" / "train-rle.csv").write_text(HEADER + "\n".join(lines) + "\n")
    for i, image_id in enumerate(regions):
        folder = root / "siim" / "dicom-images-train" / f"study{i}" / f"series{i}"
        folder.mkdir(parents=True)
        write_dicom(folder / f"{image_id}.dcm", i, "PA")
    test_folder = root / "siim" / "dicom-images-test" / "s" / "t"
    test_folder.mkdir(parents=True)
    write_dicom(test_folder / "1.2.test.dcm", 9, "AP")
    return root


def dataset(root: Path) -> dict:
    """A binary-task dataset section on the tree."""
    return {"name": "siim", "kind": "siim_acr", "source": str(root), "task": "binary", "positive": "Pneumothorax"}


def test_one_record_per_image_with_its_rle_rows(tmp_path):
    root = siim_tree(tmp_path)
    seen: dict = {}
    records, warnings, _ = source_records("siim_acr", root, dataset(root), seen)
    assert [(r.group, r.label, r.view) for r in records] == [
        ("1.2.a", "Pneumothorax", "PA"),
        ("1.2.b", "Normal", "PA"),
        ("1.2.c", "Pneumothorax", "PA"),
        ("1.2.d", "Normal", "PA"),
    ]
    assert [len(r.lesion_rle) for r in records] == [2, 0, 1, 0]  # the repeated row counted once
    assert seen["label_files"] == {"labels": "siim/train-rle.csv"}
    assert seen["rows"]["rows (one per region, or -1)"] == 7 and seen["rows"]["regions"] == 3
    assert seen["rows"]["images whose DICOM is absent"] == 1 and seen["rows"]["DICOM files without a row"] == 1
    assert any("1 images listed in the CSVs are absent" in w for w in warnings)
    check_source(dataset(root))


def test_prepare_writes_the_union_of_regions_as_lesion_masks(tmp_path):
    from cxrmim.data.acquire import acquire

    root = siim_tree(tmp_path / "src")
    marker = tmp_path / "source.json"
    acquire(dataset(root), tmp_path / "raw", marker)
    settings = {**SETTINGS, "image_size": SIZE}  # the DICOMs' own size: the grid keeps every mask pixel
    summary = prepare(marker, dataset(root), settings, tmp_path / "out")
    assert summary["labels"] == {"Normal": 2, "Pneumothorax": 2} and summary["n_with_lesion"] == 2
    lesion = np.load(tmp_path / "out" / "lesion_masks.npy")
    regions = lesions()
    expected = [np.logical_or.reduce(regions[k]) if regions[k] else np.zeros((SIZE, SIZE), bool) for k in regions]
    assert lesion.shape == (4, SIZE, SIZE)
    assert [m.astype(bool).tolist() for m in lesion] == [m.tolist() for m in expected]
    assert not np.load(tmp_path / "out" / "masks.npy").any()  # the lung mask channel is not the lesion one
    small = prepare(marker, dataset(root), {**SETTINGS, "image_size": 32}, tmp_path / "small")
    assert np.load(tmp_path / "small" / "lesion_masks.npy")[0, 5:15, 3:10].all() and small["n_with_lesion"] == 2


def test_rsna_caches_stay_without_lesion_masks(tmp_path):
    from test_dataset_kinds import rsna_tree

    from cxrmim.data.acquire import acquire

    root = rsna_tree(tmp_path / "rsna")
    marker = tmp_path / "source.json"
    section = {"name": "rsna", "kind": "rsna_pneumonia", "source": str(root), "task": "binary", "positive": "Pneumonia"}
    acquire(section, tmp_path / "raw", marker)
    summary = prepare(marker, section, SETTINGS, tmp_path / "out")
    # Every cache has the file (the prepare rule's outputs are fixed): an empty (0,) array for kinds without lesions.
    assert np.load(tmp_path / "out" / "lesion_masks.npy").shape == (0,) and "n_with_lesion" not in summary


def test_bad_layouts_name_the_fix(tmp_path):
    root = siim_tree(tmp_path)
    csv = root / "siim" / "train-rle.csv"
    csv.write_text("ImageId,Mask\n1.2.a,-1\n")
    with pytest.raises(SourceError, match=r"missing column\(s\) \['EncodedPixels'\]"):
        source_records("siim_acr", root, dataset(root))
    csv.write_text(HEADER + "1.2.a, 12 x\n")
    with pytest.raises(SourceError, match="line 2 .*neither -1 nor run-length pairs"):
        source_records("siim_acr", root, dataset(root))
    csv.write_text("IMAGEID,encoded_pixels\n1.2.a,-1\n")  # spelling-insensitive columns
    assert [r.label for r in source_records("siim_acr", root, dataset(root))[0]] == ["Normal"]
    (root / "siim" / "train-rle.csv").unlink()
    with pytest.raises(SourceError, match="train-rle.csv not found"):
        check_source(dataset(root))


def test_an_rle_that_does_not_fit_its_image_fails_prepare(tmp_path):
    from cxrmim.data.acquire import acquire

    root = siim_tree(tmp_path / "src")
    csv = root / "siim" / "train-rle.csv"
    csv.write_text(HEADER + f"1.2.a, {SIZE * SIZE} 5\n1.2.b, -1\n")  # starts past the 64x64 image's last pixel
    marker = tmp_path / "source.json"
    acquire(dataset(root), tmp_path / "raw", marker)
    with pytest.raises(ValueError, match="lesion mask does not fit the 64x64 image"):
        prepare(marker, dataset(root), SETTINGS, tmp_path / "out")
