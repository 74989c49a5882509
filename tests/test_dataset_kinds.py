"""Dataset kinds from the registry: RSNA Pneumonia and the ieee8023 COVID-19 collection read from fake trees with
the real column layouts, and the refusal of report methods on a dataset without reports."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_bad_inputs import texture

from cxrmim import registry
from cxrmim.config import load_config, validate_config
from cxrmim.data.fingerprint import dataset_fingerprint
from cxrmim.data.prepare import prepare
from cxrmim.data.records import source_records
from cxrmim.data.source_check import check_source
from cxrmim.data.sources import SourceError
from cxrmim.plan import check

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

SETTINGS = {"image_size": 32, "on_bad_image": "skip", "workers": 1, "min_image_side": 16}
RSNA_HEADER = "patientId,x,y,width,height,Target\n"


def test_every_kind_names_functions_that_exist_and_the_data_stages_import_them():
    from conftest import REPO

    from cxrmim.codebase import module_closure

    for kind in registry.DATASET_KINDS:
        for path in (kind.reader, kind.label_files):
            assert path is None or callable(registry.load_function(path)), (kind.name, path)
    closure = {p.name for p in module_closure(REPO / "scripts" / "prepare.py")}
    assert {"rsna.py", "covid_chestxray.py", "public.py", "sources.py"} <= closure  # editing a reader reruns prepare


def write_dicom(path: Path, seed: int, view: str) -> None:
    """A tiny 8-bit CR DICOM with a ViewPosition."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "CR", view, path.stem
    pixels = texture(seed)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def rsna_tree(root: Path) -> Path:
    """Kaggle's stage 2 layout: p0 with two boxes and p3 with one (positive), p1 and p2 negative, p4 no image."""
    (root / "stage_2_train_images").mkdir(parents=True)
    (root / "stage_2_train_labels.csv").write_text(
        RSNA_HEADER + "p0,10,20,30,40,1\np1,,,,,0\np0,50,20,30,40,1\np2,,,,,0\np3,5,5,10,10,1\np4,,,,,0\n"
    )
    for i, view in enumerate(["PA", "AP", "AP", "PA"]):
        write_dicom(root / "stage_2_train_images" / f"p{i}.dcm", i, view)
    return root


def test_rsna_one_labelled_image_per_patient(tmp_path):
    root = rsna_tree(tmp_path / "rsna")
    dataset = {"name": "rsna", "kind": "rsna_pneumonia", "source": str(root), "task": "binary", "positive": "Pneumonia"}
    seen: dict = {}
    records, warnings, _ = source_records("rsna_pneumonia", root, dataset, seen)
    assert [(r.group, r.label, r.view) for r in records] == [
        ("p0", "Pneumonia", "PA"),
        ("p1", "Normal", "AP"),
        ("p2", "Normal", "AP"),
        ("p3", "Pneumonia", "PA"),
    ]
    assert seen["label_files"] == {"labels": "stage_2_train_labels.csv"}
    assert seen["rows"]["boxes"] == 3 and seen["rows"]["patients whose image is absent"] == 1
    assert any("1 images listed in the CSVs are absent" in w for w in warnings)
    check_source(dataset)
    before = dataset_fingerprint(dataset)
    (root / "stage_2_train_labels.csv").write_text(RSNA_HEADER + "p0,10,20,30,40,1\np1,,,,,0\np2,,,,,1\n")
    with pytest.raises(SourceError, match="rows with Target 1 have no box"):
        source_records("rsna_pneumonia", root, dataset)
    assert dataset_fingerprint(dataset) != before  # the label CSV counts in the fingerprint
    (root / "stage_2_train_labels.csv").write_text("patientId,Target\np0,1\n")
    with pytest.raises(SourceError, match=r"missing column\(s\) \['x', 'y', 'width', 'height'\]"):
        source_records("rsna_pneumonia", root, dataset)


def test_rsna_prepares_with_summary_accounting(tmp_path):
    from cxrmim.data.acquire import acquire

    root = rsna_tree(tmp_path / "rsna")
    marker = tmp_path / "source.json"
    dataset = {"name": "rsna", "kind": "rsna_pneumonia", "source": str(root), "task": "binary", "positive": "Pneumonia"}
    info = acquire(dataset, tmp_path / "raw", marker)
    assert info["label_files"] == {"labels": "stage_2_train_labels.csv"} and info["fingerprint"]
    summary = prepare(marker, dataset, SETTINGS, tmp_path / "out")
    assert summary["labels"] == {"Normal": 2, "Pneumonia": 2} and summary["classes"] == ["Normal", "Pneumonia"]
    assert summary["seen"]["label_files"] == {"labels": "stage_2_train_labels.csv"}
    assert summary["seen"]["labels"]["Pneumonia"]["prepared"] == 2
    assert np.load(tmp_path / "out" / "images.npy").shape == (4, 32, 32)
    (root / "stage_2_train_labels.csv").rename(root / "labels.csv")
    with pytest.raises(SourceError, match="stage_2_train_labels.csv not found"):
        check_source(dataset)  # at DAG build, before any job


