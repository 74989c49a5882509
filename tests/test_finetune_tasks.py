"""Binary and multilabel fine-tuning, the linear probe, augmentation presets and count budgets."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_finetune import PATCH, REPO, SETTINGS, TINY_VIT, make_cache

from cxrmim.evaluation import binary_metrics, choose_threshold, multilabel_metrics
from cxrmim.inits import parse_init
from cxrmim.models.encoders import GREY_NORM, create_encoder
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.finetune import finetune
from cxrmim.train.finetune_augment import AUGMENT_PRESETS, applied_preset, augment_images
from cxrmim.train.finetune_data import load_finetune_data
from cxrmim.train.finetune_optim import param_groups
from cxrmim.train.finetune_task import freeze_for_probe, task_loss

FINDINGS = ["Effusion", "Nodule"]


def test_binary_metrics_at_a_threshold() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    metrics = binary_metrics(labels, scores, threshold=0.5)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3) and metrics["auc"] == pytest.approx(5 / 6)
    assert binary_metrics(labels, scores, threshold=0.35)["recall"] == pytest.approx(1.0)


def test_threshold_is_chosen_on_validation_scores() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35])  # separable only below 0.5
    threshold = choose_threshold(labels, scores)
    assert 0.2 < threshold <= 0.3
    assert binary_metrics(labels, scores, threshold)["accuracy"] == 1.0
    assert choose_threshold(np.zeros(3, int), np.array([0.1, 0.2, 0.3])) == 0.5  # one class: undefined


def test_multilabel_auc_ignores_uncertain_labels() -> None:
    labels = np.array([[1, 0], [0, 1], [255, 0], [1, 255], [0, 1]], dtype=np.uint8)
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.0, 0.3], [0.2, 0.5], [0.3, 0.1]])
    metrics = multilabel_metrics(labels, probs, FINDINGS)
    # Effusion: certain rows 0,1,3,4 -> positives 0.9, 0.2 vs negatives 0.1, 0.3: 3 of 4 pairs ordered.
    assert metrics["auc_Effusion"] == pytest.approx(0.75)
    assert metrics["auc_Nodule"] == pytest.approx(0.5)  # 0.8 > 0.2, 0.3 but 0.1 below both
    assert metrics["auc_mean"] == pytest.approx(0.625) and metrics["n_auc_findings"] == 2


def test_bce_loss_leaves_uncertain_targets_out() -> None:
    targets = torch.tensor([[1, 255], [0, 1]], dtype=torch.uint8)
    logits = torch.tensor([[2.0, 0.0], [-1.0, 3.0]])
    changed = logits.clone()
    changed[0, 1] = -50.0  # only the uncertain entry moves
    assert torch.equal(task_loss(logits, targets, True), task_loss(changed, targets, True))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert task_loss(logits, targets, True) == pytest.approx(float(expected))


@pytest.fixture(scope="module")
def binary_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_cache(tmp_path_factory.mktemp("binary"), ["No Finding", "Finding"], {"train": 16, "val": 8, "test": 8})


def run(cache: dict[str, Path], task: str = "multiclass", positive: str | None = None, findings=None, **overrides):
    """Fine-tune a scratch tiny ViT in-process."""
    data = load_finetune_data(cache["prepared"], cache["split"], cache["subset"], task, positive, findings)
    settings = FinetuneSettings.from_config({**SETTINGS, "epochs": 2, **overrides})
    return finetune(data, parse_init("scratch_vit"), TINY_VIT, settings, seed=0, fraction=1.0, patch_size=PATCH)


def test_binary_task_reports_thresholded_metrics(binary_cache: dict[str, Path]) -> None:
    result = run(binary_cache, "binary", positive="Finding")
    metrics = result.metrics
    assert metrics["task"] == "binary" and metrics["classes"] == ["Finding"] and metrics["selection"] == "val_auc"
    for key in ("accuracy", "precision", "recall", "f1", "auc", "threshold"):
        assert key in metrics["test"] and key in metrics["val"]
    assert metrics["test"]["threshold"] == metrics["val"]["threshold"]  # chosen on validation, applied to test
    predictions = result.predictions
    assert list(predictions.columns) == ["index", "id", "label", "target", "pred", "prob_Finding"]
    assert (predictions["target"] == (predictions["label"] == "Finding")).all()
    assert (predictions["pred"] == predictions["target"]).mean() == pytest.approx(metrics["test"]["accuracy"])


def test_binary_positive_must_be_a_label(binary_cache: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="dataset.positive 'Pneumonia'"):
        load_finetune_data(
            binary_cache["prepared"], binary_cache["split"], binary_cache["subset"], "binary", "Pneumonia"
        )


@pytest.fixture(scope="module")
def multilabel_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two findings: the first present on 'Finding' images, the second random, some uncertain."""
    cache = make_cache(tmp_path_factory.mktemp("multi"), ["No Finding", "Finding"], {"train": 16, "val": 8, "test": 8})
    manifest = pd.read_csv(cache["prepared"] / "manifest.csv", keep_default_na=False)
    rng = np.random.default_rng(1)
    labels = np.stack([(manifest["label"] == "Finding").to_numpy(np.uint8), rng.integers(0, 2, len(manifest))], 1)
    labels[::5, 1] = 255
    np.save(cache["prepared"] / "labels.npy", labels.astype(np.uint8))
    (cache["prepared"] / "summary.json").write_text(json.dumps({"task": "multilabel", "findings": FINDINGS}))
    return cache


