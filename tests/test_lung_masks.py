"""The lung_masks stage: post-processing, QC, the segmenter on phantoms, and the workflow on mask-less data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import snakemake
from PIL import Image

from cxrmim.data.mask_qc import decide, qc_table
from cxrmim.data.synthetic import PhantomSettings, generate_dataset
from cxrmim.device import select_device
from cxrmim.segment.model import SegmenterSpec, build_segmenter, load_segmenter, save_segmenter
from cxrmim.segment.postprocess import clean_mask, dice_iou
from cxrmim.segment.train import evaluate, train_segmenter
from cxrmim.segment.training_data import load_training_sources

# timm's tiny test network keeps CPU training in seconds; the default config uses resnet18.
SMALL = {
    "image_size": 64,
    "encoder": "test_efficientnet",
    "decoder_channels": [32, 16, 16, 16],
    "epochs": 5,
    "batch_size": 8,
    "lr": 3e-3,
    "seed": 0,
    "holdout_fraction": 0.25,
    "device": "cpu",
    "augment": {"crop_scale": [0.7, 1.0], "hflip": False},
}


def two_lungs(size: int = 32) -> np.ndarray:
    """A boolean mask with two rectangular 'lungs'."""
    mask = np.zeros((size, size), bool)
    mask[6:26, 4:13] = True
    mask[6:26, 19:28] = True
    return mask


def test_clean_mask_keeps_two_largest_fills_holes_and_dilates():
    mask = two_lungs()
    mask[10, 8] = False  # a hole
    mask[1, 1] = True  # a speck
    cleaned = clean_mask(mask)
    assert cleaned[10, 8] and not cleaned[1, 1]
    assert np.array_equal(cleaned, two_lungs())
    grown = clean_mask(mask, dilation=2)
    assert grown.sum() > cleaned.sum() and grown[6:26, 2].all() and not grown[3, 2]


def test_dice_iou():
    a = two_lungs()
    b = a.copy()
    b[:, 19:] = False
    dice, iou = dice_iou(np.stack([a, a, np.zeros_like(a)]), np.stack([a, b, np.zeros_like(a)]))
    assert dice[0] == 1 and iou[0] == 1 and dice[2] == 1
    assert dice[1] == pytest.approx(2 * b.sum() / (a.sum() + b.sum())) and iou[1] == pytest.approx(b.sum() / a.sum())


def test_qc_flags_black_image_and_implausible_masks():
    rng = np.random.default_rng(0)
    textured = rng.integers(40, 200, (32, 32), dtype=np.uint8)
    one_lung = two_lungs()
    one_lung[:, 16:] = False
    images = np.stack([textured, np.zeros((32, 32), np.uint8), textured, textured])
    masks = np.stack([two_lungs(), two_lungs(), one_lung, np.ones((32, 32), bool)])
    table = qc_table(images, masks, None, {})
    assert table["plausible"].tolist() == [1, 0, 0, 0]
    assert "blank_image" in table.loc[1, "flags"]
    assert table.loc[2, "flags"] == "one_lung"
    assert {"too_large", "touches_border"} <= set(table.loc[3, "flags"].split(";"))
    empty = qc_table(images[1:2], np.zeros((1, 32, 32), bool), None, {})
    assert {"blank_image", "too_small", "one_lung"} <= set(empty.loc[0, "flags"].split(";"))
    assert decide(table["plausible"], "skip").tolist() == ["mask", "skip", "skip", "skip"]
    assert decide(table["plausible"], "keep").tolist() == ["mask"] * 4
    assert decide(table["plausible"], "all_valid")[1] == "all_valid"


def test_segmenter_file_round_trip(tmp_path: Path):
    spec = SegmenterSpec.from_settings(SMALL)
    model = build_segmenter(spec).eval()
    x = torch.randn(2, 1, 64, 64)
    assert model(x).shape == (2, 1, 64, 64)
    save_segmenter(model, spec, tmp_path / "seg.safetensors")
    other = SegmenterSpec("resnet18", (64, 32, 16, 16), 128)  # ignored: the file carries its own spec
    loaded, loaded_spec = load_segmenter(tmp_path / "seg.safetensors", other)
    assert loaded_spec == spec
    assert torch.allclose(loaded.eval()(x), model(x))
    torch.save(model.state_dict(), tmp_path / "seg.pt")  # a plain checkpoint uses the configured architecture
    assert torch.allclose(load_segmenter(tmp_path / "seg.pt", spec)[0].eval()(x), model(x))
    with pytest.raises(ValueError, match="decoder_channels"):
        load_segmenter(tmp_path / "seg.pt", other)


@pytest.mark.slow
def test_training_on_phantoms_reaches_high_dice():
    data = load_training_sources([{"kind": "synthetic", "synthetic": {"n_images": 120, "image_size": 64}}], 64)
    setup = select_device("cpu")
    trained = train_segmenter(data, SMALL, setup)
    quality, masks, _dice = evaluate(trained, data, setup)
    held_groups = set(data.groups[trained.holdout])
    assert held_groups.isdisjoint(data.groups[~trained.holdout])  # follow-up images stay with their patient
    assert quality["n_holdout"] >= 20 and masks.shape == (quality["n_holdout"], 64, 64)
    assert quality["holdout"]["dice_mean"] > 0.85, quality["holdout"]


def write_maskless_manifest(folder: Path, n: int = 12) -> Path:
    """Phantom PNGs plus one nearly black PNG (prepare keeps it: not constant) in a manifest without a mask column."""
    phantoms = generate_dataset(PhantomSettings(n_images=n, image_size=64, seed=99))
    rows = []
    for i, image in enumerate(phantoms["images"]):
        Image.fromarray(image).save(folder / f"p{i:02d}.png")
        rows.append({"image": f"p{i:02d}.png", "label": phantoms["labels"][i]})
    faint = np.zeros((64, 64), np.uint8)
    faint[::2, ::2] = 2  # a few grey levels: no anatomy (the mask QC's blank_image), but not a constant export
    Image.fromarray(faint).save(folder / "black.png")
    rows.append({"image": "black.png", "label": "Normal"})
    csv = folder / "maskless.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.mark.slow
def test_workflow_predicts_masks_for_dataset_without_masks(tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    csv = write_maskless_manifest(data_dir)
    override = {
        "dataset": {"name": "maskless", "kind": "manifest", "source": str(csv)},
        "lung_masks": {
            **{k: v for k, v in SMALL.items() if k != "holdout_fraction"},
            "mode": "train_and_predict",
            "holdout_fraction": 0.2,
            "qc_policy": "skip",
            "workers": 1,
            "train_sources": [{"kind": "synthetic", "synthetic": {"n_images": 100, "image_size": 64}}],
            "resources": {"gpu": 0, "mem_mb": 1000, "runtime": 10, "cpus": 2},
        },
        "patch_validity": {"no_mask_policy": "fail"},  # would fail on mask-less images without predicted masks
    }
    config = tmp_path / "maskless.yaml"
    config.write_text(yaml.safe_dump(override))
    snakemake(
        tmp_path,
        "results/maskless/patch_validity/validity.npz",
        configs=(Path(__file__).parent / "configs" / "tiny.yaml", config),
    )
    results = tmp_path / "results" / "maskless"
    prepared = np.load(results / "prepared" / "images.npy")
    masks = np.load(results / "lung_masks" / "masks.npy")
    assert masks.shape == prepared.shape == (13, 32, 32) and set(np.unique(masks)) <= {0, 1}
    qc = pd.read_csv(results / "lung_masks" / "qc.csv", keep_default_na=False)
    black = qc.index[qc["id"] == qc["id"].iloc[-1]][0]
    assert qc.loc[black, "plausible"] == 0 and "blank_image" in qc.loc[black, "flags"]
    assert qc.loc[black, "decision"] == "skip"
    assert (qc["plausible"].iloc[:-1] == 1).mean() >= 0.75  # phantoms mostly pass QC
    quality = json.loads((results / "lung_masks" / "segmenter_quality.json").read_text())
    assert quality["holdout"]["dice_mean"] > 0.8
    validity = np.load(results / "patch_validity" / "validity.npz")
    assert validity["valid"].shape == (13, 16)
    assert not validity["include"][black] and validity["include"][:-1].all()
    assert validity["has_mask"][:-1].sum() == (qc["decision"].iloc[:-1] == "mask").sum()
    # The predicted masks, not the (empty) prepared ones, decide the patches of a plausible image.
    good = int(np.flatnonzero(qc["decision"] == "mask")[0])
    assert 0 < validity["valid"][good].sum() < 16
    for name in ("lung_mask_qc.png", "lung_segmenter_holdout.png"):
        assert (results / "figures" / name).stat().st_size > 1000
    for rule in ("train_segmenter", "lung_masks"):
        assert (results / "logs" / f"{rule}.log").exists() and (results / "benchmarks" / f"{rule}.tsv").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_real_segmenter_on_cohen_then_kermany(tmp_path: Path, realdata: Path):
    """Train on Cohen COVID lung masks (held out by patient), then predict masks for Kermany paediatric images."""
    override = {
        "dataset": {
            "name": "kermany",
            "kind": "manifest",
            "source": str(realdata / "kermany_pediatric_nomasks" / "manifest.csv"),
        },
        "prepare": {"image_size": 64, "workers": 2},
        "lung_masks": {
            "mode": "train_and_predict",
            "image_size": 128,
            "encoder": "resnet18",
            "decoder_channels": [64, 32, 16, 16],
            "epochs": 12,
            "batch_size": 8,
            "lr": 3e-3,
            "holdout_fraction": 0.2,
            "device": "auto",
            "workers": 2,
            "qc_policy": "all_valid",
            "train_sources": [{"kind": "manifest", "source": str(realdata / "cohen_covid_lungmasks" / "manifest.csv")}],
        },
        "patch_validity": {"no_mask_policy": "fail"},
    }
    config = tmp_path / "kermany.yaml"
    config.write_text(yaml.safe_dump(override))
    snakemake(
        tmp_path,
        "results/kermany/patch_validity/validity.npz",
        configs=(Path(__file__).parent / "configs" / "tiny.yaml", config),
    )
    results = tmp_path / "results" / "kermany"
    quality = json.loads((results / "lung_masks" / "segmenter_quality.json").read_text())
    print("Cohen held-out:", json.dumps(quality["holdout"]))
    assert quality["n_holdout"] >= 30 and quality["holdout"]["dice_mean"] > 0.7
    masks = np.load(results / "lung_masks" / "masks.npy")
    qc = pd.read_csv(results / "lung_masks" / "qc.csv", keep_default_na=False)
    assert masks.shape == (108, 64, 64) and len(qc) == 108
    print("Kermany QC:", qc["flags"].replace("", "ok").value_counts().to_dict())
    assert qc["plausible"].mean() > 0.6 and qc["area_fraction"].median() > 0.1
    validity = np.load(results / "patch_validity" / "validity.npz")
    assert validity["valid"].shape == (108, 64)
