"""A tiny phantom dataset with reports, as the workflow prepares it (cache, split, validity, tokenizer), and fake
fine-tuning runs whose predictions have exactly the accuracy asked for (tables, figures, report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cxrmim.data.acquire import acquire
from cxrmim.data.prepare import prepare
from cxrmim.data.splits import split_dataset
from cxrmim.data.validity import run_patch_validity
from cxrmim.evaluation import classification_metrics
from cxrmim.text.stage import build_tokenizer

TEXT = {"tokenizer": None, "vocab_size": 200, "min_frequency": 1, "max_length": 32, "keywords": None,
        "extra_keywords": []}  # fmt: skip


def build_phantom_reports(root: Path, n_images: int = 48, image_size: int = 32, patch_size: int = 8) -> dict:
    """Run download, prepare, split, patch_validity and tokenizer on phantoms -> paths of their outputs."""
    dataset = {"name": "t", "kind": "synthetic", "synthetic": {"n_images": n_images, "image_size": 64, "seed": 3}}
    acquire(dataset, root / "raw", root / "download.json")
    prepare(root / "download.json", dataset, {"image_size": image_size, "workers": 1}, root / "prepared")
    manifest = pd.read_csv(root / "prepared" / "manifest.csv", keep_default_na=False)
    split_dataset(manifest, 0.2, 0.1, 0).to_csv(root / "split.csv", index=False)
    settings = {"patch_size": patch_size, "threshold": 0.0, "no_mask_policy": "fail", "n_figure_images": 1}
    run_patch_validity(root / "prepared", settings, root / "validity.npz", root / "validity.csv", root / "validity.png")
    build_tokenizer(root / "prepared" / "reports.jsonl", root / "split.csv", TEXT, root / "tokenizer.json")
    return {"prepared": root / "prepared", "split": root / "split.csv", "validity": root / "validity.npz",
            "tokenizer": root / "tokenizer.json"}  # fmt: skip


CLASSES = ["COVID-19", "Normal", "Viral_Pneumonia"]
N_TEST = 20
# (init family, method, architecture, mask ratio) -> test accuracy per (fraction, pretraining seed, subset seed)
RUNS = {
    ("rgmim_r0.75_vit-t", "RGMIM", "ViT", 0.75): {
        (0.01, 0, 0): 0.60,
        (0.01, 0, 1): 0.70,
        (0.01, 1, 0): 0.65,
        (0.01, 1, 1): 0.75,
        (1.0, 0, 0): 0.90,
        (1.0, 0, 1): 0.95,
        (1.0, 1, 0): 0.90,
        (1.0, 1, 1): 0.95,
    },
    ("rgmim-lung_r0.75_vit-t", "RGMIM-lung", "ViT", 0.75): {(0.01, 0, 0): 0.55, (1.0, 0, 0): 0.90},
    ("mae_r0.75_vit-t", "MAE", "ViT", 0.75): {
        (0.01, 0, 0): 0.50,
        (0.01, 0, 1): 0.55,
        (1.0, 0, 0): 0.85,
        (1.0, 0, 1): 0.90,
    },
    ("scratch_vit-t", "From Scratch", "ViT", None): {
        (0.01, None, 0): 0.35,
        (0.01, None, 1): 0.40,
        (1.0, None, 0): 0.60,
        (1.0, None, 1): 0.65,
    },
    ("scratch_resnet50", "From Scratch", "ResNet-50", None): {(0.01, None, 0): 0.30, (1.0, None, 0): 0.55},
    ("rgmim_r0.5_vit-t", "RGMIM", "ViT", 0.5): {(1.0, 0, 0): 0.80, (1.0, 0, 1): 0.85},
}
VIT_MODEL = {"timm_name": "vit_tiny_patch16_224", "depth": 12, "width": 192, "n_parameters": 5_524_416}


def fake_run(
    root: Path,
    family: str,
    method: str,
    architecture: str,
    ratio: float | None,
    fraction: float,
    pretrain_seed: int | None,
    seed: int,
    accuracy: float,
) -> Path:
    """A run directory whose predictions have exactly `accuracy` and whose metrics agree with them."""
    init = family if pretrain_seed is None else f"{family}_s{pretrain_seed}"
    run_dir = root / init / f"frac{fraction}_seed{seed}"
    run_dir.mkdir(parents=True)
    labels = np.arange(N_TEST) % len(CLASSES)
    n_correct = round(accuracy * N_TEST)
    preds = np.where(np.arange(N_TEST) < n_correct, labels, (labels + 1) % len(CLASSES))
    probs = np.full((N_TEST, len(CLASSES)), 0.1)
    probs[np.arange(N_TEST), preds] = 0.8
    predictions = pd.DataFrame(
        {
            "index": 100 + np.arange(N_TEST),
            "id": [f"img{i}" for i in range(N_TEST)],
            "label": [CLASSES[i] for i in labels],
            "pred": [CLASSES[i] for i in preds],
        }
    )
    for i, name in enumerate(CLASSES):
        predictions[f"prob_{name}"] = probs[:, i]
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    test = classification_metrics(labels, probs, CLASSES)
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "lr": [1e-3, 5e-4, 0.0],
            "train_loss": [1.0, 0.8, 0.7],
            "val_accuracy": [0.5, accuracy, accuracy],
            "test_accuracy": [0.4, accuracy, accuracy - 0.05],
        }
    ).to_csv(run_dir / "history.csv", index=False)
    metrics = {
        "init": init,
        "method": method,
        "architecture": architecture,
        "mask_ratio": ratio,
        "pretrain_seed": pretrain_seed,
        "fraction": fraction,
        "seed": seed,
        "n_train": int(fraction * 1000),
        "classes": CLASSES,
        "best_epoch": 2,
        "device": "cpu",
        "val": {**test, "auc_macro": None},
        "test": test,
    }
    if architecture == "ViT":  # the ResNet runs stand for metrics.json written before the `model` entry existed
        metrics |= {"model": VIT_MODEL, "input_norm": {"mean": [0.5], "std": [0.25]}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "metrics.json"


SEG_SIZE, SEG_N_IMAGES = 16, 40
SEG_TEST = np.arange(20, 32)  # cache rows of the test images (split order)
SEG_NEGATIVE = {29, 30, 31}  # test images without a lesion: SIIM-style, so the Kaggle Dice differs from the Dice


def lesion_square(index: int, shift: int = 0) -> np.ndarray:
    """A square lesion whose place and size follow from `index`, moved `shift` pixels right (a prediction's error)."""
    mask = np.zeros((SEG_SIZE, SEG_SIZE), dtype=np.uint8)
    top, left, side = 2 + index % 5, 2 + (3 * index) % 5, 4 + index % 3
    mask[top : top + side, left + shift : left + shift + side] = 1
    return mask


def fake_prepared_lesions(root: Path) -> Path:
    """A prepared folder as prepare writes it for a lesion-annotating source: images, lung masks, lesion masks."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lesions = np.stack(
        [
            np.zeros((SEG_SIZE, SEG_SIZE), np.uint8) if i in SEG_NEGATIVE else lesion_square(i)
            for i in range(SEG_N_IMAGES)
        ]
    )
    images = rng.integers(0, 120, (SEG_N_IMAGES, SEG_SIZE, SEG_SIZE)).astype(np.uint8) + 100 * lesions
    np.save(root / "images.npy", images)
    np.save(root / "masks.npy", np.ones_like(lesions))
    np.save(root / "lesion_masks.npy", lesions)
    return root


def overlap(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(dice, iou, kaggle dice) of one image; dice and IoU NaN on an empty truth (the contract's predictions.csv)."""
    both, total = float(np.sum(predicted & truth)), float(predicted.sum() + truth.sum())
    if not truth.any():
        return float("nan"), float("nan"), float(not predicted.any())
    return 2 * both / total, both / (total - both), 2 * both / total


def fake_segmentation_run(
    root: Path, family: str, method: str, ratio: float | None, fraction: float, pretrain_seed: int | None, seed: int,
    shifts: dict[int, int],
) -> Path:  # fmt: skip
    """A segmentation run folder (seg-contract): each positive test image predicted as its lesion moved by
    shifts[index] pixels (default 1; -1: an empty prediction), negatives predicted empty; the metrics agree."""
    init = family if pretrain_seed is None else f"{family}_s{pretrain_seed}"
    run_dir = root / init / f"frac{fraction:g}_seed{seed}"
    run_dir.mkdir(parents=True)
    rows, predicted = [], []
    for index in SEG_TEST:
        truth = np.zeros((SEG_SIZE, SEG_SIZE), np.uint8) if index in SEG_NEGATIVE else lesion_square(index)
        shift = shifts.get(int(index), 1)
        mask = np.zeros_like(truth) if index in SEG_NEGATIVE or shift < 0 else lesion_square(index, shift)
        dice, iou, kaggle = overlap(mask.astype(bool), truth.astype(bool))
        rows.append({"index": index, "positive": int(truth.any()), "dice": dice, "iou": iou, "kaggle_dice": kaggle})
        predicted.append(mask)
    predictions = pd.DataFrame(rows)
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    np.save(run_dir / "predicted_masks.npy", np.stack(predicted))
    positive = predictions[predictions["positive"] == 1]
    test = {"dice": positive["dice"].mean(), "iou": positive["iou"].mean(),
            "kaggle_dice": predictions["kaggle_dice"].mean(), "n": len(predictions), "n_positive": len(positive)}  # fmt: skip
    history = {"epoch": [1, 2], "train_loss": [0.9, 0.5], "val_dice": [0.2, test["dice"]],
               "test_dice": [0.1, test["dice"]]}  # fmt: skip
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    metrics = {
        "init": init, "method": method, "architecture": "ViT", "encoder": "vit-t", "mask_ratio": ratio,
        "pretrain_seed": pretrain_seed, "fraction": fraction, "budget": f"frac{fraction:g}", "seed": seed,
        "n_labels": int(fraction * 20), "best_epoch": 2, "task": "segmentation", "segment": "lesion",
        "mode": "full", "augment": "current", "device": "cpu", "model": VIT_MODEL,
        "input_norm": {"mean": [0.5], "std": [0.25]}, "val": test, "test": test,
    }  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "metrics.json"
