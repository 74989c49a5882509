"""configs/mrm_protocol.yaml: its datasets merge into valid dataset sections, its commented published encoders
validate once uncommented, and its CheXpert and NIH split protocols hold on fake layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from cxrmim.config import REPO_ROOT, SCHEMA_PATH, load_config, merge
from cxrmim.data.prepare import prepare
from cxrmim.data.public import CHEXPERT_FINDINGS, NIH_FINDINGS, public_records
from cxrmim.data.splits import split_dataset
from cxrmim.plan import check, check_dataset_options

CONFIG = REPO_ROOT / "configs" / "mrm_protocol.yaml"
BLOCKS = ("split", "label_fractions", "lung_masks")  # an entry's own sections, merged over the top-level ones
U_ONES = {"Atelectasis", "Edema", "Pleural Effusion"}  # MRM's CheXpert lists: -1 -> 1 here, -1 -> 0 elsewhere


def entry_sections(config: dict, name: str) -> tuple[dict, dict]:
    """One `datasets` entry as a dataset section (merged over `dataset`) and its split (merged over `split`)."""
    entry = config["datasets"][name]
    dataset = merge(config["dataset"], {k: v for k, v in entry.items() if k not in BLOCKS})
    return dataset | {"name": name}, merge(config["split"], entry.get("split") or {})


def test_every_entry_merged_over_dataset_is_a_valid_dataset_section():
    config = load_config(CONFIG)
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    sections = {"$defs": schema["$defs"], "type": "object",
                "properties": {key: schema["properties"][key] for key in ("dataset", *BLOCKS)}}  # fmt: skip
    experiment = config["experiment"]
    assert {experiment["corpus"], *experiment["evaluate"]} <= set(config["datasets"])
    assert set(experiment["evaluate"]) == {"chexpert", "nih", "rsna", "ieee_covid", "ieee_viral"}
    for name, entry in config["datasets"].items():
        dataset, split = entry_sections(config, name)
        blocks = {key: merge(config[key], entry.get(key) or {}) for key in BLOCKS}
        jsonschema.validate({"dataset": dataset, **blocks, "split": split}, sections)
        check_dataset_options({"dataset": dataset})  # options of its own kind only; the uncertain mapping fits
    covid = {n: entry_sections(config, n)[0]["covid_task"] for n in ("ieee_covid", "ieee_viral")}
    assert covid == {"ieee_covid": "covid", "ieee_viral": "viral"}
    assert entry_sections(config, "nih")[1] | {"val_count": None} == {
        "seed": 0, "test_fraction": 0.2, "val_fraction": 0.125, "use_official": False, "val_count": None}  # fmt: skip
    assert entry_sections(config, "chexpert")[1]["val_count"] == 5000
    encoder = config["encoders"][config["pretrain"]["encoder"]]
    assert config["prepare"]["image_size"] == 224 and encoder["timm_name"] == "vit_base_patch16_224"
    budgets = config["label_fractions"]
    assert budgets["fractions"] == [0.01, 0.1, 1.0] and budgets["seeds"] == [0, 1, 2]
    check(config)  # the one-dataset checks pass on the shared defaults (corpus kind: reports for MRM / MedIM)


def uncommented(text: str) -> dict:
    """The config with its published encoders uncommented: external_inits, the inits line and the recipes."""
    lines, block = [], False
    for line in text.splitlines():
        if line.startswith("  # inits:"):
            lines = [x for x in lines if not x.startswith("  inits:")]  # the active line the comment replaces
        block = line.startswith(("# external_inits:", "  # recipes:")) or (
            block and line.startswith(("#   ", "  #   "))
        )
        if block or line.startswith("  # inits:"):
            line = line.replace("# ", "", 1)
        lines.append(line)
    return yaml.safe_load("\n".join(lines))


def test_the_commented_published_encoders_validate_once_uncommented(tmp_path: Path):
    config = uncommented(CONFIG.read_text())
    assert set(config["external_inits"]) == {"mrm", "medmae-vitb"}
    assert config["finetune"]["inits"][-2:] == ["external_mrm", "external_medmae-vitb"]
    assert config["finetune"]["recipes"]["medical-mae"]["inits"] == ["external_medmae-vitb"]
    for key, entry in config["external_inits"].items():  # the local files the user downloaded
        entry["path"] = str(tmp_path / f"{key}.pth")
        Path(entry["path"]).touch()
    (tmp_path / "protocol.yaml").write_text(yaml.safe_dump(config))
    check(load_config(tmp_path / "protocol.yaml"))


# ----------------------------------------------------------------------------- CheXpert: MRM's split and labels


def write_image(path: Path, seed: int) -> None:
    """A small textured grey JPEG, distinct per seed (no two are duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse = np.random.default_rng(seed).integers(0, 255, (5, 5)).astype(np.uint8)
    Image.fromarray(coarse).resize((40, 40), Image.Resampling.BILINEAR).save(path)


def chexpert_layout(root: Path) -> pd.DataFrame:
    """CheXpert-v1.0-small: 30 train patients of 1-3 images, 5 valid patients of 2; labels of 1, 0, -1, blank."""
    rng, rows = np.random.default_rng(0), []
    five = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    for part, patients, first in (("train", 30, 0), ("valid", 5, 64541)):
        for p in range(patients):
            for v in range(2 if part == "valid" else 1 + p % 3):
                rel = f"CheXpert-v1.0-small/{part}/patient{first + p:05d}/study1/view{v + 1}_frontal.jpg"
                write_image(root / rel, len(rows))
                row = {
                    "Path": rel,
                    "Frontal/Lateral": "Frontal" if v == 0 else "Lateral",
                    "AP/PA": "PA" if v == 0 else "",
                }
                row |= {f: rng.choice(["1.0", "0.0", "-1.0", ""]) for f in CHEXPERT_FINDINGS}
                row[five[len(rows) % 5]] = "1.0"  # every finding positive in both parts
                rows.append(row | {"part": part})
    table = pd.DataFrame(rows)
    for part, name in (("train", "train.csv"), ("valid", "valid.csv")):
        table[table["part"] == part].drop(columns="part").to_csv(root / "CheXpert-v1.0-small" / name, index=False)
    return table


def run_split(tmp_path: Path, settings: dict) -> subprocess.CompletedProcess:
    """scripts/split.py (the split rule's command) on tmp_path/p/manifest.csv, writing tmp_path/split.csv."""
    command = [sys.executable, str(REPO_ROOT / "scripts" / "split.py"), "--manifest", str(tmp_path / "p" /
               "manifest.csv"), "--settings", json.dumps(settings), "--out", str(tmp_path / "split.csv")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run(command, env=env, capture_output=True, text=True)


def test_chexpert_protocol_official_valid_as_test_val_count_and_mrm_labels(tmp_path: Path):
    config = load_config(CONFIG)
    table = chexpert_layout(tmp_path / "chexpert")
    dataset, split_settings = entry_sections(config, "chexpert")
    dataset["source"] = str(tmp_path / "chexpert")
    (tmp_path / "source.json").write_text(json.dumps({"root": str(tmp_path / "chexpert")}))
    prepare(tmp_path / "source.json", dataset, {"image_size": 16, "on_bad_image": "fail", "workers": 1}, tmp_path / "p")
    labels = np.load(tmp_path / "p" / "labels.npy")
    manifest = pd.read_csv(tmp_path / "p" / "manifest.csv", keep_default_na=False)
    expected = [
        [int(row[f] == "1.0" or (row[f] == "-1.0" and f in U_ONES)) for f in dataset["findings"]]
        for _, row in table.iterrows()
    ]
    assert len(manifest) == len(table) and labels.tolist() == expected  # no 255: every -1 has its finding's policy

    # The split rule's script, with the config's split settings (val_count 20 in place of 5,000 on this fake).
    assert split_settings["use_official"] and split_settings["val_count"] == 5000
    assert run_split(tmp_path, split_settings | {"val_count": 20}).returncode == 0
    split = pd.read_csv(tmp_path / "split.csv", keep_default_na=False)
    split = split.merge(manifest[["index", "official"]], on="index")
    official_valid = set(split.loc[split["official"] == "test", "index"])
    assert len(official_valid) == (table["part"] == "valid").sum() == 10
    assert set(split.loc[split["part"] == "test", "index"]) == official_valid
    assert (split["part"] == "val").sum() == 20 and (split.loc[split["part"] == "val", "official"] == "train").all()
    assert (split.groupby("group")["part"].nunique() == 1).all()  # patient-grouped
    failed = run_split(tmp_path, split_settings | {"val_count": 60})  # the training part has 60 images
    assert failed.returncode == 1 and "split.val_count is 60" in failed.stderr + failed.stdout


# ----------------------------------------------------------------------------- NIH: both published protocols


def nih_manifest(root: Path) -> pd.DataFrame:
    """A manifest of a fake NIH tree (40 patients of 2-3 images, official lists): the columns the split reads."""
    rng, entries, n = np.random.default_rng(1), [], 0
    for patient in range(1, 41):
        for follow_up in range(2 + patient % 2):
            name = f"{patient:08d}_{follow_up:03d}.png"
            (root / "images_001" / "images").mkdir(parents=True, exist_ok=True)
            (root / "images_001" / "images" / name).touch()  # listed only; nothing decodes it here
            found = [f for f in NIH_FINDINGS[:4] if rng.random() < 0.35] or ["No Finding"]
            found = found if n % 4 else [*{NIH_FINDINGS[n // 4 % 4], NIH_FINDINGS[(n // 4 + 1) % 4]}]
            entries.append({"Image Index": name, "Finding Labels": "|".join(found), "Patient ID": str(patient),
                            "View Position": "PA"})  # fmt: skip
            n += 1
    pd.DataFrame(entries).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    test = [e["Image Index"] for e in entries if int(e["Patient ID"]) > 30]  # the official list is patient-wise
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    train_val = [e["Image Index"] for e in entries if e["Image Index"] not in test]
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    records, _ = public_records("nih_cxr14", root)
    return pd.DataFrame({"index": range(len(records)), "id": [r.image.name for r in records],
                         "label": [r.label for r in records], "group": [r.group for r in records],
                         "official": [r.official for r in records]})  # fmt: skip


@pytest.mark.parametrize("official", [False, True], ids=["mrm_70_10_20", "official_test_list"])
def test_nih_supports_mrm_patient_split_and_the_official_test_list(tmp_path: Path, official: bool):
    manifest = nih_manifest(tmp_path)
    _, settings = entry_sections(load_config(CONFIG), "nih")
    split = split_dataset(manifest, settings["test_fraction"], settings["val_fraction"], settings["seed"],
                          use_official=official, val_count=settings.get("val_count"))  # fmt: skip
    assert (split.groupby("group")["part"].nunique() == 1).all()
    share = split["part"].value_counts(normalize=True)
    if official:
        assert set(split.loc[split["part"] == "test", "id"]) == set(manifest.loc[manifest["official"] == "test", "id"])
    else:
        assert abs(share["test"] - 0.2) < 0.04 and abs(share["val"] - 0.1) < 0.04 and abs(share["train"] - 0.7) < 0.05
