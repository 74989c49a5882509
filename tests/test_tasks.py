"""Label tasks in the data layer: task config, label matrices, multilabel splits and count budgets."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrmim.data.prepare import prepare
from cxrmim.data.splits import budget_tag, label_subset, parse_budget, split_dataset
from cxrmim.data.tasks import UNCERTAIN, LabelTask, findings_of, join_findings, label_matrix

FINDINGS = ["Atelectasis", "Effusion", "Nodule", "Hernia"]


def multilabel_manifest(n: int = 400, seed: int = 0, images_per_patient: int = 2) -> pd.DataFrame:
    """Random finding sets with one rare finding (Hernia, about 2%), consecutive images sharing a patient."""
    rng = np.random.default_rng(seed)
    rates = np.array([0.3, 0.2, 0.1, 0.02])
    present = rng.random((n, len(FINDINGS))) < rates
    labels = [join_findings([f for f, on in zip(FINDINGS, row) if on], FINDINGS) for row in present]
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "id": [f"img{i}" for i in range(n)],
            "label": labels,
            "group": [f"p{i // images_per_patient}" for i in range(n)],
        }
    )


def test_task_config_checks_and_label_names():
    assert LabelTask.from_config({}).kind == "multiclass"
    with pytest.raises(ValueError, match="dataset.findings"):
        LabelTask.from_config({"task": "multilabel"})
    with pytest.raises(ValueError, match="dataset.positive"):
        LabelTask.from_config({"task": "binary"})
    assert findings_of("Effusion|Nodule") == ["Effusion", "Nodule"] and findings_of("No Finding") == []
    assert join_findings(["Nodule", "Effusion"], FINDINGS) == "Effusion|Nodule" and join_findings([]) == "No Finding"


def test_label_matrix_marks_present_absent_and_uncertain():
    uncertain = [(), ("Hernia",), ("Atelectasis",)]
    matrix = label_matrix(["Effusion|Nodule", "No Finding", "Atelectasis"], FINDINGS, uncertain)
    assert matrix.dtype == np.uint8
    assert matrix.tolist() == [[0, 1, 1, 0], [0, 0, 0, UNCERTAIN], [1, 0, 0, 0]]  # a positive stays positive


def test_binary_and_multilabel_labels_are_checked():
    binary = LabelTask.from_config({"task": "binary", "positive": "Finding"})
    binary.check_labels(["Finding", "No Finding"])
    with pytest.raises(ValueError, match="label_map"):
        binary.check_labels(["A", "B", "Finding"])
    multilabel = LabelTask.from_config({"task": "multilabel", "findings": FINDINGS})
    with pytest.raises(ValueError, match=r"\['Mass'\].*dataset.findings"):
        multilabel.check_labels(["Effusion|Mass"])
    with pytest.raises(ValueError, match="multilabel"):
        LabelTask().check_labels(["Effusion|Nodule", "No Finding"])


def test_multilabel_split_keeps_every_finding_in_every_part_and_groups_patients():
    manifest = multilabel_manifest()
    split = split_dataset(manifest, 0.2, 0.1, seed=0)
    assert (split.groupby("group")["part"].nunique() == 1).all()
    for part in ("train", "val", "test"):
        labels = split.loc[split["part"] == part, "label"]
        assert {f for label in labels for f in findings_of(label)} == set(FINDINGS), part
    hernia = split[split["label"].str.contains("Hernia")]
    assert 0.1 <= (hernia["part"] == "test").mean() <= 0.4  # stratified, not all in one part


def test_multilabel_split_error_names_the_missing_finding():
    manifest = multilabel_manifest(n=60)
    manifest.loc[:, "label"] = "Effusion"
    manifest.loc[0, "label"] = "Effusion|Hernia"
    with pytest.raises(ValueError, match="Hernia"):
        split_dataset(manifest, 0.2, 0.0, seed=0)


def test_budget_tags_round_trip_and_reject_nonsense():
    assert budget_tag(fraction=0.01) == "frac0.01" and budget_tag(fraction=1.0) == "frac1"
    assert budget_tag(count=1000) == "n1000"
    assert parse_budget("frac0.05") == ("fraction", 0.05) and parse_budget("n20") == ("count", 20.0)
    for bad in ("frac2", "n0", "0.1", "n1e3"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


def test_count_budgets_exact_nested_stratified_and_bounded():
    split = split_dataset(multilabel_manifest(), 0.2, 0.1, seed=0)
    n_train = int((split["part"] == "train").sum())
    previous = set()
    for count in (10, 40, 120, n_train):
        subset = label_subset(split, f"n{count}", subset_seed=1, split_seed=0)
        assert len(subset) == count and subset["id"].is_unique
        assert previous <= set(subset["id"])
        previous = set(subset["id"])
        assert set(subset["id"]) <= set(split.loc[split["part"] == "train", "id"])
    shown = {f for label in label_subset(split, "n10", 1, 0)["label"] for f in findings_of(label)}
    assert shown == set(FINDINGS)  # every finding within 10 images
    assert not label_subset(split, "n40", 1, 0).equals(label_subset(split, "n40", 2, 0))
    with pytest.raises(ValueError, match=rf"label_fractions.counts has {n_train + 1}.*only {n_train}"):
        label_subset(split, f"n{n_train + 1}", 1, 0)


def test_fraction_tags_match_plain_fractions():
    split = split_dataset(multilabel_manifest(), 0.2, 0.1, seed=0)
    assert label_subset(split, "frac0.1", 0, 0).equals(label_subset(split, 0.1, 0, 0))


def _write_manifest_dataset(tmp_path: Path, labels: list[str]) -> Path:
    """Small PNGs with the given labels listed in a manifest CSV, and the download marker."""
    from PIL import Image

    rows = []
    for i, label in enumerate(labels):
        pixels = np.random.default_rng(i).integers(0, 255, (36, 36)).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "label": label, "patient_id": f"P{i}"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    marker = tmp_path / "source.json"
    marker.write_text(json.dumps({"root": str(tmp_path / "m.csv")}))
    return marker


PREPARE = {"image_size": 16, "on_bad_image": "fail", "workers": 1}


@pytest.mark.parametrize("task", ["multiclass", "binary", "multilabel"])
def test_prepared_cache_holds_the_tasks_labels(tmp_path: Path, task: str):
    raw = ["Effusion|Nodule", "No Finding", "Atelectasis", "No Finding", "Hernia"]  # every listed finding once
    marker = _write_manifest_dataset(tmp_path, raw)
    dataset = {"name": "mini", "kind": "manifest", "task": task, "findings": FINDINGS}
    if task == "binary":
        dataset.update(positive="Finding", label_map={"No Finding": "No Finding", "*": "Finding"})
    if task == "multiclass":
        dataset.update(label_map={"Effusion|Nodule": "Effusion"})
    summary = prepare(marker, dataset, PREPARE, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    labels = np.load(tmp_path / "out" / "labels.npy")
    assert summary["task"] == task and labels.dtype == np.uint8 and len(labels) == len(manifest) == 5
    if task == "multilabel":
        assert summary["findings"] == FINDINGS and manifest["label"].tolist() == raw
        assert labels.tolist()[0] == [0, 1, 1, 0] and labels.tolist()[1] == [0, 0, 0, 0]
    elif task == "binary":
        assert summary["classes"] == ["Finding", "No Finding"] and summary["positive"] == "Finding"
        assert manifest["label"].tolist() == ["Finding", "No Finding", "Finding", "No Finding", "Finding"]
        assert labels[:, 0].tolist() == [1, 0, 1, 0, 1]
    else:
        assert summary["classes"] == ["Atelectasis", "Effusion", "Hernia", "No Finding"]
        assert (labels.sum(axis=1) == 1).all()


def test_binary_task_with_three_classes_fails_before_writing(tmp_path: Path):
    marker = _write_manifest_dataset(tmp_path, ["A", "B", "C", "A"])
    with pytest.raises(ValueError, match="binary.*label_map"):
        prepare(marker, {"name": "m", "kind": "manifest", "task": "binary", "positive": "A"}, PREPARE, tmp_path / "o")
    assert not (tmp_path / "o" / "labels.npy").exists() and not (tmp_path / "o" / "images.npy").exists()


@pytest.mark.parametrize("task", ["multilabel", "binary"])
def test_multi_finding_phantoms_prepare_for_multilabel_and_binary_tasks(tmp_path: Path, task: str):
    from cxrmim.data.acquire import acquire
    from cxrmim.data.synthetic import FINDINGS as LESIONS

    synthetic = {"n_images": 40, "image_size": 48, "seed": 2, "multi_finding": True, "finding_probability": 0.4}
    dataset = {"name": "ph", "kind": "synthetic", "synthetic": synthetic, "task": task}
    if task == "multilabel":
        dataset["findings"] = list(LESIONS)
    else:
        dataset.update(positive="Finding", label_map={"No Finding": "No Finding", "*": "Finding"})
    acquire(dataset, tmp_path / "raw", tmp_path / "source.json")
    summary = prepare(tmp_path / "source.json", dataset, PREPARE, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", keep_default_na=False)
    labels = np.load(tmp_path / "out" / "labels.npy")
    if task == "multilabel":
        assert labels.shape == (len(manifest), 3) and set(np.unique(labels)) <= {0, 1}
        for label, row in zip(manifest["label"], labels):
            assert join_findings([f for f, on in zip(LESIONS, row) if on], LESIONS) == label
        assert (labels.sum(axis=1) >= 2).any() and (labels.sum(axis=1) == 0).any()
    else:
        assert set(manifest["label"]) == {"Finding", "No Finding"} and summary["positive"] == "Finding"
    split = split_dataset(manifest, 0.2, 0.1, seed=0)
    assert set(split["part"]) == {"train", "val", "test"}


def test_label_subset_script_takes_budget_tags(tmp_path: Path):
    import subprocess
    import sys

    split = split_dataset(multilabel_manifest(), 0.2, 0.1, seed=0)
    split.to_csv(tmp_path / "split.csv", index=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "label_subset.py"

    def run(budget: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                str(script),
                "--split",
                str(tmp_path / "split.csv"),
                "--budget",
                budget,
                "--seed",
                "0",
                "--split-seed",
                "0",
                "--out",
                str(tmp_path / f"{budget}.csv"),
                "--log",
                str(tmp_path / f"{budget}.log"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    assert run("n25").returncode == 0
    assert len(pd.read_csv(tmp_path / "n25.csv")) == 25
    too_many = run("n100000")
    assert too_many.returncode != 0 and not (tmp_path / "n100000.csv").exists()
    assert "label_fractions.counts" in (tmp_path / "n100000.log").read_text()
