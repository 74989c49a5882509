"""Partial reruns: after a completed run, a changed setting plans exactly the stages it affects (`snakemake -n`).

The run happens in a copy of the project (workflow files, src/ and results in one folder, as a user's checkout),
so a test can edit code there, and move the whole folder, without touching this repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake

pytestmark = pytest.mark.slow

# The tiny config with fewer jobs (one masking ratio, one scratch baseline): every stage is still there.
SMALL = {
    "pretrain": {"methods": ["rgmim", "mae"], "mask_ratios": [0.75]},
    "finetune": {"inits": ["rgmim", "mae", "scratch_vit-tiny"]},
    "label_fractions": {"fractions": [0.1, 1.0], "seeds": [0]},
}
PRETRAINED_INITS, ALL_INITS, FRACTIONS = 2, 3, 2
UPSTREAM = {"download", "prepare", "split", "label_subset", "patch_validity"}
PROJECT_FILES = ("Snakefile", "workflow_config.yaml", "rules", "scripts", "src", "schemas", "envs", "docs/captions")


def copy_project(target: Path) -> Path:
    """A copy of this repository's workflow files and package at `target`: a user's checkout, without its history."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def write_yaml(path: Path, data: dict) -> Path:
    """Write `data` as YAML and return the path."""
    path.write_text(yaml.safe_dump(data))
    return path


def planned_jobs(output: str) -> Counter:
    """Job counts per rule from the "Job stats" table of a dry run (empty when nothing is to be done)."""
    counts: Counter = Counter()
    lines = iter(output.splitlines())
    for line in lines:
        if line.strip() == "Job stats:":
            break
    else:
        return counts
    for line in lines:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match is None:
            continue
        rule, count = match.groups()
        if rule == "total":
            break
        counts[rule] = int(count)
    return counts


def reasons(output: str) -> dict[str, set[str]]:
    """The `reason:` texts of a dry run, grouped by the rule of the job block they belong to."""
    found: dict[str, set[str]] = {}
    rule = None
    for line in output.splitlines():
        header = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if header:
            rule = header.group(1)
        elif line.strip().startswith("reason:") and rule:
            found.setdefault(rule, set()).add(line.strip().removeprefix("reason:").strip())
    return found


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder where the small tiny-config workflow ran to completion, and its config override."""
    workdir = copy_project(tmp_path_factory.mktemp("reruns") / "project")
    small = write_yaml(workdir / "small.yaml", SMALL)
    snakemake(workdir, configs=(TINY_CONFIG, small), project=workdir)
    return workdir, small


def dry_run(completed: tuple[Path, Path], change: dict | None = None) -> tuple[Counter, dict[str, set[str]], str]:
    """Planned job counts and reasons of `snakemake -n` with `change` merged over the completed run's config."""
    workdir, small = completed
    configs = (TINY_CONFIG, small)
    if change is not None:
        configs += (write_yaml(workdir / "change.yaml", change),)
    out = snakemake(workdir, "-n", configs=configs, project=workdir).stdout
    return planned_jobs(out), reasons(out), out


def test_nothing_changed_nothing_to_do(completed):
    counts, _, out = dry_run(completed)
    assert not counts and "Nothing to be done" in out, out[-3000:]


def test_finetune_setting_reruns_finetune_and_after(completed):
    counts, why, out = dry_run(completed, {"finetune": {"base_lr": 2.0e-3}})
    assert set(counts) == {"finetune", "tables", "figures", "report", "all"}, (counts, out[-3000:])
    assert counts["finetune"] == ALL_INITS * FRACTIONS
    assert all("Params have changed" in r for r in why["finetune"]), why["finetune"]


def test_pretrain_setting_reruns_pretrain_and_after_not_data(completed):
    counts, why, out = dry_run(completed, {"pretrain": {"weight_decay": 0.04}})
    assert not set(counts) & UPSTREAM, (counts, out[-3000:])
    assert set(counts) == {"pretrain", "finetune", "tables", "figures", "pretrain_figures", "report", "all"}, counts
    assert counts["pretrain"] == PRETRAINED_INITS
    # Only fine-tuning runs that start from a pretrained encoder are affected; scratch baselines are not.
    assert counts["finetune"] == PRETRAINED_INITS * FRACTIONS
    assert all("Params have changed" in r for r in why["pretrain"]), why["pretrain"]


