"""Inference of lung masks on a stack of grey images, and the `lung_masks` stage end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.data.mask_qc import decide, qc_table, worst_first
from cxrmim.data.tensors import PreparedData, load_prepared, normalise
from cxrmim.device import DeviceSetup, select_device
from cxrmim.io import atomic_path
from cxrmim.segment.model import SegmenterSpec, load_segmenter
from cxrmim.segment.postprocess import clean_masks
from cxrmim.segment.qc import plot_mask_grid, qc_titles

log = logging.getLogger(__name__)

CHUNK = 1024  # images per chunk of the lung_masks stage: ~1 GB at 224 px, whatever the dataset's size


def to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W) on any grid -> normalised (B, 1, size, size) float at the segmentation resolution."""
    x = normalise(images)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)
    return x


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: np.ndarray, image_size: int, setup: DeviceSetup, batch_size: int = 32
) -> np.ndarray:
    """Lung probability per pixel of each uint8 image, back on the images' own grid (float32 (N, H, W))."""
    model.eval().to(setup.device)
    out = np.empty(images.shape, dtype=np.float32)
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(setup.device)
        with setup.autocast():
            logits = model(to_model_input(chunk, image_size))
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        out[start : start + len(chunk)] = torch.sigmoid(logits)[:, 0].cpu().numpy()
    return out


def segment(
    model: nn.Module, images: np.ndarray, image_size: int, setup: DeviceSetup, dilation: int = 0, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Post-processed uint8 masks and the raw probabilities for a stack of uint8 images."""
    probabilities = predict_probabilities(model, images, image_size, setup, batch_size)
    return clean_masks(probabilities > 0.5, dilation), probabilities


def predict_to_file(
    model: nn.Module,
    data: PreparedData,
    spec: SegmenterSpec,
    setup: DeviceSetup,
    settings: dict[str, Any],
    provided: np.ndarray,
    path: Path,
    chunk: int = CHUNK,
) -> pd.DataFrame:
    """Predict, clean and QC `chunk` images at a time, writing masks.npy as it goes -> the QC table.

    The cache is memory-mapped and the output written through a memory map, so neither the images, the masks
    nor their float probabilities are ever in memory whole. Chunks are whole numbers of model batches, so every
    image is predicted in the same batch as without chunks: the outputs do not depend on `chunk`.
    """
    batch_size, dilation = int(settings.get("batch_size", 32)), int(settings.get("dilation", 0))
    chunk = max(batch_size, chunk // batch_size * batch_size)
    thresholds, tables = settings.get("qc") or {}, []
    with atomic_path(path) as tmp:  # the temporary name keeps `.npy`, so numpy adds no suffix
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=data.images.shape)
        for start in range(0, len(data.images), chunk):
            rows = slice(start, start + chunk)
            images = np.array(data.images[rows])  # one read of the chunk from the map
            masks, probabilities = segment(model, images, spec.image_size, setup, dilation, batch_size)
            keep = provided[rows]
            masks[keep] = data.masks[rows][keep]
            tables.append(qc_table(images, masks, probabilities, thresholds))
            out[rows] = masks
        out.flush()
        del out  # closes the map before the file is renamed into place
    return (
        pd.concat(tables, ignore_index=True) if tables else qc_table(data.images[:0], data.masks[:0], None, thresholds)
    )


def segmenter_device(settings: dict[str, Any]) -> DeviceSetup:
    """The `lung_masks` section's device (a GPU job without a usable GPU fails unless cpu_fallback)."""
    return select_device(
        settings.get("device", "auto"),
        cpu_fallback=bool(settings.get("cpu_fallback", False)),
        fallback_key="lung_masks.cpu_fallback",
    )


def run_lung_masks(
    prepared_dir: Path, weights: Path, settings: dict[str, Any], out_dir: Path, figure: Path, chunk: int = CHUNK
) -> pd.DataFrame:
    """Predict, clean and check a mask for every prepared image; write masks.npy, qc.csv, summary.json and the figure."""
    data = load_prepared(prepared_dir)
    setup = segmenter_device(settings)
    model, spec = load_segmenter(weights, SegmenterSpec.from_settings(settings))
    log.info(
        "segmenting %d images of %d px at %d px on %s (encoder %s), %d at a time",
        len(data.images),
        data.image_size,
        spec.image_size,
        setup.device,
        spec.encoder,
        chunk,
    )
    provided = data.manifest["has_mask"].to_numpy().astype(bool) & bool(settings.get("prefer_provided", True))
    out_dir.mkdir(parents=True, exist_ok=True)
    table = predict_to_file(model, data, spec, setup, settings, provided, out_dir / "masks.npy", chunk)
    table.insert(0, "id", data.manifest["id"].to_numpy())
    table.insert(0, "index", data.manifest["index"].to_numpy())
    table.insert(2, "mask_source", np.where(provided, "provided", "predicted"))
    decision = decide(table["plausible"].to_numpy(), settings.get("qc_policy", "all_valid"))
    # A dataset's own masks are used as given: QC describes them but never overrides them.
    table["decision"] = np.where(provided, "mask", decision)
    table.to_csv(out_dir / "qc.csv", index=False, float_format="%.4g")
    summary = {
        "n_images": len(table),
        "n_predicted": int((~provided).sum()),
        "n_flagged": int((table["plausible"] == 0).sum()),
        "flags": table["flags"].str.split(";").explode().loc[lambda s: s != ""].value_counts().to_dict(),
        "decisions": table["decision"].value_counts().to_dict(),
        "qc_policy": settings.get("qc_policy", "all_valid"),
        "mean_area_fraction": float(table["area_fraction"].mean()),
        "segmenter": {"encoder": spec.encoder, "image_size": spec.image_size, "weights": str(weights)},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    picks = worst_first(table, "confidence")[: int((settings.get("qc") or {}).get("n_figure_images", 24))]
    masks = np.load(out_dir / "masks.npy", mmap_mode="r")
    plot_mask_grid(data.images[picks], masks[picks], qc_titles(table, picks), figure)
    log.info("lung masks: %s", json.dumps({k: summary[k] for k in ("n_images", "n_flagged", "decisions")}))
    return table
