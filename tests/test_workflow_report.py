"""The workflow with the report-aware methods (MRM, MedIM) on the tiny config: tokenizer, pretraining,
fine-tuning from their encoders, and the tables, figures and report that include them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_CONFIG, snakemake

pytestmark = pytest.mark.slow

OVERRIDE = {
    "pretrain": {"methods": ["mrm", "medim"], "mask_ratios": [],
                 "mrm": {"text": {"embed_dim": 16, "depth": 1, "num_heads": 2}},
                 "medim": {"text": {"embed_dim": 16, "depth": 1, "num_heads": 2}}},
    "text": {"vocab_size": 150, "max_length": 24},
    "finetune": {"inits": ["mrm", "medim", "scratch_vit-tiny"]},
}  # fmt: skip
RUNS = ("mrm_r0.75_vit-tiny_s0", "medim_r0.75_vit-tiny_s0")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the whole workflow completed with MRM and MedIM as the pretraining methods."""
    workdir = tmp_path_factory.mktemp("report_methods")
    override = workdir / "report_methods.yaml"
    override.write_text(yaml.safe_dump(OVERRIDE))
    snakemake(workdir, configs=(TINY_CONFIG, override))
    return workdir / "results" / "tiny"


def test_report_methods_run_through_the_workflow(report_run: Path):
    assert (report_run / "text" / "tokenizer.json").stat().st_size > 100
    assert (report_run / "prepared" / "reports.jsonl").stat().st_size > 100
    for run in RUNS:
        for name in ("encoder.safetensors", "autoencoder.safetensors", "history.csv"):
            assert (report_run / "pretrain" / run / name).exists(), (run, name)
        for fraction in ("0.1", "1"):
            assert (report_run / "finetune" / run / f"frac{fraction}_seed0" / "metrics.json").exists()
    history = pd.read_csv(report_run / "pretrain" / RUNS[0] / "history.csv")
    assert {"image_loss", "report_loss", "word_accuracy"} <= set(history.columns)


def test_tables_and_report_show_the_report_methods(report_run: Path):
    table = pd.read_csv(report_run / "tables" / "label_fractions.csv")
    assert {"MRM", "MedIM", "From Scratch"} <= set(table["method"])
    html = (report_run / "report.html").read_text()
    assert "MRM" in html and "MedIM" in html
    for figure in ("mrm_reconstructions", "medim_masks"):
        assert (report_run / "figures" / f"{figure}.png").stat().st_size > 2000, figure
        assert f'alt="{figure}"' in html
