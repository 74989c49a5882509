"""Dataset kinds dispatched from the registry: each kind's reader and label files, with its declared options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrmim import registry
from cxrmim.data.sources import KindRead, SourceError

__all__ = ["foreign_options", "has_reports", "kind_options", "label_file_names", "label_file_paths", "read_kind"]

GENERIC = {"views"}  # every kind's filter (cxrmim.data.records); a reader may read it too


def kind_options(kind: str, dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    """The `dataset.<key>`s a kind's reader takes (registry `options`), defaults filled in."""
    return {key: dataset_cfg.get(key) or default for key, default in registry.dataset_kind(kind).options}


def foreign_options(dataset_cfg: dict[str, Any]) -> list[str]:
    """`dataset.<key>`s set away from their default that only other kinds read (they would change nothing here)."""
    own = {key for key, _ in registry.dataset_kind(dataset_cfg["kind"]).options}
    others = {
        key: default
        for kind in registry.DATASET_KINDS
        for key, default in kind.options
        if key not in own and key not in GENERIC
    }
    return sorted(k for k, default in others.items() if dataset_cfg.get(k) not in (None, default))


def read_kind(kind: str, root: Path, dataset_cfg: dict[str, Any]) -> KindRead:
    """A real dataset's records as its kind's reader gives them."""
    entry = registry.dataset_kind(kind)
    if entry.reader is None:
        raise SourceError(f"dataset.kind {kind!r} is generated, not read from dataset.source")
    return registry.load_reader(kind)(Path(root), kind_options(kind, dataset_cfg))


def label_file_paths(kind: str, root: Path, dataset_cfg: dict[str, Any]) -> dict[str, Path | None]:
    """The label, split and report files a kind reads (None: optional and absent); {} for kinds without any."""
    if registry.dataset_kind(kind).label_files is None:
        return {}
    return registry.load_reader(kind, "label_files")(Path(root), kind_options(kind, dataset_cfg))


def label_file_names(kind: str, root: Path, dataset_cfg: dict[str, Any]) -> dict[str, str]:
    """label_file_paths relative to root ('' when absent), for source.json, summary.json and the log."""
    root = Path(root)
    return {
        role: str(path.relative_to(root)) if path else ""
        for role, path in label_file_paths(kind, root, dataset_cfg).items()
    }


def has_reports(dataset_cfg: dict[str, Any]) -> bool | None:
    """Whether a dataset brings report text (registry `has_reports`; a local manifest: its header has a report
    column); None when that cannot be known before the data is fetched (a URL, an archive, a missing file)."""
    from cxrmim.data.csvtext import column_positions, read_manifest_table

    declared = registry.dataset_kind(dataset_cfg["kind"]).has_reports
    if declared is not None:
        return declared
    path = Path(str(dataset_cfg.get("source") or "")).expanduser()
    if "://" in str(dataset_cfg.get("source") or "") or not path.is_file():
        return None
    try:
        header, _ = read_manifest_table(path)
        return "report" in column_positions(path, header)
    except SourceError:  # the source check names what is wrong with the file
        return None
