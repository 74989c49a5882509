"""Cheap checks of a dataset source made before any job runs, and the dataset keys each data stage depends on.

A job that fails has already lost its outputs (Snakemake removes them when it starts), so a mistake found inside
`download` or `prepare` would rerun every later stage once fixed. The mistakes a user makes most (a misspelt or
repeated manifest column, a wrong path in a row, labels that do not fit the task, a renamed folder, a second label
file) are found here instead, while the outputs of the last good run are still in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxrmim import registry
from cxrmim.data.sources import SourceError

__all__ = ["check_source", "dataset_params"]


def check_source(dataset_cfg: dict[str, Any], marker: Path | str | None = None) -> None:
    """Raise for a local source that cannot be prepared as configured (a missing one only after a good run)."""
    from cxrmim.data.kinds import label_file_paths
    from cxrmim.data.records import source_records
    from cxrmim.data.tasks import LabelTask

    kind, source = dataset_cfg.get("kind"), dataset_cfg.get("source")
    entry = registry.dataset_kind(kind)
    if entry.reader is None or not source or "://" in str(source):
        return
    path = Path(str(source)).expanduser()
    if not path.exists():
        if marker is not None and Path(marker).exists():  # a first run lets the download job say it
            raise SourceError(
                f"dataset.source {path} does not exist (renamed or moved?); restore it or fix "
                "dataset.source (checked before any job, so the last run's results stay in place)"
            )
        return
    if path.is_file() != entry.file_source:  # an archive, still to extract (or a folder given for a manifest)
        return
    if entry.check == "records":
        # Every listed file and the labels against the task: what the fingerprint stats anyway, plus the labels.
        records, _, _ = source_records(kind, path, dataset_cfg)
        LabelTask.from_config(dataset_cfg).check_labels([r.label for r in records])
    else:  # reading their label CSVs takes long: only their files are checked
        label_file_paths(kind, path, dataset_cfg)


def dataset_params(dataset_cfg: dict[str, Any]) -> dict[str, Any]:
    """The dataset section as a data stage's tracked param: the `synthetic` block counts only for phantoms."""
    if dataset_cfg.get("kind") == "synthetic":
        return dict(dataset_cfg)
    return {key: value for key, value in dataset_cfg.items() if key != "synthetic"}
