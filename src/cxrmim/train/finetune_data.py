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

from cxrmim.data.placement import Rows
from cxrmim.data.tensors import load_prepared
from cxrmim.io import write_text_atomic

TASKS = ("multiclass", "binary", "multilabel")


@dataclass
class Part:
    """One part of the split as tensors: uint8 images, targets and the rows they came from.

    Targets are class indices (multiclass) or uint8 (N, n_outputs) with 1 present, 0 absent, 255 uncertain
    (binary: one column, the positive class; multilabel: one column per finding).
    """

    images: Rows  # uint8 (N, S, S): rows of the memory-mapped cache, read when the loader places them
    labels: torch.Tensor
    rows: pd.DataFrame  # index, id, label


@dataclass
class FinetuneData:
    """Training subset, validation and test parts, the task and its outputs (classes, or the sigmoid outputs:
    the positive class of a binary task, the findings of a multilabel one) in the order every run shares."""

    classes: list[str]
    train: Part
    val: Part
    test: Part
    image_size: int
    task: str = "multiclass"

    @property
    def sigmoid(self) -> bool:
        """Binary and multilabel tasks: one sigmoid output per entry of `classes`, trained with BCE."""
        return self.task != "multiclass"


def read_multilabel_targets(
    prepared_dir: Path, findings: list[str] | None, n_images: int
) -> tuple[np.ndarray, list[str]]:
    """prepared/labels.npy (N, n_findings) uint8 and the findings in its column order, checked against the cache."""
    path = prepared_dir / "labels.npy"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: a multilabel task needs a cache prepared with dataset.task: multilabel"
        )
    summary_path = prepared_dir / "summary.json"
    stored = json.loads(summary_path.read_text()).get("findings") if summary_path.exists() else None
    if findings and stored and list(findings) != list(stored):
        raise ValueError(f"{summary_path}: findings {stored} differ from dataset.findings {findings}; prepare again")
    findings = list(findings or stored or [])
    labels = np.load(path)
    if labels.ndim != 2 or labels.shape != (n_images, len(findings)):
        raise ValueError(
            f"{path}: shape {labels.shape}, expected ({n_images}, {len(findings)}) for findings {findings}"
        )
    if not np.isin(labels, (0, 1, 255)).all():
        raise ValueError(f"{path}: values must be 0 (absent), 1 (present) or 255 (uncertain)")
    return labels.astype(np.uint8), findings


def load_finetune_data(
    prepared_dir: str | Path,
    split_csv: str | Path,
    subset_csv: str | Path,
    task: str = "multiclass",
    positive: str | None = None,
    findings: list[str] | None = None,
) -> FinetuneData:
    """Read the cache once and cut it into the labelled subset, validation and test parts."""
    if task not in TASKS:
        raise ValueError(f"dataset.task {task!r} is not one of {TASKS}")
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    subset = pd.read_csv(subset_csv, keep_default_na=False)
    held_out = set(split.loc[split["part"] != "train", "index"])
    leaked = held_out.intersection(subset["index"])
    if leaked:
        raise ValueError(f"{subset_csv}: {len(leaked)} labelled images belong to val/test (e.g. {sorted(leaked)[:3]})")
    # Sorted labels of the whole split: the same class order (and prob_ columns) in every run.
    classes = sorted(split["label"].astype(str).unique())
    class_index = {name: i for i, name in enumerate(classes)}
    if task == "binary":
        if positive not in classes:
            raise ValueError(
                f"{split_csv}: dataset.positive {positive!r} is not a label of the split (labels: {classes})"
            )
        classes = [positive]
    multilabel = None
    if task == "multilabel":
        multilabel, classes = read_multilabel_targets(Path(prepared_dir), findings, len(prepared.images))

    def targets(rows: pd.DataFrame) -> torch.Tensor:
        if task == "binary":
            return torch.from_numpy((rows["label"].astype(str) == positive).to_numpy(np.uint8)[:, None])
        if task == "multilabel":
            return torch.from_numpy(multilabel[rows["index"].to_numpy()])
        return torch.tensor([class_index[str(label)] for label in rows["label"]], dtype=torch.long)

    def part(rows: pd.DataFrame) -> Part:
        rows = rows[["index", "id", "label"]].reset_index(drop=True)
        return Part(Rows(prepared.images, rows["index"].to_numpy(np.int64)), targets(rows), rows)

    return FinetuneData(
        task=task,
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


def prediction_table(
    part: Part, probs: np.ndarray, classes: list[str], task: str = "multiclass", threshold: float = 0.5
) -> pd.DataFrame:
    """Per-image test predictions: index, id, label, prob_<output>, and pred (multiclass: the class; binary: 1 at
    or above the validation threshold, beside the 0/1 `target`; multilabel: none, findings are scored, not decided)."""
    table = part.rows.copy()
    if task == "multiclass":
        table["pred"] = [classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    elif task == "binary":
        table["target"] = part.labels[:, 0].numpy().astype(int)  # 1 = the positive class
        table["pred"] = (probs[:, 0] >= threshold).astype(int) if len(probs) else []
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, i] if len(probs) else []
    return table


OUTPUT_FILES = ("history.csv", "predictions.csv", "metrics.json", "predicted_masks.npy")  # the last: segmentation


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
