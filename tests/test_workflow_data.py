"""The data stages through Snakemake: download, prepare, split, label subsets, patch validity."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import MULTILABEL_PHANTOMS, PHANTOM_FINDINGS, image_only_methods, snakemake

pytestmark = pytest.mark.slow

DATA_TARGETS = (
    "results/tiny/patch_validity/validity.npz",
    "results/tiny/split/subsets/frac0.1_seed0.csv",
    "results/tiny/split/subsets/frac1_seed0.csv",
)


def test_data_stages_on_phantoms(tmp_path: Path):
    snakemake(tmp_path, *DATA_TARGETS)
    results = tmp_path / "results" / "tiny"
    images = np.load(results / "prepared" / "images.npy")
    masks = np.load(results / "prepared" / "masks.npy")
    manifest = pd.read_csv(results / "prepared" / "manifest.csv", keep_default_na=False)
    assert images.shape == masks.shape == (160, 32, 32) and images.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1} and manifest["has_mask"].all()
    split = pd.read_csv(results / "split" / "split.csv")
    assert set(split["part"]) == {"train", "val", "test"}
    assert (split.groupby("group")["part"].nunique() == 1).all()
    small = pd.read_csv(results / "split" / "subsets" / "frac0.1_seed0.csv")
    full = pd.read_csv(results / "split" / "subsets" / "frac1_seed0.csv")
    assert set(small["id"]) < set(full["id"]) and small["label"].nunique() == 4
    validity = np.load(results / "patch_validity" / "validity.npz")
    assert validity["valid"].shape == (160, 16) and int(validity["patch_size"]) == 8
    for name in ("valid_patches.png",):
        assert (results / "figures" / name).stat().st_size > 1000
    for rule in ("download", "prepare", "split", "patch_validity"):
        assert (results / "logs" / f"{rule}.log").exists()
        assert (results / "benchmarks" / f"{rule}.tsv").exists()
    # Same config, same files: a second run in another folder gives identical splits and subsets.
    other = tmp_path / "again"
    other.mkdir()
    snakemake(other, *DATA_TARGETS)
    for rel in ("split/split.csv", "split/subsets/frac0.1_seed0.csv", "prepared/manifest.csv"):
        assert (results / rel).read_bytes() == (other / "results" / "tiny" / rel).read_bytes(), rel
    assert np.array_equal(images, np.load(other / "results" / "tiny" / "prepared" / "images.npy"))


def test_multilabel_phantoms_and_count_budget(tmp_path: Path):
    findings = PHANTOM_FINDINGS
    override = tmp_path / "multilabel.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "tinyml", **MULTILABEL_PHANTOMS},
                "label_fractions": {"counts": [20]},
            }
        )
    )
    results = tmp_path / "results" / "tinyml"
    snakemake(
        tmp_path,
        str(results.relative_to(tmp_path) / "split" / "subsets" / "n20_seed0.csv"),
        configs=(Path(__file__).parent / "configs" / "tiny.yaml", override),
    )
    summary = json.loads((results / "prepared" / "summary.json").read_text())
    labels = np.load(results / "prepared" / "labels.npy")
    assert summary["task"] == "multilabel" and summary["findings"] == findings and labels.shape[1] == 3
    assert (labels.sum(axis=1) >= 2).any()
    subset = pd.read_csv(results / "split" / "subsets" / "n20_seed0.csv", keep_default_na=False)
    split = pd.read_csv(results / "split" / "split.csv", keep_default_na=False)
    assert len(subset) == 20 and set(subset["id"]) <= set(split.loc[split["part"] == "train", "id"])
    too_many = tmp_path / "too_many.yaml"
    too_many.write_text(yaml.safe_dump({"label_fractions": {"counts": [100000]}}))
    result = snakemake(
        tmp_path,
        str(results.relative_to(tmp_path) / "split" / "subsets" / "n100000_seed0.csv"),
        configs=(Path(__file__).parent / "configs" / "tiny.yaml", override, too_many),
        check=False,
    )
    assert result.returncode != 0
    assert "label_fractions.counts" in (results / "logs" / "label_subset" / "n100000_seed0.log").read_text()


def test_bad_config_key_is_named(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prepare": {"imagesize": 32}}))
    result = snakemake(tmp_path, "-n", configs=(bad,), check=False)
    assert result.returncode != 0
    assert "imagesize" in result.stdout + result.stderr


def manifest_config(tmp_path: Path, csv: Path, name: str, extra: dict | None = None) -> Path:
    """A config override pointing the tiny workflow at a manifest CSV."""
    override = {
        "dataset": {"name": name, "kind": "manifest", "source": str(csv)},
        **image_only_methods(),
        **(extra or {}),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(override))
    return path


@pytest.mark.realdata
def test_real_lung_masks(tmp_path: Path, realdata: Path):
    """Cohen COVID images with real masks: prepare, split by patient, patch validity."""
    csv = realdata / "cohen_covid_lungmasks" / "manifest.csv"
    source = pd.read_csv(csv)
    # The rare findings are merged so every class can reach the test part.
    label_map = {v: "Other" for v in source["label"].unique() if v != "COVID-19"}
    config = manifest_config(tmp_path, csv, "cohen", {"prepare": {"image_size": 64, "workers": 2}})
    cfg = yaml.safe_load(config.read_text())
    cfg["dataset"]["label_map"] = label_map
    config.write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, "results/cohen/patch_validity/validity.npz", "results/cohen/split/split.csv", configs=(config,))
    results = tmp_path / "results" / "cohen"
    manifest = pd.read_csv(results / "prepared" / "manifest.csv", keep_default_na=False)
    assert len(manifest) == len(source) and manifest["has_mask"].all()
    assert set(manifest["label"]) == {"COVID-19", "Other"}
    assert not set(source["patient_id"].astype(str)) & set(manifest["group"].astype(str)), "raw patient ids leaked"
    split = pd.read_csv(results / "split" / "split.csv")
    assert (split.groupby("group")["part"].nunique() == 1).all()
    valid = np.load(results / "patch_validity" / "validity.npz")["valid"]
    # Real lungs cover a good part of a frontal chest film, but not all of it.
    assert 0.2 < np.median(valid.mean(axis=1)) < 0.9
    summary = json.loads((results / "prepared" / "summary.json").read_text())
    assert summary["n_without_mask"] == 0


@pytest.mark.realdata
def test_real_without_masks_policy(tmp_path: Path, realdata: Path):
    """Kermany paediatric images have no masks: fail by default with a clear message, all_valid on request."""
    csv = realdata / "kermany_pediatric_nomasks" / "manifest.csv"
    config = manifest_config(tmp_path, csv, "kermany", {"prepare": {"image_size": 64, "workers": 2}})
    failed = snakemake(tmp_path, "results/kermany/patch_validity/validity.npz", configs=(config,), check=False)
    assert failed.returncode != 0
    log = (tmp_path / "results" / "kermany" / "logs" / "patch_validity.log").read_text()
    assert "no lung mask" in log and "all_valid" in log
    cfg = yaml.safe_load(config.read_text())
    cfg["patch_validity"] = {"no_mask_policy": "all_valid"}
    config.write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, "results/kermany/patch_validity/validity.npz", configs=(config,))
    validity = np.load(tmp_path / "results" / "kermany" / "patch_validity" / "validity.npz")
    assert validity["valid"].all() and not validity["has_mask"].any()
    assert len(validity["valid"]) == len(pd.read_csv(csv))


@pytest.mark.realdata
def test_real_dicom(tmp_path: Path, realdata: Path):
    """DICOM files (8-bit MONOCHROME2, 15-bit MONOCHROME1, JPEG 2000) through prepare, no identifiers out."""
    folder = realdata / "dicom_samples"
    csv = tmp_path / "dicoms.csv"
    pd.DataFrame(
        {"image": [str(p) for p in sorted(folder.glob("*.dcm"))], "label": ["No Finding", "Unlabelled", "Unlabelled"]}
    ).to_csv(csv, index=False)
    config = manifest_config(tmp_path, csv, "dicom", {"prepare": {"image_size": 64, "workers": 1}})
    snakemake(tmp_path, "results/dicom/prepared/images.npy", configs=(config,))
    results = tmp_path / "results" / "dicom"
    images = np.load(results / "prepared" / "images.npy")
    assert images.shape == (3, 64, 64) and all(img.std() > 10 for img in images)
    import pydicom

    identifiers = set()
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for key in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            value = str(ds.get(key, "") or "").strip()
            if len(value) >= 4:
                identifiers.add(value)
    text = "".join(p.read_text(errors="ignore") for p in results.rglob("*") if p.suffix in {".csv", ".json", ".log"})
    for value in identifiers:
        assert value not in text
