"""Fine-tuning inputs and outputs: the cache cut into subset/val/test parts, and the files a run writes."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrmim.data.tensors import load_prepared
from cxrmim.io import write_text_atomic


@dataclass
class Part:
    """One part of the split as tensors: uint8 images, class indices, and the rows they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    rows: pd.DataFrame  # index, id, label


@dataclass
class FinetuneData:
    """Training subset, validation and test parts, and the class order shared by every run."""

    classes: list[str]
    train: Part
    val: Part
    test: Part
    image_size: int


def load_finetune_data(prepared_dir: str | Path, split_csv: str | Path, subset_csv: str | Path) -> FinetuneData:
    """Read the cache once and cut it into the labelled subset, validation and test parts."""
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    subset = pd.read_csv(subset_csv, keep_default_na=False)
    # Sorted labels of the whole split: the same class order (and prob_ columns) in every run.
    classes = sorted(split["label"].astype(str).unique())
    held_out = set(split.loc[split["part"] != "train", "index"])
    leaked = held_out.intersection(subset["index"])
    if leaked:
        raise ValueError(f"{subset_csv}: {len(leaked)} labelled images belong to val/test (e.g. {sorted(leaked)[:3]})")
    class_index = {name: i for i, name in enumerate(classes)}

    def part(rows: pd.DataFrame) -> Part:
        rows = rows[["index", "id", "label"]].reset_index(drop=True)
        images = torch.from_numpy(np.asarray(prepared.images[rows["index"].to_numpy()]))
        labels = torch.tensor([class_index[str(label)] for label in rows["label"]], dtype=torch.long)
        return Part(images, labels, rows)

    return FinetuneData(
        classes=classes,
        train=part(subset),
        val=part(split[split["part"] == "val"]),
        test=part(split[split["part"] == "test"]),
        image_size=prepared.image_size,
    )


@dataclass
class FinetuneResult:
    """Everything a run writes: the summary, per-epoch history and the selected epoch's test predictions."""

    metrics: dict[str, Any]
    history: pd.DataFrame
    predictions: pd.DataFrame


def prediction_table(part: Part, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per-image test predictions: index, id, label, pred, prob_<class>."""
    table = part.rows.copy()
    table["pred"] = [classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, i] if len(probs) else []
    return table


OUTPUT_FILES = ("history.csv", "predictions.csv", "metrics.json")


def write_result(result: FinetuneResult, out_dir: str | Path) -> None:
    """Write history and predictions first and metrics.json last: metrics.json marks a finished run."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "history.csv", result.history.to_csv(index=False))
    write_text_atomic(out_dir / "predictions.csv", result.predictions.to_csv(index=False))
    write_text_atomic(out_dir / "metrics.json", json.dumps(json_safe(result.metrics), indent=2) + "\n")


def json_safe(value: Any) -> Any:
    """NaN (e.g. AUC when a class is absent from a part) becomes null: strict JSON readers reject NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def remove_outputs(out_dir: str | Path) -> None:
    """Delete a previous run's files so a failure cannot leave old and new outputs mixed."""
    for name in OUTPUT_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)