METADATA = (
    "patientid,offset,sex,age,finding,RT_PCR_positive,survival,view,modality,date,location,folder,"
    "filename,doi,url,license,clinical_notes,other_notes,\n"
)
ROWS_2021 = [  # finding, view, modality, folder, filename
    ("Pneumonia/Viral/COVID-19", "PA", "X-ray", "images", "c1.png"),
    ("Pneumonia/Viral/COVID-19", "AP Supine", "X-ray", "images", "c2.png"),
    ("Pneumonia/Viral/COVID-19", "L", "X-ray", "images", "c1l.png"),  # lateral
    ("Pneumonia/Viral/COVID-19", "Axial", "CT", "volumes", "ct1.nii.gz"),  # CT
    ("Pneumonia/Viral/SARS", "AP", "X-ray", "images", "s1.png"),
    ("Pneumonia/Bacterial/Streptococcus", "PA", "X-ray", "images", "b1.png"),
    ("Pneumonia/Fungal/Pneumocystis", "PA", "X-ray", "images", "f1.png"),
    ("No Finding", "PA", "X-ray", "images", "n1.png"),
    ("todo", "PA", "X-ray", "images", "t1.png"),
]
FLAT_2020 = {
    "Pneumonia/Viral/COVID-19": "COVID-19",
    "Pneumonia/Viral/SARS": "SARS",
    "Pneumonia/Bacterial/Streptococcus": "Streptococcus",
    "Pneumonia/Fungal/Pneumocystis": "Pneumocystis",
}


