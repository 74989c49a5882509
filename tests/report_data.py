"""A tiny phantom dataset with reports, as the workflow prepares it (cache, split, validity, tokenizer)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrmim.data.acquire import acquire
from cxrmim.data.prepare import prepare
from cxrmim.data.splits import split_dataset
from cxrmim.data.validity import run_patch_validity
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
