"""Public dataset kinds read from small fake trees in their official layouts (MIMIC-CXR-JPG, CheXpert, NIH)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrmim.data.prepare import prepare
from cxrmim.data.public import CHEXPERT_FINDINGS, NIH_FINDINGS, public_records, report_sections
from cxrmim.data.sources import SourceError
from cxrmim.data.splits import split_dataset
from cxrmim.data.tasks import UNCERTAIN

PREPARE = {"image_size": 16, "on_bad_image": "fail", "workers": 1}


def write_image(path: Path, seed: int) -> None:
    """A small textured grey image (PNG or JPEG by suffix), distinct per seed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse = np.random.default_rng(seed).integers(0, 255, (5, 5)).astype(np.uint8)
    Image.fromarray(coarse).resize((40, 40), Image.Resampling.BILINEAR).save(path)


def chexpert_tree(root: Path, n_train: int = 8, skip: int | None = None) -> Path:
    """CheXpert-v1.0-small with train.csv and valid.csv; image `skip` of train listed but absent."""
    base = root / "CheXpert-v1.0-small"
    for part, n, offset in (("train", n_train, 0), ("valid", 2, 100)):
        rows = []
        for i in range(n):
            rel = f"CheXpert-v1.0-small/{part}/patient{offset + i // 2:05d}/study1/view{i % 2 + 1}_frontal.jpg"
            if i != skip or part != "train":
                write_image(root / rel, offset + i)
            row = {
                "Path": rel,
                "Sex": "F",
                "Age": "50",
                "Frontal/Lateral": "Frontal" if i % 2 == 0 else "Lateral",
                "AP/PA": "AP" if i % 2 == 0 else "",
            }
            row.update(dict.fromkeys(["No Finding", *CHEXPERT_FINDINGS], ""))
            row["Edema"] = "1.0" if i % 3 == 0 else "0.0"
            row["Cardiomegaly"] = (
                "-1.0" if i % 4 == 1 else ("1.0" if (part, i) in (("train", 2), ("train", 4), ("valid", 0)) else "")
            )
            row["No Finding"] = "1.0" if i % 3 else ""
            rows.append(row)
        pd.DataFrame(rows).to_csv(base / f"{part}.csv", index=False)
    return root


def test_chexpert_labels_views_patients_uncertain_policy_and_official_split(tmp_path: Path):
    root = chexpert_tree(tmp_path / "cx", skip=3)
    records, warnings = public_records("chexpert", root, "ignore")
    assert len(records) == 9 and any("1 images" in w for w in warnings)  # the absent image is skipped
    first = records[0]
    assert first.label == "Edema" and first.view == "AP" and first.group == "patient00000" and first.official == "train"
    assert records[1].view == "Lateral" and records[1].uncertain == ("Cardiomegaly",)
    assert records[1].label == "No Finding"
    assert {r.official for r in records} == {"train", "test"}
    ones, _ = public_records("chexpert", root, "ones")
    assert ones[1].label == "Cardiomegaly" and ones[1].uncertain == ()
    zeros, _ = public_records("chexpert", root, "zeros")
    assert zeros[1].label == "No Finding" and zeros[1].uncertain == ()


def test_chexpert_multilabel_cache_marks_uncertain_and_official_test(tmp_path: Path):
    root = chexpert_tree(tmp_path / "cx", n_train=12)
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(root)}))
    dataset = {"name": "cx", "kind": "chexpert", "task": "multilabel", "findings": ["Cardiomegaly", "Edema"]}
    summary = prepare(marker, dataset, PREPARE, tmp_path / "out")
    labels = np.load(tmp_path / "out" / "labels.npy")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert summary["findings"] == ["Cardiomegaly", "Edema"] and labels.shape == (14, 2)
    assert labels[1].tolist() == [UNCERTAIN, 0] and labels[0].tolist() == [0, 1]
    assert not manifest["group"].str.contains("patient").any()  # hashed
    split = split_dataset(manifest, 0.5, 0.2, seed=0, use_official=True)
    assert set(split.loc[split["part"] == "test", "index"]) == set(manifest.index[manifest["official"] == "test"])
    assert set(split["part"]) == {"train", "val", "test"}


def nih_tree(root: Path) -> Path:
    """Data_Entry_2017_v2020.csv, images_001/images/*.png and the official lists; one listed image absent."""
    entries = []
    findings = ["No Finding", "Effusion|Atelectasis", "Hernia", "No Finding", "Effusion", "Nodule|Mass"]
    for i, label in enumerate(findings):
        name = f"0000{i:04d}_000.png"
        if i != 5:
            write_image(root / "images_001" / "images" / name, i)
        entries.append(
            {
                "Image Index": name,
                "Finding Labels": label,
                "Follow-up #": 0,
                "Patient ID": i // 2 + 1,
                "Patient Age": 40,
                "Patient Gender": "M",
                "View Position": "PA",
            }
        )
    pd.DataFrame(entries).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    (root / "train_val_list.txt").write_text("".join(f"0000{i:04d}_000.png\n" for i in range(4)))
    (root / "test_list.txt").write_text("".join(f"0000{i:04d}_000.png\n" for i in range(4, 6)))
    return root


def test_nih_records_from_a_sample_with_official_lists(tmp_path: Path):
    root = nih_tree(tmp_path)
    records, warnings = public_records("nih_cxr14", root)
    assert [r.label for r in records] == ["No Finding", "Atelectasis|Effusion", "Hernia", "No Finding", "Effusion"]
    assert [r.official for r in records] == ["train"] * 4 + ["test"]
    assert records[2].group == "2" and records[0].view == "PA" and any("absent" in w for w in warnings)
    assert {f for r in records for f in r.label.split("|")} - {"No Finding"} <= set(NIH_FINDINGS)