def covid_tree(root: Path, flat: bool) -> Path:
    """metadata.csv in the later (hierarchical findings) or 2020 (flat findings) spelling, with its images."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i, (finding, view, modality, folder, name) in enumerate(ROWS_2021):
        finding = FLAT_2020.get(finding, finding) if flat else finding
        lines.append(f"P{i % 4},0,M,50,{finding},Y,Y,{view},{modality},2020,here,{folder},{name},,,,note,,\n")
        if folder == "images":
            Image.fromarray(texture(i)).save(root / "images" / name)
    (root / "metadata.csv").write_text(METADATA + "".join(lines))
    return root


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize(
    ("task", "labels"),
    [
        (
            "finding",
            {
                "c1.png": "COVID-19",
                "c2.png": "COVID-19",
                "s1.png": "SARS",
                "b1.png": "Streptococcus",
                "f1.png": "Pneumocystis",
                "n1.png": "No Finding",
            },
        ),
        (
            "covid",
            {
                "c1.png": "COVID-19",
                "c2.png": "COVID-19",
                "s1.png": "Other pneumonia",
                "b1.png": "Other pneumonia",
                "f1.png": "Other pneumonia",
            },
        ),
        ("viral", {"c1.png": "Viral", "c2.png": "Viral", "s1.png": "Viral", "b1.png": "Bacterial"}),
    ],
)
def test_covid_chestxray_frontal_xrays_and_mrm_tasks(tmp_path, flat, task, labels):
    root = covid_tree(tmp_path / "ieee", flat)
    dataset = {"name": "cc", "kind": "covid_chestxray", "source": str(root), "covid_task": task}
    seen: dict = {}
    records, warnings, _ = source_records("covid_chestxray", root, dataset, seen)
    assert {r.image.name: r.label for r in records} == labels  # no CT, lateral or todo row
    assert seen["label_files"] == {"metadata": "metadata.csv"}
    covid = "Pneumonia/Viral/COVID-19" if not flat else "COVID-19"
    assert seen["finding_rows"][covid]["left out: not X-ray (CT)"] == 1
    assert seen["finding_rows"][covid]["left out: not a frontal view (dataset.views chooses others)"] == 1
    assert seen["finding_rows"]["todo"] == {"left out: no finding yet (todo / Unknown)": 1}
    assert any("rows left out" in w for w in warnings)
    if task != "finding":
        positive = "COVID-19" if task == "covid" else "Viral"
        check_source({**dataset, "task": "binary", "positive": positive})  # MRM's two binary tasks


def test_covid_chestxray_views_and_config(tmp_path):
    root = covid_tree(tmp_path / "ieee", flat=False)
    dataset = {"name": "cc", "kind": "covid_chestxray", "source": str(root), "views": ["PA", "L"]}
    records, _, _ = source_records("covid_chestxray", root, dataset)
    assert sorted(r.image.name for r in records) == ["b1.png", "c1.png", "c1l.png", "f1.png", "n1.png"]
    config = load_config()
    config["dataset"] = {**dataset, "covid_task": "viral", "task": "binary", "positive": "Viral"}
    validate_config(config)
    config["dataset"]["covid_task"] = "isviral"
    with pytest.raises(Exception, match="isviral"):
        validate_config(config)


def test_an_option_of_another_kind_is_refused():
    config = load_config()
    check({**config, "dataset": {**config["dataset"], "covid_task": "finding"}})  # its default: changes nothing
    with pytest.raises(
        ValueError,
        match=r"dataset.covid_task set, but kind synthetic does not read it "
        r"\(only covid_chestxray\)",
    ):
        check({**config, "dataset": {**config["dataset"], "covid_task": "viral"}})
    with pytest.raises(ValueError, match=r"dataset.uncertain set, but kind synthetic"):
        check({**config, "dataset": {**config["dataset"], "uncertain": "ones"}})


# ----------------------------------------------------------------------------- report methods need reports


def kaggle_tree(root: Path) -> Path:
    """A tiny COVID-19 Radiography Database: COVID and Normal class folders of two images each."""
    for c, name in enumerate(("COVID", "Normal")):
        (root / name / "images").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(texture(2 * c + i)).save(root / name / "images" / f"{name}-{i}.png")
    return root


def test_report_methods_refused_on_a_dataset_without_reports(tmp_path):
    config = load_config()
    config["dataset"] = {
        "name": "covid_radiography",
        "kind": "covid19_radiography",
        "source": str(kaggle_tree(tmp_path / "db")),
    }
    with pytest.raises(
        ValueError,
        match=(
            r"mrm, medim learn from report text, but dataset 'covid_radiography' has no reports "
            r"\(kind covid19_radiography\); drop mrm, medim from pretrain.methods and finetune.inits"
        ),
    ):
        check(config)
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,label\nx.png,A\n")
    with pytest.raises(ValueError, match="its manifest has no report column"):
        check({**config, "dataset": {"name": "m", "kind": "manifest", "source": str(manifest)}})
    manifest.write_text("image,label,report\nx.png,A,text\n")
    check({**config, "dataset": {"name": "m", "kind": "manifest", "source": str(manifest)}})
    check({**config, "dataset": {"name": "s", "kind": "synthetic"}})
    readers = set(registry.methods(reads_reports=True))
    pruned = copy.deepcopy(config)
    pruned["pretrain"]["methods"] = [m for m in pruned["pretrain"]["methods"] if m not in readers]
    pruned["finetune"]["inits"] = [m for m in pruned["finetune"]["inits"] if m not in readers]
    check(pruned)


@pytest.mark.slow
def test_kaggle_tree_default_config_refused_then_planned_without_report_methods(tmp_path):
    """The default config on a fake COVID-19 Radiography tree: refused when the DAG is built (nothing runs);
    with the methods docs/datasets.md's example states, every job plans and no tokenizer is among them."""
    from conftest import REPO, snakemake

    source = kaggle_tree(tmp_path / "db")
    dataset = {"name": "covid_radiography", "kind": "covid19_radiography", "source": str(source)}
    first = tmp_path / "covid.yaml"
    first.write_text(yaml.safe_dump({"dataset": dataset}))
    refused = snakemake(tmp_path, "-n", configs=(first,), check=False)
    assert refused.returncode != 0
    assert (
        "mrm, medim learn from report text, but dataset 'covid_radiography' has no reports"
        in refused.stdout + refused.stderr
    )
    assert not (tmp_path / "results").exists()
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "datasets.md").read_text(), flags=re.S)
    example = yaml.safe_load(next(b for b in blocks if "kind: covid19_radiography" in b))
    example["dataset"]["source"] = str(source)
    pruned = tmp_path / "covid_as_documented.yaml"
    pruned.write_text(yaml.safe_dump(example))
    planned = snakemake(tmp_path, "-n", configs=(pruned,))
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", planned.stdout, flags=re.M))
    assert "tokenizer" not in jobs and jobs["report"] == "1"
    assert jobs["pretrain"] == str(len(example["pretrain"]["methods"]))
