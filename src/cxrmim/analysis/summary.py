"""The run behind the verdict, for the report: the dataset, how pretraining masked, and provenance (commit, config
digest, device, wall time per stage)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxrmim.analysis.runs import load_pretrain_histories
from cxrmim.analysis.tables import percent

PARTS = ["train", "val", "test"]
MASKING_MEANING = (
    "A fallback image had too few lung-valid patches for the masking ratio, so its mask also covered patches "
    "outside the lung (region-guided masking degrades towards random masking there); the fewer lung patches "
    "stay visible, the more of the lung the encoder must infer rather than see."
)


@dataclass
class RunFiles:
    """The stage outputs the summary reads; any may be absent (None), and the summary says so."""

    prepared_summary: Path | None = None  # prepared/summary.json
    manifest: Path | None = None  # prepared/manifest.csv
    split: Path | None = None  # split/split.csv
    lung_masks_summary: Path | None = None  # lung_masks/summary.json (predicted masks only)
    validity_summary: Path | None = None  # patch_validity/summary.csv
    metrics: list[Path] = field(default_factory=list)  # fine-tuning metrics.json
    pretrain_histories: list[Path] = field(default_factory=list)  # pretrain/<run>/history.csv
    benchmarks_dir: Path | None = None  # benchmarks/ (Snakemake benchmark TSVs)


def read_json(path: Path | None) -> dict[str, Any]:
    """A JSON file's object, {} when not given."""
    return json.loads(Path(path).read_text()) if path else {}


def images_per_class_and_split(split_csv: Path) -> pd.DataFrame:
    """Class x split image counts with totals (the split's labels, i.e. what training and testing saw)."""
    split = pd.read_csv(split_csv, keep_default_na=False)
    counts = pd.crosstab(split["label"].astype(str), split["part"]).reindex(columns=PARTS, fill_value=0)
    counts["total"] = counts.sum(axis=1)
    counts.loc["all"] = counts.sum(axis=0)
    return counts.reset_index().rename(columns={"label": "Class", "val": "validation"})


def dataset_sentences(files: RunFiles) -> list[str]:
    """How many images, which were skipped or dropped as duplicates, where the lung masks came from."""
    prepared = read_json(files.prepared_summary)
    sentences = []
    if prepared:
        duplicates = prepared.get("duplicates") or []
        sentences.append(
            f"Dataset {prepared.get('dataset', '?')} ({prepared.get('kind', '?')}): {prepared.get('n_images', '?')} "
            f"images on a {prepared.get('image_size', '?')}-pixel grid; {prepared.get('n_skipped_bad', 0)} unreadable "
            f"or invalid files skipped; {prepared.get('n_dropped_duplicates', 0)} duplicate images dropped "
            f"({len(duplicates)} duplicate sets found)."
        )
    if files.manifest:
        manifest = pd.read_csv(files.manifest, keep_default_na=False)
        provided = int(manifest["has_mask"].astype(int).sum())
        sentences.append(f"Lung masks provided with the dataset: {provided} of {len(manifest)} images.")
    lung = read_json(files.lung_masks_summary)
    if lung:
        decisions = ", ".join(f"{k}: {v}" for k, v in sorted((lung.get("decisions") or {}).items()))
        sentences.append(
            f"Lung masks predicted by the segmenter: {lung.get('n_predicted', 0)} images; "
            f"{lung.get('n_flagged', 0)} flagged as implausible by QC (decisions {decisions or 'none'}; "
            f"policy {lung.get('qc_policy', '?')})."
        )
    if files.validity_summary:
        validity = pd.read_csv(files.validity_summary).set_index("label")
        if "all" in validity.index:
            row = validity.loc["all"]
            sentences.append(
                f"Lung-valid patches per image: mean {row['mean']:.1f} of {int(row['n_patches'])} "
                f"(median {row['median']:g}, range {row['min']:g}–{row['max']:g}); "
                f"images without a usable mask: {int(row['n_without_mask'])}."
            )
    return sentences


def pretraining_sentences(history_paths: Iterable[Path]) -> list[str]:
    """Per pretrained init family, the last epoch's fallback and visible-lung shares, and what they mean."""
    histories = load_pretrain_histories(history_paths)
    measured = histories.dropna(subset=["fallback_fraction", "visible_lung_fraction"], how="all")
    if measured.empty:
        return []
    shares = measured.groupby("init", sort=False)[["fallback_fraction", "visible_lung_fraction"]].mean()
    parts = [
        f"{init}: {percent(row['fallback_fraction'])} fallback images, {percent(row['visible_lung_fraction'])} "
        "of lung patches visible"
        for init, row in shares.iterrows()
    ]
    return ["Last pretraining epoch (mean over pretraining seeds) — " + "; ".join(parts) + ".", MASKING_MEANING]


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the config (sorted keys, no whitespace)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def git_commit(repo: Path) -> str:
    """HEAD of the repository holding the code, '(uncommitted changes)' appended when tracked files differ;
    'unknown' outside a git checkout or without git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (uncommitted changes)" if dirty else head


def devices(metrics_paths: Iterable[Path]) -> str:
    """'cpu (40 runs)' from the fine-tuning runs' metrics.json."""
    found = pd.Series([json.loads(Path(p).read_text()).get("device") or "unknown" for p in metrics_paths])
    if found.empty:
        return "–"
    return ", ".join(f"{device} ({count} fine-tuning runs)" for device, count in found.value_counts().items())


def wall_times(benchmarks_dir: Path | None) -> pd.DataFrame:
    """Per stage (the first folder or file name under benchmarks/): jobs, summed and longest wall time."""
    columns = ["Stage", "Jobs", "Wall time (sum of jobs)", "Longest job"]
    if benchmarks_dir is None or not Path(benchmarks_dir).is_dir():
        return pd.DataFrame(columns=columns)
    rows = []
    for path in sorted(Path(benchmarks_dir).rglob("*.tsv")):
        seconds = pd.read_csv(path, sep="\t")["s"]
        rows.append({"stage": path.relative_to(benchmarks_dir).parts[0].removesuffix(".tsv"), "s": seconds.sum()})
    if not rows:
        return pd.DataFrame(columns=columns)
    stages = pd.DataFrame(rows).groupby("stage", sort=False)["s"].agg(["count", "sum", "max"])
    stages = stages.sort_values("sum", ascending=False)
    return pd.DataFrame(
        {
            "Stage": stages.index,
            "Jobs": stages["count"].to_numpy(),
            "Wall time (sum of jobs)": stages["sum"].map(duration).to_numpy(),
            "Longest job": stages["max"].map(duration).to_numpy(),
        },
        columns=columns,
    )


def duration(seconds: float) -> str:
    """75.3 -> '1 min 15 s'."""
    minutes, rest = divmod(round(float(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {rest} s" if minutes else f"{rest} s"


def provenance(files: RunFiles, config: dict[str, Any], repo: Path) -> list[tuple[str, str]]:
    """(what, value) rows: commit, config digest, devices."""
    return [
        ("Commit", git_commit(repo)),
        ("Config digest (sha256 of canonical JSON)", config_digest(config)),
        ("Device", devices(files.metrics)),
    ]