def test_plot_setting_reruns_only_figures(completed):
    counts, _, out = dry_run(completed, {"plots": {"dpi": 60}})
    assert set(counts) == {"figures", "pretrain_figures", "report", "all"}, (counts, out[-3000:])


def test_new_fraction_runs_only_new_jobs(completed):
    counts, why, out = dry_run(completed, {"label_fractions": {"fractions": [0.1, 0.5, 1.0], "seeds": [0]}})
    assert set(counts) == {"label_subset", "finetune", "tables", "figures", "report", "all"}, (counts, out[-3000:])
    assert counts["label_subset"] == 1 and counts["finetune"] == ALL_INITS
    assert all("Missing output files" in r for r in why["finetune"]), why["finetune"]


def test_new_seed_runs_only_new_jobs(completed):
    counts, why, out = dry_run(completed, {"label_fractions": {"fractions": [0.1, 1.0], "seeds": [0, 1]}})
    assert set(counts) == {"label_subset", "finetune", "tables", "figures", "report", "all"}, (counts, out[-3000:])
    assert counts["label_subset"] == FRACTIONS
    # New seed: every main init at every fraction.
    assert counts["finetune"] == ALL_INITS * FRACTIONS
    assert all("Missing output files" in r for r in why["finetune"]), why["finetune"]


def test_new_pretraining_seed_runs_only_its_pretraining_and_finetunes(completed):
    counts, why, out = dry_run(completed, {"pretrain": {"seeds": [0, 1]}})
    assert set(counts) == {"pretrain", "finetune", "tables", "figures", "pretrain_figures", "report", "all"}, (
        counts,
        out[-3000:],
    )
    # One new pretraining per method (a single masking ratio here), and each new encoder fine-tuned at every
    # fraction and subset seed; seed-0 runs and scratch baselines keep their results.
    assert counts["pretrain"] == PRETRAINED_INITS
    assert counts["finetune"] == PRETRAINED_INITS * FRACTIONS
    assert all("Missing output files" in r and "_s1/" in r for r in why["pretrain"] | why["finetune"]), why


def test_edited_script_reruns_its_rule(completed):
    workdir, _ = completed
    script = workdir / "scripts" / "tables.py"
    text, stat = script.read_text(), script.stat()
    try:
        # A real edit: Snakemake compares checksums of small inputs, so a bare `touch` reruns nothing.
        script.write_text(text + "\n# edited\n")
        # Newer than every output whatever the checkout's own mtimes (a clean clone's are minutes old, a worktree's
        # can be days old: original + 1 h would then still predate the outputs and nothing would rerun).
        os.utime(script, (stat.st_atime, time.time() + 3600))
        counts, why, out = dry_run(completed)
    finally:
        script.write_text(text)
        os.utime(script, (stat.st_atime, stat.st_mtime))
    # The figures read the tables' CSVs (the verdict's headline figure and heatmap), so they follow the tables.
    assert set(counts) == {"tables", "figures", "report", "all"}, (counts, out[-3000:])
    assert any("scripts/tables.py" in r for r in why["tables"]), why["tables"]


def test_recorded_inputs_are_relative(completed):
    workdir, _ = completed
    records = [json.loads(p.read_text()) for p in (workdir / ".snakemake" / "metadata").iterdir()]
    inputs = [path for record in records for path in record.get("input", [])]
    assert inputs and not [p for p in inputs if Path(p).is_absolute()], [p for p in inputs if Path(p).is_absolute()][:5]


def test_moved_project_has_nothing_to_do(completed, tmp_path_factory: pytest.TempPathFactory):
    workdir, small = completed
    # Another parent at another depth, another folder name: a renamed checkout, or results brought to scratch.
    moved = tmp_path_factory.mktemp("elsewhere") / "deeper" / "renamed"
    shutil.copytree(workdir, moved, symlinks=True)  # copy2 keeps modification times, as `mv` or `rsync -a` do
    out = snakemake(moved, "-n", configs=(TINY_CONFIG, moved / small.name), project=moved).stdout
    assert "Nothing to be done" in out and not planned_jobs(out), out[-3000:]