def test_multilabel_task_reports_auc_per_finding(multilabel_cache: dict[str, Path]) -> None:
    result = run(multilabel_cache, "multilabel", findings=FINDINGS)
    metrics = result.metrics
    assert metrics["task"] == "multilabel" and metrics["selection"] == "val_auc_mean"
    assert metrics["classes"] == FINDINGS
    assert {"auc_Effusion", "auc_Nodule", "auc_mean", "loss"} <= set(metrics["test"])
    assert {"val_auc_mean", "test_auc_Effusion"} <= set(result.history.columns)
    assert list(result.predictions.columns) == ["index", "id", "label", "prob_Effusion", "prob_Nodule"]


def test_multilabel_findings_must_match_the_cache(multilabel_cache: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="differ from dataset.findings"):
        run(multilabel_cache, "multilabel", findings=["Nodule", "Effusion"])


def test_probe_trains_only_the_head() -> None:
    model = create_encoder(TINY_VIT, 32, PATCH, num_classes=2)
    freeze_for_probe(model)
    trainable = {id(p) for group in param_groups(model, 0.05, None) for p in group["params"]}
    assert trainable == {id(p) for p in model.get_classifier().parameters()}


def test_probe_run_is_recorded(binary_cache: dict[str, Path]) -> None:
    metrics = run(binary_cache, "binary", positive="Finding", mode="probe", augment_preset="none").metrics
    assert metrics["mode"] == "probe" and metrics["augment"] == "none"


def test_native_preset_is_each_models_own() -> None:
    assert applied_preset("native", vit=True) == "randaugment" and applied_preset("native", vit=False) == "classic"
    assert applied_preset("classic", vit=True) == "classic"
    with pytest.raises(ValueError, match="augment preset 'mixup'"):
        applied_preset("mixup", vit=True)


def test_native_run_records_the_preset_it_applied(binary_cache: dict[str, Path]) -> None:
    metrics = run(binary_cache, "binary", positive="Finding", augment_preset="native").metrics
    assert metrics["augment"] == "native" and metrics["augment_applied"] == "randaugment"  # a ViT


@pytest.mark.parametrize("preset", [p for p in AUGMENT_PRESETS if p != "native"])
def test_augment_presets_are_seeded(preset: str) -> None:
    images = torch.randint(0, 256, (6, 32, 32), dtype=torch.uint8)
    settings = FinetuneSettings(epochs=1, batch_size=6, base_lr=1e-3, crop_scale=(0.8, 1.0), hflip=True, augment=preset)
    first = augment_images(images, GREY_NORM, settings, torch.Generator().manual_seed(3))
    again = augment_images(images, GREY_NORM, settings, torch.Generator().manual_seed(3))
    other = augment_images(images, GREY_NORM, settings, torch.Generator().manual_seed(4))
    plain = GREY_NORM.apply(images)
    assert first.shape == (6, 1, 32, 32) and torch.equal(first, again)
    if preset == "none":
        assert torch.allclose(first, plain)
    else:
        assert not torch.allclose(first, plain) and not torch.equal(first, other)
    low, high = GREY_NORM.apply(torch.tensor([[[0, 255]]], dtype=torch.uint8)).flatten().tolist()
    assert first.min() >= low - 1e-4 and first.max() <= high + 1e-4  # intensities stay in the image's range


def test_unknown_preset_is_rejected() -> None:
    settings = FinetuneSettings(epochs=1, batch_size=2, base_lr=1e-3, augment="mixup")
    with pytest.raises(ValueError, match="augment preset 'mixup'"):
        augment_images(torch.zeros(2, 8, 8, dtype=torch.uint8), GREY_NORM, settings, torch.Generator())


def test_cli_takes_a_count_budget(binary_cache: dict[str, Path], tmp_path: Path) -> None:
    cli = importlib.util.spec_from_file_location("finetune_cli", REPO / "scripts" / "finetune.py")
    module = importlib.util.module_from_spec(cli)
    cli.loader.exec_module(module)
    out = tmp_path / "run"
    module.main(
        [
            "--prepared",
            str(binary_cache["prepared"]),
            "--split",
            str(binary_cache["split"]),
            "--subset",
            str(binary_cache["subset"]),
            "--init",
            "scratch_vit",
            "--encoder",
            json.dumps(TINY_VIT),
            "--settings",
            json.dumps({**SETTINGS, "epochs": 1}),
            "--patch-size",
            str(PATCH),
            "--seed",
            "0",
            "--budget",
            "n16",
            "--task",
            "binary",
            "--positive",
            "Finding",
            "--mode",
            "full",
            "--augment",
            "classic",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["budget"] == "n16" and metrics["fraction"] is None and metrics["n_labels"] == 16
    assert (metrics["task"], metrics["mode"], metrics["augment"]) == ("binary", "full", "classic")
    with pytest.raises(ValueError, match="--budget 'some'"):
        module.parse_budget("some", None)
