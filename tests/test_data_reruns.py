"""Edits to a dataset's files rerun download, prepare and what follows; an untouched dataset reruns nothing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import image_only_methods, snakemake
from PIL import Image

from cxrmim.data.fingerprint import dataset_fingerprint

TARGET = "results/edits/split/split.csv"


def texture(seed: int) -> np.ndarray:
    """A smooth random grey image, different for every seed."""
    coarse = np.random.default_rng(seed).integers(0, 255, (6, 6)).astype(np.uint8)
    return np.array(Image.fromarray(coarse).resize((64, 64), Image.Resampling.BICUBIC))


def write_manifest_dataset(folder: Path, n: int = 16) -> Path:
    """n distinct PNGs in two classes and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(texture(i)).save(folder / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "label": "AB"[i % 2], "patient_id": f"p{i}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def planned_rules(workdir: Path, config: Path) -> set[str]:
    """Rules a dry run would run for TARGET."""
    result = snakemake(workdir, TARGET, "-n", configs=(config,))
    out = result.stdout + result.stderr
    if "Nothing to be done" in out:
        return set()
    return {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith(("rule ", "localrule "))}


@pytest.mark.slow
def test_data_edits_rerun_prepare_and_downstream(tmp_path: Path):
    csv = write_manifest_dataset(tmp_path / "data")
    config = tmp_path / "edits.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "edits", "kind": "manifest", "source": str(csv)},
                "prepare": {"image_size": 32, "workers": 1, "min_image_side": 16},
                "patch_validity": {"patch_size": 8, "no_mask_policy": "all_valid"},
                **image_only_methods(),
            }
        )
    )
    snakemake(tmp_path, TARGET, configs=(config,))
    assert planned_rules(tmp_path, config) == set(), "an untouched dataset must rerun nothing"
    data_stages = {"download", "prepare", "split"}

    frame = pd.read_csv(csv)
    frame.loc[3, "label"] = "B" if frame.loc[3, "label"] == "A" else "A"  # fix a label
    frame.to_csv(csv, index=False)
    assert planned_rules(tmp_path, config) >= data_stages
    snakemake(tmp_path, TARGET, configs=(config,))

    Image.fromarray(255 - texture(5)).save(tmp_path / "data" / "img5.png")  # replace a corrupt image
    assert planned_rules(tmp_path, config) >= data_stages
    snakemake(tmp_path, TARGET, configs=(config,))

    Image.fromarray(texture(99)).save(tmp_path / "data" / "new.png")  # add a row
    frame = pd.concat([pd.read_csv(csv), pd.DataFrame([{"image": "new.png", "label": "A", "patient_id": "p99"}])])
    frame.to_csv(csv, index=False)
    assert planned_rules(tmp_path, config) >= data_stages
    snakemake(tmp_path, TARGET, configs=(config,))
    assert len(pd.read_csv(tmp_path / "results" / "edits" / "prepared" / "manifest.csv")) == 17
    assert planned_rules(tmp_path, config) == set()

    # A user mistake costs an error before any job, not a rerun: the last run's outputs stay in place.
    prepared = tmp_path / "results" / "edits" / "prepared" / "images.npy"
    good = csv.read_bytes()
    csv.write_bytes(good.replace(b"label", b"lable", 1))  # a misspelt header
    failed = snakemake(tmp_path, TARGET, configs=(config,), check=False)
    assert failed.returncode != 0 and "missing required column label" in failed.stdout + failed.stderr
    assert prepared.is_file() and (tmp_path / "results" / "edits" / "download" / "source.json").is_file()
    csv.write_bytes(good)  # fixed: same bytes, newer mtime
    assert planned_rules(tmp_path, config) == set()
    (tmp_path / "data").rename(tmp_path / "data_renamed")
    failed = snakemake(tmp_path, TARGET, "-n", configs=(config,), check=False)
    assert failed.returncode != 0 and "does not exist (renamed or moved?)" in failed.stdout + failed.stderr
    (tmp_path / "data_renamed").rename(tmp_path / "data")
    assert planned_rules(tmp_path, config) == set()
    # Keys that cannot change a stage's output are not its params: phantom settings on a manifest dataset.
    settings = yaml.safe_load(config.read_text())
    settings["dataset"]["synthetic"] = {"n_images": 77}
    config.write_text(yaml.safe_dump(settings))
    assert planned_rules(tmp_path, config) == set()


def test_fingerprint_follows_files_of_every_kind(tmp_path: Path):
    csv = write_manifest_dataset(tmp_path / "data", n=3)
    folder = {"kind": "covid19_radiography", "source": str(tmp_path / "data")}
    manifest = {"kind": "manifest", "source": str(csv)}
    archive = tmp_path / "set.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    zipped = {"kind": "covid19_radiography", "source": str(archive)}
    before = {
        name: dataset_fingerprint(cfg) for name, cfg in (("folder", folder), ("manifest", manifest), ("zip", zipped))
    }
    assert all(before.values()) and dataset_fingerprint({"kind": "synthetic"}) == ""
    assert {
        name: dataset_fingerprint(cfg) for name, cfg in (("folder", folder), ("manifest", manifest), ("zip", zipped))
    } == before
    image = tmp_path / "data" / "img1.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    archive.write_bytes(archive.read_bytes() + b"\0")
    assert dataset_fingerprint(folder) != before["folder"] and dataset_fingerprint(manifest) != before["manifest"]
    assert dataset_fingerprint(zipped) != before["zip"]


@pytest.mark.slow
def test_workflow_rejects_patch_size_not_dividing_image_size(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"prepare": {"image_size": 36}, "patch_validity": {"patch_size": 8}}))
    result = snakemake(tmp_path, "-n", configs=(bad,), check=False)
    assert result.returncode != 0
    assert "patch_validity.patch_size 8 does not divide prepare.image_size 36" in result.stdout + result.stderr
