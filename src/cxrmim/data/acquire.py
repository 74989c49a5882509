"""The download stage: generate the phantoms, or fetch/extract/locate a real dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cxrmim.data.fingerprint import dataset_fingerprint
from cxrmim.io import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

PHANTOM_FILE = "phantoms.npz"


def acquire(dataset_cfg: dict[str, Any], raw_dir: Path, marker: Path, workers: int = 1) -> dict[str, Any]:
    """Make the raw data available under raw_dir and write a JSON marker saying where it is."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    kind = dataset_cfg["kind"]
    if kind == "synthetic":
        info = _generate_phantoms(dataset_cfg.get("synthetic") or {}, raw_dir, workers)
    else:
        info = _fetch_real(dataset_cfg, raw_dir)
    info["kind"] = kind
    # The dataset's files as they are now: a changed fingerprint rewrites this marker, which reruns prepare.
    info["fingerprint"] = dataset_fingerprint(dataset_cfg)
    write_text_atomic(marker, json.dumps(info, indent=2))
    log.info("download done: %s", info["root"])
    return info


def _generate_phantoms(section: dict[str, Any], raw_dir: Path, workers: int) -> dict[str, Any]:
    """Render the phantom dataset once; prepare resizes it like any other source."""
    from cxrmim.data.synthetic import PhantomSettings, generate_dataset

    settings = PhantomSettings.from_config(section)
    log.info("generating %d phantoms of %d px with %d worker(s)", settings.n_images, settings.image_size, workers)
    data = generate_dataset(settings, workers=workers)
    target = raw_dir / PHANTOM_FILE
    with atomic_path(target) as tmp:  # the temporary name keeps `.npz`, so numpy adds no suffix
        np.savez(
            tmp,
            images=data["images"],
            masks=data["masks"],
            lesions=data["lesions"],
            labels=np.asarray(data["labels"]),
            reports=np.asarray(data["reports"]),
            patient_ids=np.asarray(data["patient_ids"]),
        )
    log.info("generated %d phantoms of %d px", len(data["labels"]), settings.image_size)
    return {"root": str(target.resolve()), "n_images": len(data["labels"])}


def _fetch_real(dataset_cfg: dict[str, Any], raw_dir: Path) -> dict[str, Any]:
    """Locate a local folder/CSV, or extract a local archive or verified URL download into raw_dir."""
    from cxrmim.data.archive import fetch_source

    source = dataset_cfg.get("source")
    if not source:
        raise ValueError(
            f"dataset.source is empty for dataset.kind={dataset_cfg['kind']!r}; set it to the dataset's folder, "
            "archive, manifest CSV or URL (with dataset.sha256)"
        )
    from cxrmim import registry
    from cxrmim.data.kinds import label_file_names
    from cxrmim.data.source_check import check_source

    kind = dataset_cfg["kind"]
    if registry.dataset_kind(kind).file_source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"dataset.source: manifest CSV not found: {path}")
        check_source(dataset_cfg)  # a bad header fails here, before prepare replaces anything
        return {"root": str(path.resolve())}
    root = Path(fetch_source(str(source), raw_dir, sha256=dataset_cfg.get("sha256"))).resolve()
    check_source({**dataset_cfg, "source": str(root)})
    info: dict[str, Any] = {"root": str(root)}
    if registry.dataset_kind(kind).label_files:  # the label files read, named where the user looks (log, summary)
        info["label_files"] = label_file_names(kind, root, dataset_cfg)
        for role, name in info["label_files"].items():
            log.info("%s file: %s", role, name or "absent")
    return info
