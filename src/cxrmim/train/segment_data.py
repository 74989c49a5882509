"""Segmentation fine-tuning inputs and outputs: the cache's images with the masks of `dataset.segment`, cut into
the label subset, validation and test parts, and the files a run writes (docs/segmentation.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.data.placement import Rows
from cxrmim.data.tensors import load_prepared
from cxrmim.io import atomic_path
from cxrmim.train.finetune_data import FinetuneResult, write_result

log = logging.getLogger("cxrmim.finetune")

SEGMENTS = ("lung", "lesion")  # the values of dataset.segment (cxrmim.checks.SEGMENTS)
MASK_FILES = {"lung": "masks.npy", "lesion": "lesion_masks.npy"}
PREDICTION_COLUMNS = ["index", "positive", "dice", "iou", "kaggle_dice"]


@dataclass
class SegmentPart:
    """One part of the split: uint8 images and 0/1 masks (rows of the memory-mapped cache) and their rows."""

    images: Rows
    masks: Rows
    rows: pd.DataFrame  # index, id, label

    def truth(self) -> np.ndarray:
        """The part's true masks as one bool (N, S, S) host array."""
        return self.masks.gather(np.arange(len(self.masks))).numpy().astype(bool)


@dataclass
class SegmentData:
    """Training subset, validation and test parts of one segmentation task (`segment`: lung or lesion)."""

    segment: str
    train: SegmentPart
    val: SegmentPart
    test: SegmentPart
    image_size: int
    task: str = "segmentation"


def read_masks(prepared_dir: Path, segment: str, n_images: int, image_size: int) -> np.ndarray:
    """The memory-mapped (N, S, S) masks of `segment`, checked against the cache."""
    if segment not in SEGMENTS:
        raise ValueError(f"dataset.segment {segment!r}: use one of {list(SEGMENTS)}")
    path = prepared_dir / MASK_FILES[segment]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the prepare rule again (it writes {MASK_FILES[segment]})")
    masks = np.load(path, mmap_mode="r")
    if segment == "lesion" and masks.shape == (0,):
        raise ValueError(
            f"{path} is empty: this dataset's kind has no lesion masks; set dataset.segment: lung, or use a kind "
            "with lesion masks (the phantoms, siim_acr)"
        )
    if masks.shape != (n_images, image_size, image_size) or masks.dtype != np.uint8:
        raise ValueError(
            f"{path}: shape {masks.shape} {masks.dtype}, expected uint8 ({n_images}, {image_size}, {image_size}) "
            "like images.npy; run the prepare rule again"
        )
    return masks


def load_segment_data(
    prepared_dir: str | Path, split_csv: str | Path, subset_csv: str | Path, segment: str = "lung"
) -> SegmentData:
    """Read the cache once and cut it into the labelled subset, validation and test parts.

    Lung segmentation leaves out images without a lung mask (manifest `has_mask` 0): their all-zero mask is
    missing, not empty. Lesion masks are defined for every image (no lesion = an empty mask).
    """
    prepared = load_prepared(prepared_dir)
    masks = read_masks(Path(prepared_dir), segment, len(prepared.images), prepared.image_size)
    split = pd.read_csv(split_csv, keep_default_na=False)
    subset = pd.read_csv(subset_csv, keep_default_na=False)
    held_out = set(split.loc[split["part"] != "train", "index"])
    leaked = held_out.intersection(subset["index"])
    if leaked:
        raise ValueError(f"{subset_csv}: {len(leaked)} labelled images belong to val/test (e.g. {sorted(leaked)[:3]})")
    keep = np.ones(len(prepared.images), dtype=bool)
    if segment == "lung" and "has_mask" in prepared.manifest:
        keep = prepared.manifest["has_mask"].to_numpy().astype(bool)
        if not keep.all():
            log.info("lung segmentation: %d image(s) without a lung mask left out", int((~keep).sum()))

    def part(rows: pd.DataFrame) -> SegmentPart:
        rows = rows[["index", "id", "label"]]
        rows = rows[keep[rows["index"].to_numpy(np.int64)]].reset_index(drop=True)
        index = rows["index"].to_numpy(np.int64)
        return SegmentPart(Rows(prepared.images, index), Rows(masks, index), rows)

    data = SegmentData(
        segment=segment,
        train=part(subset),
        val=part(split[split["part"] == "val"]),
        test=part(split[split["part"] == "test"]),
        image_size=prepared.image_size,
    )
    if len(data.train.rows) == 0:
        raise ValueError(f"{subset_csv}: no labelled image has a {segment} mask; raise the label budget")
    return data


@dataclass
class SegmentResult:
    """Everything a segmentation run writes; `masks` are the selected epoch's uint8 test predictions."""

    metrics: dict[str, Any]
    history: pd.DataFrame
    predictions: pd.DataFrame
    masks: np.ndarray


def prediction_table(part: SegmentPart, per_image: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per test image in split order: index, positive, dice, iou (NaN where the truth is empty), kaggle_dice."""
    positive = np.asarray(per_image["positive"], dtype=bool)
    dice, iou = np.full(len(positive), np.nan), np.full(len(positive), np.nan)
    dice[positive], iou[positive] = per_image["dice"], per_image["iou"]  # the metrics hold positives only
    return pd.DataFrame(
        {
            "index": part.rows["index"].to_numpy(),
            "positive": positive.astype(int),
            "dice": dice,
            "iou": iou,
            "kaggle_dice": per_image["kaggle_dice"],
        },
        columns=PREDICTION_COLUMNS,
    )


def write_segment_result(result: SegmentResult, out_dir: str | Path) -> None:
    """predicted_masks.npy, then history and predictions, and metrics.json last (it marks a finished run)."""
    with atomic_path(Path(out_dir) / "predicted_masks.npy") as tmp:
        np.save(tmp, np.ascontiguousarray(result.masks, dtype=np.uint8))
    write_result(FinetuneResult(result.metrics, result.history, result.predictions), out_dir)
