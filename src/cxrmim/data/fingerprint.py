"""A cheap fingerprint of a dataset's files (path, size, mtime), so edits to the data rerun prepare and what follows."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from cxrmim import registry
from cxrmim.data.sources import (
    IMAGE_SUFFIXES,
    SourceError,
    column_positions,
    read_manifest_table,
)


def _stat_line(path: Path) -> str:
    """'path size mtime_ns' of one file, or 'path missing' (the reader reports missing files itself)."""
    try:
        info = path.stat()
    except OSError:
        return f"{path} missing"
    return f"{path} {info.st_size} {info.st_mtime_ns}"


def manifest_files(csv_path: Path) -> list[Path]:
    """Every image and mask path a manifest lists (resolved like the reader does); [] when unreadable."""
    try:
        header, rows = read_manifest_table(csv_path)
        positions = [i for key, i in column_positions(csv_path, header).items() if key in ("image", "mask")]
    except (OSError, SourceError):
        return []  # prepare reports the unreadable manifest with its fix
    values = [row[i].strip() for _, row in rows for i in positions if i < len(row)]
    folder = csv_path.parent
    return [p if p.is_absolute() else folder / p for p in (Path(v).expanduser() for v in values if v)]


# Public dataset kinds keep labels, splits and reports in CSV / text files beside the images.
LABEL_SUFFIXES = {".csv", ".txt", ".gz"}


def folder_files(root: Path, suffixes: set[str] = IMAGE_SUFFIXES) -> list[Path]:
    """Files with the given suffixes (default: images) anywhere under a dataset folder (hidden skipped), sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in suffixes and f[0] != "."]
    return sorted(found)


def dataset_fingerprint(dataset_cfg: dict[str, Any]) -> str:
    """SHA-256 over the source's files: a manifest's bytes plus every listed file's size and mtime, a folder's
    image files, or a local archive's size and mtime. Synthetic data (and URLs, checked by sha256) give ''."""
    source = dataset_cfg.get("source")
    entry = registry.dataset_kind(dataset_cfg["kind"])
    if entry.reader is None or not source or "://" in str(source):
        return ""
    path = Path(str(source)).expanduser()
    digest = hashlib.sha256()
    if path.is_file() and entry.file_source:
        digest.update(path.read_bytes())
        lines = [_stat_line(p) for p in manifest_files(path)]
    elif path.is_dir():
        suffixes = IMAGE_SUFFIXES | LABEL_SUFFIXES if entry.label_files else IMAGE_SUFFIXES
        lines = [_stat_line(p) for p in folder_files(path, suffixes)]
    else:
        lines = [_stat_line(path)]
    digest.update("\n".join(lines).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def dataset_input_files(dataset_cfg: dict[str, Any]) -> list[str]:
    """A local manifest CSV or archive as a download input, so editing or replacing it reruns the data stages."""
    source = Path(str(dataset_cfg.get("source") or "")).expanduser()
    return [str(source)] if dataset_cfg.get("kind") != "synthetic" and source.is_file() else []
