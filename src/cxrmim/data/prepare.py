"""The prepare stage: every source normalised to one uint8 cache of images and lung masks on one grid."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.data.loading import (
    LoadedImage,
    LoadOptions,
    iter_loaded,
    load_records,
    pixel_digest,
    raise_mask_problems,
)
from cxrmim.data.records import named_messages, source_records
from cxrmim.text.reports import write_reports

__all__ = ["MANIFEST_COLUMNS", "LoadedImage", "load_records", "prepare", "pseudonym", "source_records"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["index", "id", "label", "source", "group", "view", "has_mask", "report", "official"]
NPZ_BLOCK_ROWS = 256


def pseudonym(value: str) -> str:
    """Stable non-reversible grouping key, so patient ids never reach outputs verbatim."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


@dataclass
class Rows:
    """A source as the stage streams it: per-row metadata up front, images read lazily in order."""

    items: Iterator[LoadedImage]
    labels: list[str]
    groups: list[str | None]
    views: list[str]
    reports: list[str]
    sources: list[str]
    paths: list[str]  # for messages and the duplicate report only, never written to the cache
    warnings: list[str] = field(default_factory=list)
    uncertain: list[tuple[str, ...]] = field(default_factory=list)  # per row, findings labelled uncertain
    official: list[str] = field(default_factory=list)  # per row, the official split part ("" without one)
    raw_labels: list[str] = field(default_factory=list)  # per row, the label as the source spells it
    seen: dict[str, Any] = field(default_factory=dict)  # what became of every label, column, folder, file seen
    lesions: bool = False  # the source annotates lesions: the cache gets lesion_masks.npy


def source_value(path: Path, base: Path, mode: str) -> str:
    """The manifest's `source`: the path relative to the dataset root (prepare.source_paths: relative) or its hash."""
    try:
        relative = str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        relative = Path(path).name
    # File names often carry patient ids or accession numbers, so only an explicit opt-in keeps them.
    return relative if mode == "relative" else pseudonym(relative)


def _real_rows(kind: str, root: Path, dataset_cfg: dict, prepare_cfg: dict, options: LoadOptions) -> Rows:
    """Rows of a COVID-19 Radiography Database folder or manifest, read in worker processes."""
    seen: dict[str, Any] = {}
    records, warnings, base = source_records(kind, root, dataset_cfg, seen)
    mode = prepare_cfg.get("source_paths", "hash")
    sources = [source_value(r.image, base, mode) for r in records]
    items = iter_loaded(records, options, int(prepare_cfg.get("workers", 1)), progress="prepare: images read")
    paths = [str(r.image) for r in records]
    if mode != "relative":  # messages and logs name the row and its hash; source_paths: relative shows paths
        where = "manifest row" if kind == "manifest" else "source item"
        paths = [f"{where} {i + 1} (source {h})" for i, h in zip(seen.pop("positions"), sources)]
        items = named_messages(items, records, paths)
    seen.pop("positions", None)
    return Rows(
        items=items,
        labels=[r.label for r in records],
        groups=[r.group for r in records],
        views=[r.view or "" for r in records],
        reports=[r.report or "" for r in records],
        sources=sources,
        paths=paths,
        warnings=warnings,
        uncertain=[r.uncertain for r in records],
        official=[r.official or "" for r in records],
        raw_labels=seen.pop("raw_labels"),
        seen=seen,
        lesions=any(r.lesion_rle is not None for r in records),
    )


def _npz_rows(path: Path, key: str) -> Iterator[np.ndarray]:
    """Rows of one array of an uncompressed .npz, read a block at a time (never the whole array)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran:
            raise ValueError(f"{path}: {key} is stored in Fortran order; re-run the download rule")
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        for start in range(0, shape[0], NPZ_BLOCK_ROWS):
            count = min(NPZ_BLOCK_ROWS, shape[0] - start)
            block = np.frombuffer(handle.read(row_bytes * count), dtype=dtype).reshape(count, *shape[1:])
            yield from block


def _synthetic_items(raw_file: Path, options: LoadOptions, total: int, lesions: bool) -> Iterator[LoadedImage]:
    """Each phantom resized onto the grid (its exact lung mask and, with `lesions`, its lesion mask too), streamed
    from the download's npz."""
    from cxrmim.data.contrast import normalise_contrast
    from cxrmim.data.progress import Progress
    from cxrmim.data.readers import resize_to_grid

    meter = Progress("prepare: phantoms resized", total)
    lesion_rows = _npz_rows(raw_file, "lesions") if lesions else itertools.repeat(None)
    for image, mask, lesion in zip(_npz_rows(raw_file, "images"), _npz_rows(raw_file, "masks"), lesion_rows):
        grid = normalise_contrast(resize_to_grid(image, options.size, is_mask=False), options.contrast)
        on_grid = None if lesion is None else resize_to_grid(lesion, options.size, is_mask=True)
        yield LoadedImage(
            grid, resize_to_grid(mask, options.size, is_mask=True), digest=pixel_digest(image), lesion=on_grid
        )
        meter.step()


