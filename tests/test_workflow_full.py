"""The whole default DAG on the tiny config: every table, figure and the report exist and make sense."""

import json
import re
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import snakemake

pytestmark = pytest.mark.slow

TABLES = ["verdict", "label_fractions", "mask_ratio", "hyperparameters", "significance", "study"]
FIGURES = [
    "valid_patches",
    "masking_illustration",
    "reconstructions",
    "pretrain_loss",
    "accuracy_by_budget",
    "significance_heatmap",
    "accuracy_vs_fraction",
    "auc_vs_fraction",
    "accuracy_vs_epoch",
    "accuracy_vs_mask_ratio",
    "confusion_matrices",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `snakemake` (rule all) completed on the tiny config."""
    workdir = tmp_path_factory.mktemp("full")
    snakemake(workdir)
    return workdir


def test_every_output_exists(tiny_run: Path):
    results = tiny_run / "results" / "tiny"
    for table in TABLES:
        for ext in ("csv", "md"):
            assert (results / "tables" / f"{table}.{ext}").stat().st_size > 50, table
    for figure in FIGURES:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 2000, figure
    for run in ("rgmim_r0.75_vit-tiny_s0", "mae_r0.75_vit-tiny_s0", "rgmim_r0.5_vit-tiny_s0", "mae_r0.5_vit-tiny_s0"):
        for name in ("encoder.safetensors", "autoencoder.safetensors", "history.csv"):
            assert (results / "pretrain" / run / name).exists()
        assert not (results / "pretrain" / run / "checkpoint.pt").exists()
    finetunes = sorted(
        p.parent.relative_to(results / "finetune").as_posix() for p in (results / "finetune").glob("*/*/metrics.json")
    )
    expected = {
        f"{i}/frac{f}_seed0"
        for i in ("rgmim_r0.75_vit-tiny_s0", "mae_r0.75_vit-tiny_s0", "scratch_vit-tiny", "scratch_resnet18")
        for f in ("0.1", "1")
    }
    expected |= {"rgmim_r0.5_vit-tiny_s0/frac1_seed0", "mae_r0.5_vit-tiny_s0/frac1_seed0"}
    assert set(finetunes) == expected


def test_tables_follow_the_paper_layout(tiny_run: Path):
    tables = tiny_run / "results" / "tiny" / "tables"
    long = pd.read_csv(tables / "label_fractions.csv")
    assert len(long) == 10 and {"method", "architecture", "fraction", "seed", "test_accuracy"} <= set(long.columns)
    assert set(long["method"]) == {"RGMIM", "MAE", "From Scratch"}
    markdown = (tables / "label_fractions.md").read_text()
    assert re.search(r"\| Method \| Architecture \| 10% \| 100% \|", markdown)
    ratios = pd.read_csv(tables / "mask_ratio.csv")
    assert {0.5, 0.75} <= set(ratios["Masking ratio"].round(2)) and set(ratios["Method"]) == {"RGMIM", "MAE"}
    hyper = (tables / "hyperparameters.md").read_text()
    assert "Masking ratio" in hyper and "0.75" in hyper


def test_metrics_are_selected_on_validation(tiny_run: Path):
    for path in (tiny_run / "results" / "tiny" / "finetune").glob("*/*/metrics.json"):
        metrics = json.loads(path.read_text())
        history = pd.read_csv(path.parent / "history.csv")
        best = history.loc[history["epoch"] == metrics["best_epoch"]].iloc[0]
        assert best["val_accuracy"] == pytest.approx(history["val_accuracy"].max())
        assert metrics["test"]["accuracy"] == pytest.approx(best["test_accuracy"])
        assert 0.0 <= metrics["test"]["auc_macro"] <= 1.0


def test_report_is_self_contained(tiny_run: Path):
    html = (tiny_run / "results" / "tiny" / "report.html").read_text()
    assert html.count("data:image/png;base64") >= len(FIGURES)
    assert not re.search(r"""src=["']https?://""", html)
    assert "Label fractions" in html and "patch_size" in html
    assert html.index("<h2>Verdict") < html.index('alt="accuracy_by_budget"') < html.index("<h2>Tables</h2>")


def test_snakemake_report_with_captions(tiny_run: Path):
    snakemake(tiny_run, "--report", "report.zip")
    with zipfile.ZipFile(tiny_run / "report.zip") as archive:
        names = archive.namelist()
        html = archive.read("report/report.html").decode()
    assert any(name.endswith("accuracy_vs_fraction.png") for name in names)
    for table in TABLES:
        assert any(name.endswith(f"{table}.csv") for name in names), f"{table}.csv missing from the report"
    assert "pretrains a ViT encoder on chest X-rays" in html  # the workflow description (docs/captions/workflow.rst)


def test_rerun_has_nothing_to_do(tiny_run: Path):
    assert "Nothing to be done" in snakemake(tiny_run, "-n").stdout