# Period 8: each test image's finding label differs from the previous test image's (Edema on odd i).
OFFICIAL_SPLIT = ("train", "validate", "train", "test", "train", "train", "test", "train")


def mimic_tree(root: Path, n: int = 4) -> Path:
    """files/pXX/p<subject>/s<study>/<dicom>.jpg, the metadata / chexpert / split CSVs and the reports."""
    meta, labels, split = [], [], []
    for i in range(n):
        subject, study, dicom = f"{10000000 + i}", f"{50000000 + i}", f"d{i:03d}"
        write_image(root / "files" / "p10" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", i)
        meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": "PA" if i else "AP"})
        labels.append(
            {
                "subject_id": subject,
                "study_id": study,
                "Edema": "1.0" if i % 2 else "",
                "Pneumonia": "-1.0" if i == 2 else "0.0",
            }
        )
        split.append(
            {
                "dicom_id": dicom,
                "study_id": study,
                "subject_id": subject,
                "split": OFFICIAL_SPLIT[i % len(OFFICIAL_SPLIT)],
            }
        )
        report = root / "mimic-cxr-reports" / "files" / "p10" / f"p{subject}" / f"s{study}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            f"EXAMINATION: CHEST\n\nINDICATION: cough\n\nFINDINGS: Lungs study {i}.\n\n"
            "IMPRESSION: No acute\n process.\n"
        )
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    negbio = [{**row, "Edema": "", "Pneumothorax": "1.0"} for row in labels]
    pd.DataFrame(negbio).to_csv(root / "mimic-cxr-2.0.0-negbio.csv", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    return root


def test_mimic_records_labels_reports_and_official_split(tmp_path: Path):
    records, warnings = public_records("mimic_cxr_jpg", mimic_tree(tmp_path), "ignore")
    assert not warnings and [r.label for r in records] == ["No Finding", "Edema", "No Finding", "Edema"]
    assert records[2].uncertain == ("Pneumonia",) and records[0].view == "AP" and records[1].group == "10000001"
    assert [r.official for r in records] == ["train", "train", "train", "test"]
    assert records[0].report == "Lungs study 0. No acute process."
    assert report_sections("no headers here") == "no headers here"
    negbio, _ = public_records("mimic_cxr_jpg", tmp_path, "ignore", labeler="negbio")
    assert {r.label for r in negbio} == {"Pneumothorax"}


def test_mimic_report_reaches_the_manifest(tmp_path: Path):
    root = mimic_tree(tmp_path / "m")
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(root)}))
    prepare(marker, {"name": "m", "kind": "mimic_cxr_jpg"}, PREPARE, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert manifest["report"].str.startswith("Lungs study").all()
    assert manifest["official"].tolist() == ["train", "train", "train", "test"]


@pytest.mark.parametrize(
    ("kind", "remove", "needle"),
    [
        ("mimic_cxr_jpg", "mimic-cxr-2.0.0-metadata.csv", "metadata.csv"),
        ("mimic_cxr_jpg", "mimic-cxr-2.0.0-chexpert.csv", "chexpert.csv.*dataset.labeler"),
        ("mimic_cxr_jpg", "files", "files/"),
        ("nih_cxr14", "Data_Entry_2017_v2020.csv", "Data_Entry_2017"),
        ("nih_cxr14", "images_001", "images"),
        ("chexpert", "CheXpert-v1.0-small", "train.csv"),
    ],
)
def test_missing_csv_or_image_folder_is_named(tmp_path: Path, kind: str, remove: str, needle: str):
    import shutil

    {"mimic_cxr_jpg": mimic_tree, "nih_cxr14": nih_tree, "chexpert": chexpert_tree}[kind](tmp_path)
    target = tmp_path / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(SourceError, match=needle):
        public_records(kind, tmp_path)


def test_editing_a_label_csv_changes_the_fingerprint(tmp_path: Path):
    import os

    from cxrmim.data.fingerprint import dataset_fingerprint

    root = nih_tree(tmp_path)
    config = {"kind": "nih_cxr14", "source": str(root)}
    before = dataset_fingerprint(config)
    entry = root / "Data_Entry_2017_v2020.csv"
    entry.write_text(entry.read_text().replace("Hernia", "Mass"))
    os.utime(entry, ns=(1, 1))  # a different mtime even on coarse clocks
    assert dataset_fingerprint(config) != before


def test_keep_labels_makes_effusion_versus_no_finding(tmp_path: Path):
    root = nih_tree(tmp_path / "nih")
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(root)}))
    dataset = {
        "name": "nih",
        "kind": "nih_cxr14",
        "task": "binary",
        "positive": "Effusion",
        "label_map": {"No Finding": "No Finding", "Effusion": "Effusion", "*": "other"},
        "keep_labels": ["Effusion", "No Finding"],
    }
    summary = prepare(marker, dataset, PREPARE, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert manifest["label"].tolist() == ["No Finding", "No Finding", "Effusion"]
    assert summary["classes"] == ["Effusion", "No Finding"] and any("keep_labels" in w for w in summary["warnings"])


def test_listed_findings_restrict_public_labels(tmp_path: Path):
    root = nih_tree(tmp_path / "nih")
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(root)}))
    dataset = {"name": "nih", "kind": "nih_cxr14", "task": "multilabel", "findings": ["Effusion", "Hernia"]}
    summary = prepare(marker, dataset, PREPARE, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    assert manifest["label"].tolist() == ["No Finding", "Effusion", "Hernia", "No Finding", "Effusion"]
    assert np.load(tmp_path / "out" / "labels.npy").tolist() == [[0, 0], [1, 0], [0, 1], [0, 0], [1, 0]]
    assert any("outside dataset.findings" in w for w in summary["warnings"])
