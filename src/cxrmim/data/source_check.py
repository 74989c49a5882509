"""Cheap checks of a dataset source made before any job runs, and the dataset keys each data stage depends on.

A job that fails has already lost its outputs (Snakemake removes them when it starts), so a mistake found inside
`download` or `prepare` would rerun every later stage once fixed. The layout mistakes a user makes most (a
misspelt or repeated manifest column, a renamed folder, a second label file) are found here instead, while the
outputs of the last good run are still in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrmim.data.sources import SourceError

__all__ = ["check_source", "dataset_params"]

PUBLIC = ("chexpert", "nih_cxr14", "mimic_cxr_jpg")


def check_source(dataset_cfg: dict[str, Any], marker: Path | str | None = None) -> None:
    """Raise SourceError for a local source whose layout cannot be read (a missing one only after a good run)."""
    from cxrmim.data.public import label_files
    from cxrmim.data.sources import (
        column_positions,
        covid19_radiography_records,
        read_manifest_table,
    )

    kind, source = dataset_cfg.get("kind"), dataset_cfg.get("source")
    if kind == "synthetic" or not source or "://" in str(source):
        return
    path = Path(str(source)).expanduser()
    if not path.exists():
        if marker is not None and Path(marker).exists():  # a first run lets the download job say it
            raise SourceError(f"dataset.source {path} does not exist (renamed or moved?); restore it or fix "
                              "dataset.source (checked before any job, so the last run's results stay in place)")
        return
    if kind == "manifest" and path.is_file():
        column_positions(path, read_manifest_table(path)[0])
    elif kind == "covid19_radiography" and path.is_dir():
        covid19_radiography_records(path)
    elif kind in PUBLIC and path.is_dir():
        label_files(kind, path, dataset_cfg.get("labeler") or "chexpert")


def dataset_params(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    """The dataset section as a data stage's tracked param: the `synthetic` block counts only for phantoms."""
    if dataset_cfg.get("kind") == "synthetic":
        return dict(dataset_cfg)
    return {key: value for key, value in dataset_cfg.items() if key != "synthetic"}
