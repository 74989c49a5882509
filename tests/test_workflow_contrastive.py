"""The tiny DAG with SimSiam (tests/configs/contrastive.yaml): pretraining, fine-tuning, tables, figures, report."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_CONFIG, snakemake

pytestmark = pytest.mark.slow

CONTRASTIVE_CONFIG = REPO / "tests" / "configs" / "contrastive.yaml"
RUN = "simsiam_resnet18_s0"


@pytest.fixture(scope="module")
def contrastive_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where `snakemake` (rule all) completed on the tiny config plus SimSiam."""
    workdir = tmp_path_factory.mktemp("contrastive")
    snakemake(workdir, configs=(TINY_CONFIG, CONTRASTIVE_CONFIG))
    return workdir


def test_simsiam_is_pretrained_fine_tuned_and_reported(contrastive_run: Path) -> None:
    results = contrastive_run / "results" / "tiny"
    run = results / "pretrain" / RUN
    assert (run / "encoder.safetensors").exists() and not (run / "checkpoint.pt").exists()
    assert not (run / "autoencoder.safetensors").exists()
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and (history["embedding_std_ratio"] > 0).all()
    for fraction in ("0.1", "1"):
        assert (results / "finetune" / RUN / f"frac{fraction}_seed0" / "metrics.json").exists()
    assert (results / "figures" / "contrastive_pretraining.png").stat().st_size > 2000
    assert (results / "logs" / "pretrain" / f"{RUN}.log").exists()
    assert (results / "benchmarks" / "pretrain" / f"{RUN}.tsv").exists()


def test_tables_have_simsiam_rows_in_paper_order(contrastive_run: Path) -> None:
    tables = contrastive_run / "results" / "tiny" / "tables"
    long = pd.read_csv(tables / "label_fractions.csv")
    simsiam = long[long["method"] == "SimSiam"]
    assert len(simsiam) == 2 and set(simsiam["architecture"]) == {"resnet18"}
    assert simsiam["mask_ratio"].isna().all() and (simsiam["pretrain_seed"] == 0).all()
    assert simsiam["init"].unique().tolist() == ["simsiam_resnet18"]
    # Paper order: RGMIM, MAE, BYOL, SimSiam, Transfer, From Scratch.
    assert long["method"].drop_duplicates().tolist() == ["RGMIM", "SimSiam", "From Scratch"]
    markdown = (tables / "label_fractions.md").read_text()
    assert "| SimSiam | resnet18 |" in markdown
    significance = pd.read_csv(tables / "significance.csv")
    assert "RGMIM (ViT) vs SimSiam (resnet18)" in set(significance["comparison"])
    ratios = pd.read_csv(tables / "mask_ratio.csv")
    assert "SimSiam" not in set(ratios["Method"])  # no masking ratio: not part of Table 3
    html = (contrastive_run / "results" / "tiny" / "report.html").read_text()
    assert "SimSiam" in html and "collapse" in html


def test_finetune_init_without_its_contrastive_method_is_a_clear_error(tmp_path: Path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(yaml.safe_dump({"finetune": {"inits": ["rgmim", "byol"]}}))
    result = snakemake(tmp_path, "-n", configs=(TINY_CONFIG, CONTRASTIVE_CONFIG, override), check=False)
    assert result.returncode != 0
    assert "contrastive.methods" in result.stdout + result.stderr
