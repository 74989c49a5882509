"""Pretrain once, evaluate everywhere: a two-dataset experiment end to end, its results layout, and reruns that stay
local (adding an evaluation dataset, moving the corpus, editing the corpus's data, moving the project).

Runs in a copy of the project (tests/test_reruns.py's copy_project), so moving it touches nothing here.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_CONFIG, TINY_TRANSFER, snakemake
from test_reruns import copy_project, planned_jobs, write_yaml

pytestmark = pytest.mark.slow

# tiny_transfer.yaml with one pretraining, one pretrained and one scratch init, 100% labels: every stage is there.
SMALL = {
    "pretrain": {"methods": ["mae"], "mask_ratios": [0.75]},
    "finetune": {"inits": ["mae", "scratch_vit-tiny"]},
    "label_fractions": {"fractions": [1.0], "seeds": [0]},
    # A third evaluation dataset: the phantoms' lesions segmented (dense transfer).
    "datasets": {"tiny_seg": {"task": "segmentation", "segment": "lesion", "synthetic": {"n_images": 100, "seed": 9}}},
    "experiment": {"evaluate": ["tiny", "tiny_b", "tiny_seg"]},
}
EVALUATED = 3
INITS = 2
DATA_STAGES = {"download", "prepare", "split", "label_subset", "patch_validity", "lung_masks", "tokenizer"}
THIRD = {"kind": "synthetic", "synthetic": {"n_images": 100, "seed": 31}, "label_fractions": {"fractions": [1.0]}}


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[Path, ...]]:
    """A project copy where the small two-dataset experiment ran to completion, and its config files."""
    workdir = copy_project(tmp_path_factory.mktemp("transfer") / "project")
    configs = (TINY_CONFIG, TINY_TRANSFER, write_yaml(workdir / "small.yaml", SMALL))
    snakemake(workdir, configs=configs, project=workdir)
    return workdir, configs


def dry_run(completed, change: dict | None = None) -> tuple[dict[str, int], list[str], str]:
    """Planned job counts, every planned output path and the text of `snakemake -n` with `change` merged over."""
    workdir, configs = completed
    if change is not None:
        configs += (write_yaml(workdir / "change.yaml", change),)
    out = snakemake(workdir, "-n", configs=configs, project=workdir).stdout
    outputs = [p for line in out.splitlines() if line.strip().startswith("output:")
               for p in line.split(":", 1)[1].split(",")]  # fmt: skip
    return planned_jobs(out), [p.strip() for p in outputs], out


def under(outputs: list[str], dataset: str) -> list[str]:
    """The planned outputs in results/<dataset>/."""
    return [p for p in outputs if p.startswith(f"results/{dataset}/")]


def test_layout_pretraining_under_the_corpus_fine_tunes_under_each_dataset(completed):
    workdir, _ = completed
    results = workdir / "results"
    assert (results / "tiny/pretrain/mae_r0.75_vit-tiny_s0/encoder.safetensors").is_file()
    # The second dataset has its data stages, fine-tunes, tables and report, but no pretraining or patch validity.
    other = results / "tiny_b"
    assert not (other / "pretrain").exists() and not (other / "patch_validity").exists()
    for dataset in ("tiny", "tiny_b", "tiny_seg"):
        runs = sorted(p.parent.parent.name for p in (results / dataset / "finetune").glob("*/*/metrics.json"))
        assert runs == ["mae_r0.75_vit-tiny_s0", "scratch_vit-tiny"], (dataset, runs)
        assert (results / dataset / "report.html").is_file() and (results / dataset / "tables/verdict.md").is_file()
    summary = pd.read_csv(results / "tiny_transfer/tables/transfer.csv")
    assert set(summary["dataset"]) == {"tiny", "tiny_b", "tiny_seg"}
    assert set(summary.loc[summary["dataset"] == "tiny_seg", "metric"]) == {"test_dice"}
    # Each dataset's headline metric: accuracy for the 4-class corpus, AUC for the binary second dataset.
    assert set(summary.loc[summary["dataset"] == "tiny", "metric"]) == {"test_accuracy"}
    assert set(summary.loc[summary["dataset"] == "tiny_b", "metric"]) == {"test_auc"}
    html = (results / "tiny_transfer/report.html").read_text()
    assert html.index('id="summary"') < html.index('id="dataset-tiny"') < html.index('id="dataset-tiny_b"')
    assert "../tiny_b/report.html" in html and "../tiny/report.html" in html


def test_nothing_changed_nothing_to_do(completed):
    counts, _, out = dry_run(completed)
    assert not counts and "Nothing to be done" in out, out[-3000:]


def test_moved_project_has_nothing_to_do(completed, tmp_path_factory: pytest.TempPathFactory):
    workdir, configs = completed
    moved = tmp_path_factory.mktemp("elsewhere") / "deeper" / "renamed"
    shutil.copytree(workdir, moved, symlinks=True)
    moved_configs = tuple(moved / c.name if c.is_relative_to(workdir) else c for c in configs)
    out = snakemake(moved, "-n", configs=moved_configs, project=moved).stdout
    assert "Nothing to be done" in out and not planned_jobs(out), out[-3000:]


def test_adding_an_evaluation_dataset_runs_only_its_stages_and_the_summary(completed):
    change = {"datasets": {"tiny_c": THIRD}, "experiment": {"evaluate": ["tiny", "tiny_b", "tiny_seg", "tiny_c"]}}
    counts, outputs, out = dry_run(completed, change)
    assert not under(outputs, "tiny") and not under(outputs, "tiny_b") and not under(outputs, "tiny_seg"), out[-3000:]
    assert set(counts) == {"download", "prepare", "split", "label_subset", "finetune", "tables", "figures", "report",
                           "transfer", "experiment_report", "all"}, counts  # fmt: skip
    assert counts["finetune"] == INITS and counts["download"] == 1 and "pretrain" not in counts


def test_moving_the_corpus_reruns_its_pretrainings_and_their_fine_tunes_only(completed):
    counts, outputs, out = dry_run(completed, {"experiment": {"corpus": "tiny_b"}})
    assert not set(counts) & (DATA_STAGES - {"patch_validity"}), (counts, out[-3000:])
    assert counts["patch_validity"] == 1 and counts["pretrain"] == 1
    assert all(p.startswith("results/tiny_b/") for p in outputs if "/pretrain/" in p or "patch_validity" in p)
    finetunes = [p for p in outputs if "/finetune/" in p]
    assert finetunes and not [p for p in finetunes if "scratch_" in p], finetunes  # never the scratch baselines
    assert counts["finetune"] + counts.get("segment", 0) == EVALUATED  # the pretrained init, on each evaluation dataset


def test_editing_the_corpus_data_never_touches_the_other_datasets_data_or_baselines(completed):
    change = {"datasets": {"tiny": {"synthetic": {"lesion_contrast": 0.25}}}}
    counts, outputs, out = dry_run(completed, change)
    other = under(outputs, "tiny_b")
    assert not [p for p in other if re.search(r"/(download|prepared|split)/", p)], other
    assert not [p for p in other if "/finetune/scratch_" in p], other
    assert counts["download"] == counts["prepare"] == 1 and counts["pretrain"] == 1
    # On the corpus every init reruns (its data changed); elsewhere only the pretrained one.
    assert counts["finetune"] + counts.get("segment", 0) == INITS + EVALUATED - 1, out[-3000:]


def test_results_page_of_an_experiment_has_the_summary_then_each_dataset(completed, capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("results_table", REPO / "benchmarks" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    workdir, _ = completed
    assert module.main([str(workdir / "results" / "tiny_transfer"), "--wall-time", "1 s"]) == 0
    page = capsys.readouterr().out
    summary, first, second = (page.index(h) for h in ("## Across datasets", "\n## tiny\n", "\n## tiny_b\n"))
    assert summary < first < second and "### Verdict: does pretraining help" in page
