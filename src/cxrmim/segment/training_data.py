"""Mask-bearing datasets the segmenter learns from: phantoms, manifests with a mask column, the COVID-19 database."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxrmim.data.prepare import load_records, pseudonym, source_records
from cxrmim.data.readers import resize_to_grid
from cxrmim.data.synthetic import PhantomSettings, generate_dataset

log = logging.getLogger(__name__)

# Phantoms for the segmenter are a separate draw from the workflow's dataset unless the config says otherwise.
DEFAULT_PHANTOMS = {"n_images": 300, "seed": 11}


@dataclass
class MaskedImages:
    """Images with their lung masks on one grid, each tagged with its patient group and source dataset."""

    images: np.ndarray  # uint8 (N, S, S)
    masks: np.ndarray  # uint8 (N, S, S), 1 = lung
    groups: np.ndarray  # str (N,), patient key qualified by source, for a split that never cuts a patient
    sources: np.ndarray  # str (N,), which train source an image came from

    def __len__(self) -> int:
        return len(self.images)


def source_name(index: int, source_cfg: dict[str, Any]) -> str:
    """A readable tag for one train source, e.g. '0:synthetic' or '1:manifest:lungs.csv'."""
    where = f":{Path(source_cfg['source']).name}" if source_cfg.get("source") else ""
    return f"{index}:{source_cfg['kind']}{where}"


def _phantoms(source_cfg: dict[str, Any], size: int, workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate phantoms at their own size and resize them (and their exact masks) to the segmentation grid."""
    settings = PhantomSettings.from_config(
        {"image_size": max(size, 32), **DEFAULT_PHANTOMS, **(source_cfg.get("synthetic") or {})}
    )
    data = generate_dataset(settings, workers=workers)
    images = np.stack([resize_to_grid(image, size, is_mask=False) for image in data["images"]])
    masks = np.stack([resize_to_grid(mask, size, is_mask=True) for mask in data["masks"]])
    return images, masks, list(data["patient_ids"])


def _real(source_cfg: dict[str, Any], size: int, workers: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the records of a manifest or COVID-19 database folder that have a mask (the others cannot teach)."""
    root = Path(str(source_cfg.get("source") or "")).expanduser()
    if not str(source_cfg.get("source") or "") or not root.exists():
        raise FileNotFoundError(
            f"lung_masks.train_sources: source {str(root)!r} not found; point it at a manifest "
            "CSV or an extracted COVID-19_Radiography_Dataset folder"
        )
    records, warnings, _ = source_records(source_cfg["kind"], root, source_cfg)
    for message in warnings:
        log.info("%s: %s", root.name, message)
    records = [record for record in records if record.mask is not None]
    if not records:
        raise ValueError(f"lung_masks.train_sources: {root} has no image with a lung mask to train on")
    loaded = load_records(records, size, workers)
    kept = [(record, item) for record, item in zip(records, loaded) if item.error is None and item.mask is not None]
    for item in loaded:
        if item.error:
            log.warning("segmenter training skips %s", item.error)
    if not kept:
        raise ValueError(f"lung_masks.train_sources: every image of {root} failed to load")
    images = np.stack([item.image for _, item in kept])
    masks = np.stack([item.mask for _, item in kept])
    # Without a patient id every image is its own group; ids are hashed like in the prepared cache.
    groups = [pseudonym(record.group or str(record.image)) for record, _ in kept]
    return images, masks, groups


def load_training_sources(sources: list[dict[str, Any]], size: int, workers: int = 1) -> MaskedImages:
    """All configured train sources on a size x size grid, concatenated in config order."""
    if not sources:
        raise ValueError(
            "lung_masks.train_sources is empty; list at least one mask-bearing dataset "
            "(e.g. {kind: synthetic}) for mode train_and_predict"
        )
    parts = []
    for index, source_cfg in enumerate(sources):
        loader = _phantoms if source_cfg["kind"] == "synthetic" else _real
        images, masks, groups = loader(source_cfg, size, workers)
        name = source_name(index, source_cfg)
        log.info("train source %s: %d images with masks", name, len(images))
        parts.append((images, masks, [f"{name}/{g}" for g in groups], [name] * len(images)))
    return MaskedImages(
        images=np.concatenate([p[0] for p in parts]),
        masks=np.concatenate([p[1] for p in parts]).astype(np.uint8),
        groups=np.asarray([g for p in parts for g in p[2]]),
        sources=np.asarray([s for p in parts for s in p[3]]),
    )
