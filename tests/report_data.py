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