def _synthetic_rows(raw_file: Path, options: LoadOptions, label_map: dict[str, str]) -> Rows:
    """Rows of the generated phantoms (their ids are not file names, so `source` is kept readable)."""
    from cxrmim.data.accounting import label_fates
    from cxrmim.data.sources import map_label

    with np.load(raw_file) as raw:
        raw_labels, reports, patients = raw["labels"].tolist(), raw["reports"].tolist(), raw["patient_ids"].tolist()
        lesions = "lesions" in raw.files  # downloads older than the lesion masks have none
    if not lesions:
        log.warning(
            "%s has no lesion masks (an older download); lesion_masks.npy stays empty: rerun download", raw_file
        )
    labels = [map_label(label, label_map) for label in raw_labels]
    sources = [f"phantom/{i:06d}" for i in range(len(labels))]
    return Rows(
        items=_synthetic_items(raw_file, options, len(labels), lesions),
        labels=labels,
        groups=patients,
        views=["PA"] * len(labels),
        reports=reports,
        sources=sources,
        paths=sources,
        raw_labels=raw_labels,
        seen={"labels": label_fates(raw_labels, labels, [True] * len(labels))},
        lesions=lesions,
    )


def _stream(rows: Rows, writer: Any) -> dict[str, Any]:
    """Write every readable row into the cache; collect errors, mask problems, hashes and mask flags."""
    from cxrmim.data.duplicates import HASH_GRID, perceptual_hash, thumbnail

    n = len(rows.labels)
    ok, has_mask, has_lesion = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    phashes, digests = np.zeros(n, dtype=np.uint64), [None] * n
    thumbs = np.zeros((n, HASH_GRID, HASH_GRID), dtype=np.uint8)
    bad, mask_problems = [], []
    for i, item in enumerate(rows.items):
        if item.error or item.mask_problem:
            (bad if item.error else mask_problems).append(item.error or item.mask_problem)
            continue
        writer.write(i, item.image, item.mask, item.lesion)
        ok[i], has_mask[i], digests[i] = True, item.mask is not None, item.digest
        has_lesion[i] = item.lesion is not None and bool(item.lesion.any())
        thumbs[i] = thumbnail(item.image)
        phashes[i] = perceptual_hash(thumbs[i])
    return {
        "ok": ok,
        "has_mask": has_mask,
        "has_lesion": has_lesion,
        "phashes": phashes,
        "thumbs": thumbs,
        "digests": digests,
        "bad": bad,
        "mask_problems": mask_problems,
    }


def _check_bad(bad: list[str], on_bad_image: str) -> None:
    """Fail on unreadable images by policy, else log each one."""
    if bad and on_bad_image == "fail":
        raise ValueError(
            f"{len(bad)} unreadable image(s):\n  "
            + "\n  ".join(bad[:10])
            + "\nfix or remove them, or set prepare.on_bad_image: skip"
        )
    for message in bad:
        log.warning("skipped: %s", message)


def _manifest(rows: Rows, keep: np.ndarray, groups: list[str], has_mask: np.ndarray, name: str) -> pd.DataFrame:
    """The prepared manifest of the kept rows, renumbered."""
    kept = np.flatnonzero(keep)
    ids = [f"{name}-{i:06d}" for i in range(len(kept))]
    return pd.DataFrame(
        {
            "index": np.arange(len(kept)),
            "id": ids,
            "label": [rows.labels[i] for i in kept],
            "source": [rows.sources[i] for i in kept],
            "group": [groups[i] for i in kept],
            "view": [rows.views[i] for i in kept],
            "has_mask": has_mask[kept].astype(int),
            "report": [rows.reports[i] for i in kept],
            "official": [rows.official[i] for i in kept] if rows.official else [""] * len(kept),
        },
        columns=MANIFEST_COLUMNS,
    )


