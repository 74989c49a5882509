"""Partial reruns: after a completed run, a changed setting plans exactly the stages it affects (`snakemake -n`)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG, snakemake

pytestmark = pytest.mark.slow

# The tiny config with fewer jobs (one masking ratio, one scratch baseline): every stage is still there.
SMALL = {
    "pretrain": {"methods": ["rgmim", "mae"], "mask_ratios": [0.75]},
    "finetune": {"inits": ["rgmim", "mae", "scratch_vit-tiny"]},
    "label_fractions": {"fractions": [0.1, 1.0], "seeds": [0]},
}
PRETRAINED_INITS, ALL_INITS, FRACTIONS = 2, 3, 2
UPSTREAM = {"download", "prepare", "split", "label_subset", "patch_validity"}


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
    workdir = tmp_path_factory.mktemp("reruns")
    small = write_yaml(workdir / "small.yaml", SMALL)
    snakemake(workdir, configs=(TINY_CONFIG, small))
    return workdir, small


def dry_run(completed: tuple[Path, Path], change: dict | None = None) -> tuple[Counter, dict[str, set[str]], str]:
    """Planned job counts and reasons of `snakemake -n` with `change` merged over the completed run's config."""
    workdir, small = completed
    configs = (TINY_CONFIG, small)
    if change is not None:
        configs += (write_yaml(workdir / "change.yaml", change),)
    out = snakemake(workdir, "-n", configs=configs).stdout
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
