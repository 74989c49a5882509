"""The prepare stage: every source normalised to one uint8 cache of images and lung masks on one grid."""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.text.reports import write_reports

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["index", "id", "label", "source", "group", "view", "has_mask", "report"]


@dataclass
class LoadedImage:
    """One record after reading and resizing, or the reason it could not be read."""

    image: np.ndarray | None
    mask: np.ndarray | None
    error: str | None = None


def pseudonym(value: str) -> str:
    """Stable non-reversible grouping key, so patient ids never reach outputs verbatim."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _load_record(args: tuple[Any, int]) -> LoadedImage:
    """Read, check and resize one record's image and mask (runs in a worker process)."""
    from cxrmim.data.readers import BadImageError, check_mask_fits, read_grey, read_mask, resize_to_grid

    record, size = args
    try:
        grey = read_grey(record.image)
        raw_mask = read_mask(record.mask) if record.mask is not None else None
    except BadImageError as err:
        return LoadedImage(None, None, str(err))
    if raw_mask is not None:
        try:
            check_mask_fits(grey.shape, raw_mask.shape, record.image, record.mask)
        except BadImageError as err:
            # A mask drawn for another image is a dataset error, never a file to skip quietly.
            raise ValueError(str(err)) from None
    image = resize_to_grid(grey, size, is_mask=False)
    mask = resize_to_grid(raw_mask.astype(np.uint8), size, is_mask=True) if raw_mask is not None else None
    return LoadedImage(image, mask)


def source_records(kind: str, root: Path, dataset_cfg: dict[str, Any]) -> tuple[list[Any], list[str], Path]:
    """Source records of a real dataset after label mapping and view filtering, warnings, and the path base."""
    from cxrmim.data.sources import apply_label_map, covid19_radiography_records, filter_views, manifest_records

    if kind == "covid19_radiography":
        records, warnings = covid19_radiography_records(root)
        base = root
    else:
        records, warnings, base = manifest_records(root), [], root.parent
    records = apply_label_map(records, dataset_cfg.get("label_map") or {})
    records, dropped = filter_views(records, dataset_cfg.get("views") or [])
    if dropped:
        warnings.append(f"view filter {dataset_cfg['views']} dropped {dropped} images")
    if not records:
        raise ValueError(f"{root}: no images left to prepare (check dataset.views and the source)")
    return records, warnings, base


def load_records(records: list[Any], size: int, workers: int = 1) -> list[LoadedImage]:
    """Read and resize every record's image and mask onto a size x size grid, in parallel when workers > 1."""
    jobs = [(record, size) for record in records]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(_load_record, jobs, chunksize=16))
    return [_load_record(job) for job in jobs]


def _relative(path: Path, base: Path) -> str:
    """Path relative to the dataset root when possible (keeps outputs free of local folder names)."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return Path(path).name


def _prepare_real(kind: str, root: Path, dataset_cfg: dict, prepare_cfg: dict) -> tuple[dict, list[str]]:
    """Read every record of a real dataset in parallel; skip or fail on bad images."""
    records, warnings, base = source_records(kind, root, dataset_cfg)
    size = int(prepare_cfg["image_size"])
    loaded = load_records(records, size, int(prepare_cfg.get("workers", 1)))
    bad = [item.error for item in loaded if item.error]
    if bad and prepare_cfg.get("on_bad_image", "skip") == "fail":
        raise ValueError(
            f"{len(bad)} unreadable image(s):\n  " + "\n  ".join(bad[:10])
            + "\nfix or remove them, or set prepare.on_bad_image: skip"
        )
    for message in bad:
        log.warning("skipped: %s", message)
    keep = [(rec, item) for rec, item in zip(records, loaded) if item.error is None]
    if not keep:
        raise ValueError(f"{root}: every image failed to load; see the log for the files")
    empty = np.zeros((size, size), np.uint8)
    columns = {
        "images": np.stack([item.image for _, item in keep]),
        "masks": np.stack([item.mask if item.mask is not None else empty for _, item in keep]),
        "label": [rec.label for rec, _ in keep],
        "source": [_relative(rec.image, base) for rec, _ in keep],
        "group": [pseudonym(rec.group) if rec.group else None for rec, _ in keep],
        "view": [rec.view or "" for rec, _ in keep],
        "has_mask": [item.mask is not None for _, item in keep],
        "report": [rec.report or "" for rec, _ in keep],
        "n_bad": len(bad),
    }
    return columns, warnings


def _prepare_synthetic(raw_file: Path, prepare_cfg: dict) -> tuple[dict, list[str]]:
    """Resize the generated phantoms onto the configured grid."""
    from cxrmim.data.readers import resize_to_grid

    size = int(prepare_cfg["image_size"])
    with np.load(raw_file) as raw:
        images, masks = raw["images"], raw["masks"]
        labels, reports, patients = raw["labels"].tolist(), raw["reports"].tolist(), raw["patient_ids"].tolist()
    columns = {
        "images": np.stack([resize_to_grid(img, size, is_mask=False) for img in images]),
        "masks": np.stack([resize_to_grid(msk, size, is_mask=True) for msk in masks]),
        "label": labels,
        "source": [f"phantom/{i:06d}" for i in range(len(labels))],
        "group": [pseudonym(p) for p in patients],
        "view": ["PA"] * len(labels),
        "has_mask": [True] * len(labels),
        "report": reports,
        "n_bad": 0,
    }
    return columns, []


def prepare(marker: Path, dataset_cfg: dict[str, Any], prepare_cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run the stage: read the download marker, build the cache, write it atomically, return a summary."""
    info = json.loads(Path(marker).read_text())
    kind, root = dataset_cfg["kind"], Path(info["root"])
    if kind == "synthetic":
        columns, warnings = _prepare_synthetic(root, prepare_cfg)
    else:
        columns, warnings = _prepare_real(kind, root, dataset_cfg, prepare_cfg)
    for message in warnings:
        log.warning("%s", message)
    n = len(columns["label"])
    ids = [f"{dataset_cfg['name']}-{i:06d}" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "index": np.arange(n),
            "id": ids,
            "label": columns["label"],
            "source": columns["source"],
            # Without a patient id every image is its own group.
            "group": [g if g else pseudonym(i) for g, i in zip(columns["group"], ids)],
            "view": columns["view"],
            "has_mask": np.asarray(columns["has_mask"], dtype=int),
            "report": columns["report"],
        },
        columns=MANIFEST_COLUMNS,
    )
    summary = {
        "dataset": dataset_cfg["name"],
        "kind": kind,
        "n_images": n,
        "n_skipped_bad": columns["n_bad"],
        "n_without_mask": int(n - manifest["has_mask"].sum()),
        "image_size": int(prepare_cfg["image_size"]),
        "labels": manifest["label"].value_counts().sort_index().to_dict(),
        "warnings": warnings,
    }
    write_cache(out_dir, columns["images"], columns["masks"], manifest, summary)
    write_reports(out_dir, manifest)  # cleaned, sentence-split reports for the tokenizer and report-aware methods
    return summary


def write_cache(out_dir: Path, images: np.ndarray, masks: np.ndarray, manifest: pd.DataFrame, summary: dict) -> None:
    """Write the cache files, each through a temporary name so readers never see a partial file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, array in (("images", images), ("masks", masks)):
        tmp = out_dir / f"{name}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(array, dtype=np.uint8))
        tmp.replace(out_dir / f"{name}.npy")
    manifest.to_csv(out_dir / "manifest.csv.tmp", index=False)
    (out_dir / "manifest.csv.tmp").replace(out_dir / "manifest.csv")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