def prepare(marker: Path, dataset_cfg: dict[str, Any], prepare_cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Run the stage: stream every image into a temporary memory-mapped cache, check it, then move it into place."""
    from cxrmim.data.accounting import prepared_counts
    from cxrmim.data.cache import CacheWriter, check_free_space, disk_full_message
    from cxrmim.data.duplicates import resolve_duplicates
    from cxrmim.data.tasks import LabelTask

    task = LabelTask.from_config(dataset_cfg)  # a bad task setting fails before any image is read
    info = json.loads(Path(marker).read_text())
    kind, root = dataset_cfg["kind"], Path(info["root"])
    options = LoadOptions.from_config(prepare_cfg)
    rows = (
        _synthetic_rows(root, options, dataset_cfg.get("label_map") or {})
        if kind == "synthetic"
        else _real_rows(kind, root, dataset_cfg, prepare_cfg, options)
    )
    for message in rows.warnings:
        log.warning("%s", message)
    for role, name in (rows.seen.get("label_files") or {}).items():
        log.info("%s file: %s", role, name or "absent")
    task.check_labels(rows.labels)  # labels are known before any image is read: fail fast on a task mismatch
    check_free_space(Path(out_dir), len(rows.labels), options.size, rows.lesions)
    writer = None
    try:
        writer = CacheWriter(Path(out_dir), len(rows.labels), options.size, lesions=rows.lesions)
        seen = _stream(rows, writer)
        raise_mask_problems(seen["mask_problems"])
        _check_bad(seen["bad"], prepare_cfg.get("on_bad_image", "skip"))
        ok = seen["ok"]
        if not ok.any():
            raise ValueError(f"{root}: every image failed to load; see the log for the files")
        # Without a patient id every image is its own group.
        groups = [pseudonym(g) if g else pseudonym(f"row-{i}") for i, g in enumerate(rows.groups)]
        index = np.flatnonzero(ok)
        dup = resolve_duplicates(
            [rows.labels[i] for i in index],
            [groups[i] for i in index],
            [rows.sources[i] for i in index],
            [rows.paths[i] for i in index],
            [seen["digests"][i] for i in index],
            seen["phashes"][index],
            seen["thumbs"][index],
            prepare_cfg.get("duplicates") or {},
        )
        keep = np.zeros(len(ok), dtype=bool)
        keep[index[dup.keep]] = True
        for position, row in enumerate(index):
            groups[row] = dup.groups[position]
        manifest = _manifest(rows, keep, groups, seen["has_mask"], dataset_cfg["name"])
        task.check_labels(manifest["label"].tolist())
        uncertain = [rows.uncertain[i] for i in np.flatnonzero(keep)] if rows.uncertain else None
        summary = {
            "dataset": dataset_cfg["name"],
            "kind": kind,
            **task.summary(manifest["label"].tolist()),
            "n_images": len(manifest),
            "n_skipped_bad": len(seen["bad"]),
            "n_dropped_duplicates": int(ok.sum() - keep.sum()),
            "n_without_mask": int(len(manifest) - manifest["has_mask"].sum()),
            "image_size": options.size,
            "labels": manifest["label"].value_counts().sort_index().to_dict(),
            "warnings": rows.warnings,
            "duplicates": dup.clusters,
            "seen": prepared_counts(rows.seen, rows.raw_labels, keep),
        }
        if rows.lesions:  # a lesion smaller than half a grid pixel vanishes there (the lung masks' rule)
            summary["n_with_lesion"] = int(seen["has_lesion"][keep].sum())
        writer.commit(keep, manifest, summary, labels=task.matrix(manifest["label"].tolist(), uncertain))
        write_reports(out_dir, manifest)  # cleaned, sentence-split reports for the tokenizer and report-aware methods
    except OSError as err:
        if writer is not None:
            writer.discard()
        if err.errno == errno.ENOSPC:
            raise ValueError(disk_full_message(Path(out_dir), len(rows.labels), options.size, rows.lesions)) from None
        raise
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    log.info("prepared %d images (%d skipped, %d duplicate sets)", len(manifest), len(seen["bad"]), len(dup.clusters))
    return summary
