"""Segmentation fine-tuning (dataset.task: segmentation): prepared lesion masks, the contract files, learning,
pretrained encoders, determinism and the DAG-build check of dataset.segment."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_finetune import REPO
from test_host_sync import host_reads  # noqa: F401 (a fixture)
from test_prepare import DATASET as MANIFEST_DATASET
from test_prepare import make_dataset

from cxrmim.checks import check_dataset_options
from cxrmim.data.acquire import acquire
from cxrmim.data.prepare import prepare
from cxrmim.data.readers import resize_to_grid
from cxrmim.inits import parse_init
from cxrmim.models.encoders import InputNorm, create_encoder, save_encoder, timm_kwargs
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.segment_data import PREDICTION_COLUMNS, load_segment_data
from cxrmim.train.segment_run import segment_finetune
from cxrmim.train.segment_task import build_segmentation_model

SIZE, PATCH = 32, 8
TINY_VIT = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}}
RESNET = {"timm_name": "resnet10t", "kwargs": {"channels": [16, 32, 64, 128]}}  # a small U-Net encoder
SETTINGS = {
    "epochs": 2,
    "batch_size": 8,
    "base_lr": 0.5,
    "weight_decay": 0.0,
    "layer_decay": 0.75,
    "warmup_epochs": 0,
    "min_steps": 4,
    "augment": {"crop_scale": [0.8, 1.0], "hflip": True},
    "device": "cpu",
}


def write_split(prepared: Path, root: Path, parts: dict[str, int]) -> dict[str, Path]:
    """split.csv (the first rows train, then val, then test) and the subset of every training image."""
    manifest = pd.read_csv(prepared / "manifest.csv", keep_default_na=False)
    names = [name for name, count in parts.items() for _ in range(count)]
    split = manifest[["index", "id", "label", "group"]].iloc[: len(names)].assign(part=names)
    split.to_csv(root / "split.csv", index=False)
    split[split["part"] == "train"][["index", "id", "label"]].to_csv(root / "subset.csv", index=False)
    return {"prepared": prepared, "split": root / "split.csv", "subset": root / "subset.csv"}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 phantoms downloaded and prepared at 32 px: 12 train, 6 val, 6 test."""
    root = tmp_path_factory.mktemp("phantoms")
    dataset = {"name": "tiny", "kind": "synthetic", "synthetic": {"n_images": 24, "image_size": 48, "seed": 3}}
    acquire(dataset, root / "raw", root / "marker.json")
    prepare(root / "marker.json", dataset, {"image_size": SIZE, "workers": 1}, root / "prepared")
    return write_split(root / "prepared", root, {"train": 12, "val": 6, "test": 6})


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trivially learnable cache (make_squares)."""
    return make_squares(tmp_path_factory.mktemp("squares"))


def make_squares(root: Path) -> dict[str, Path]:
    """The lesion is a bright square on dark noise (absent in every fourth image); 24 train, 8 val, 8 test."""
    rng = np.random.default_rng(0)
    n = 40
    images = rng.integers(0, 50, size=(n, SIZE, SIZE)).astype(np.uint8)
    lesions = np.zeros_like(images)
    for i in range(n):
        if i % 4:
            y, x = rng.integers(2, SIZE - 14, size=2)
            images[i, y : y + 12, x : x + 12] = 230
            lesions[i, y : y + 12, x : x + 12] = 1
    prepared = root / "prepared"
    prepared.mkdir()
    np.save(prepared / "images.npy", images)
    np.save(prepared / "masks.npy", np.ones_like(images))
    np.save(prepared / "lesion_masks.npy", lesions)
    pd.DataFrame(
        {"index": range(n), "id": [f"s{i}" for i in range(n)], "label": ["A", "B"] * (n // 2), "source": "s",
         "group": [f"g{i}" for i in range(n)], "view": "PA", "has_mask": 1, "report": ""}
    ).to_csv(prepared / "manifest.csv", index=False)  # fmt: skip
    return write_split(prepared, root, {"train": 24, "val": 8, "test": 8})


def run(cache: dict[str, Path], segment="lesion", init="scratch_vit", encoder=TINY_VIT, weights=None, **overrides):
    """Fine-tune in-process on a cache."""
    data = load_segment_data(cache["prepared"], cache["split"], cache["subset"], segment)
    settings = FinetuneSettings.from_config({**SETTINGS, **overrides})
    patch = None if weights else PATCH  # a pretrained encoder's file carries its patch size
    return segment_finetune(
        data, parse_init(init), encoder, settings, seed=0, fraction=1.0, weights=weights, patch_size=patch
    )


def test_prepare_writes_the_phantoms_lesion_masks_and_an_empty_file_elsewhere(phantoms, tmp_path: Path) -> None:
    lesions = np.load(phantoms["prepared"] / "lesion_masks.npy")
    with np.load(Path(json.loads((phantoms["prepared"].parent / "marker.json").read_text())["root"])) as raw:
        expected = np.stack([resize_to_grid(m, SIZE, is_mask=True) for m in raw["lesions"]])
    assert lesions.shape == (24, SIZE, SIZE) and lesions.dtype == np.uint8
    assert np.array_equal(lesions, expected) and lesions.any()
    summary = json.loads((phantoms["prepared"] / "summary.json").read_text())
    assert summary["n_with_lesion"] == int(lesions.reshape(24, -1).any(axis=1).sum())
    prepare(make_dataset(tmp_path), MANIFEST_DATASET, {"image_size": 16, "workers": 1}, tmp_path / "out")
    empty = np.load(tmp_path / "out" / "lesion_masks.npy")
    assert empty.shape == (0,) and empty.dtype == np.uint8


def test_cli_writes_the_contract_files_for_phantom_lesions(phantoms, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cli = importlib.util.spec_from_file_location("finetune_cli", REPO / "scripts" / "finetune.py")
    module = importlib.util.module_from_spec(cli)
    cli.loader.exec_module(module)
    module.main(
        ["--prepared", str(phantoms["prepared"]), "--split", str(phantoms["split"]), "--subset",
         str(phantoms["subset"]), "--init", "scratch_vit", "--encoder", json.dumps(TINY_VIT), "--settings",
         json.dumps(SETTINGS), "--patch-size", str(PATCH), "--seed", "1", "--budget", "frac1", "--task",
         "segmentation", "--segment", "lesion", "--out", str(out)]
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and metrics["segment"] == "lesion"
    assert metrics["method"] == "From Scratch" and metrics["n_labels"] == 12 and metrics["budget"] == "frac1"
    assert metrics["seed"] == 1 and metrics["best_epoch"] in (1, 2) and metrics["selection"] == "val_dice"
    for part, n in (("val", 6), ("test", 6)):
        assert set(metrics[part]) >= {"dice", "iou", "kaggle_dice", "n", "n_positive"} and metrics[part]["n"] == n
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1, 2] and {"train_loss", "val_dice", "test_dice"} <= set(history.columns)
    assert history.loc[metrics["best_epoch"] - 1, "test_dice"] == pytest.approx(metrics["test"]["dice"], nan_ok=True)
    predictions = pd.read_csv(out / "predictions.csv")
    split = pd.read_csv(phantoms["split"])
    assert list(predictions.columns) == PREDICTION_COLUMNS
    assert list(predictions["index"]) == list(split.loc[split["part"] == "test", "index"])
    truth = np.load(phantoms["prepared"] / "lesion_masks.npy")[predictions["index"]]
    assert list(predictions["positive"]) == list(truth.reshape(6, -1).any(axis=1).astype(int))
    assert predictions.loc[predictions["positive"] == 0, "dice"].isna().all()
    masks = np.load(out / "predicted_masks.npy")
    assert masks.shape == (6, SIZE, SIZE) and masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, 1}
    assert metrics["test"]["n_positive"] == int(predictions["positive"].sum())


def test_lung_segmentation_reads_the_lung_masks_with_a_cnn(phantoms) -> None:
    result = run(phantoms, segment="lung", init="scratch_resnet", encoder=RESNET, epochs=1, mode="probe")
    assert result.metrics["segment"] == "lung" and result.masks.shape == (6, SIZE, SIZE)
    assert result.metrics["test"]["n_positive"] == 6  # every phantom has lungs
    assert result.metrics["architecture"] == "resnet10t" and result.metrics["model"]["decoder"] == "UNetHead"


def test_dice_on_a_learnable_case_beats_an_untrained_model(squares) -> None:
    untrained = run(squares, epochs=1, base_lr=0.0).metrics["test"]["dice"]  # lr 0: the initial weights
    trained = run(squares, epochs=8, base_lr=2.0).metrics["test"]["dice"]  # about 0.77
    assert trained > 0.5 and trained > untrained + 0.3


def test_same_seed_gives_identical_results(squares) -> None:
    first, second = run(squares, epochs=1), run(squares, epochs=1)
    assert first.metrics == second.metrics and np.array_equal(first.masks, second.masks)


def test_pretrained_encoder_loads_strictly(squares, tmp_path: Path) -> None:
    encoder = create_encoder(TINY_VIT, SIZE, PATCH, num_classes=0)
    torch.nn.init.constant_(encoder.blocks[0].mlp.fc1.weight, 0.123)
    weights = tmp_path / "mae_r0.75_vit_s0" / "encoder.safetensors"
    save_encoder(encoder, weights, TINY_VIT["timm_name"], timm_kwargs(TINY_VIT, SIZE, PATCH, 0), InputNorm(0.4, 0.2))
    init = parse_init("mae_r0.75_vit_s0")
    model, norm, _, method = build_segmentation_model(init, TINY_VIT, str(weights), SIZE, PATCH, 0.0)
    assert torch.all(model.encoder.blocks[0].mlp.fc1.weight == 0.123) and norm.as_dict()["mean"] == [0.4]
    wider = {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"], "embed_dim": 48}}
    with pytest.raises(ValueError, match="do not fit the configured encoder"):
        build_segmentation_model(init, wider, str(weights), SIZE, PATCH, 0.0)
    result = run(squares, init="mae_r0.75_vit_s0", weights=str(weights), epochs=1)
    assert result.metrics["method"] == method == "MAE" and result.metrics["input_norm"]["std"] == [0.2]


def test_an_empty_lesion_file_names_the_fix(tmp_path: Path) -> None:
    prepare(make_dataset(tmp_path), MANIFEST_DATASET, {"image_size": 16, "workers": 1}, tmp_path / "out")
    cache = write_split(tmp_path / "out", tmp_path, {"train": 2, "val": 1, "test": 1})
    with pytest.raises(ValueError, match="dataset.segment: lung"):
        load_segment_data(cache["prepared"], cache["split"], cache["subset"], "lesion")


def test_dag_check_refuses_lesion_masks_a_kind_lacks() -> None:
    dataset = {"name": "covid", "kind": "covid19_radiography", "task": "segmentation", "segment": "lesion"}
    with pytest.raises(ValueError, match="no lesion masks.*dataset.segment: lung"):
        check_dataset_options({"dataset": dataset})
    check_dataset_options({"dataset": {**dataset, "segment": "lung"}})
    for kind in ("synthetic", "siim_acr"):
        check_dataset_options({"dataset": {**dataset, "kind": kind}})
    with pytest.raises(ValueError, match="without lung masks; use dataset.segment: lesion"):
        check_dataset_options({"dataset": {"name": "siim", "kind": "siim_acr", "task": "segmentation"}})
    with pytest.raises(ValueError, match="dataset.task: segmentation"):
        check_dataset_options({"dataset": {**dataset, "kind": "synthetic", "task": "binary"}})


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_no_host_read_per_training_step(squares, host_reads, mode: str) -> None:  # noqa: F811 (the fixture)
    result = run(squares, epochs=2, batch_size=4, min_steps=24, mode=mode)
    steps = result.metrics["steps"]
    assert steps == 24 and host_reads  # the counter sees the per-epoch reads
    per_step = {site: n for site, n in host_reads.items() if n >= steps}
    assert not per_step, f"host reads inside the training step: {per_step}"
