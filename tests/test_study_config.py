"""Task configs out of the box: the MAE-vs-ResNet study on MIMIC-CXR-JPG by changing only its dataset section, and a
multi-label run on multi-finding phantoms through every stage."""

from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import MULTILABEL_PHANTOMS, PHANTOM_FINDINGS, REPO, TINY_CONFIG, snakemake
from test_public import OFFICIAL_SPLIT, mimic_tree

pytestmark = pytest.mark.slow

STUDY = REPO / "configs" / "mae_vs_resnet.yaml"


def commented_mimic_dataset(config_text: str) -> dict:
    """The dataset section the study config ships commented out for MIMIC-CXR-JPG."""
    lines = config_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# MIMIC-CXR-JPG")) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append(line.removeprefix("  # "))
    return yaml.safe_load("\n".join(block))


def test_study_config_runs_on_mimic_by_swapping_the_dataset_section(tmp_path: Path):
    root = mimic_tree(tmp_path / "mimic", n=48)
    config = yaml.safe_load(STUDY.read_text())
    config["dataset"] = {**commented_mimic_dataset(STUDY.read_text()), "source": str(root)}
    assert config["dataset"]["kind"] == "mimic_cxr_jpg"
    study = tmp_path / "mae_vs_resnet_mimic.yaml"
    study.write_text(yaml.safe_dump(config))
    results = tmp_path / "results" / config["dataset"]["name"]

    plan = snakemake(tmp_path, "-n", configs=(study,)).stdout
    for run in ("mae_r0.25_vit-cpu_s0", "mae_r0.5_vit-cpu_s0", "mae_r0.75_vit-cpu_s0", "scratch_resnet18/n1000"):
        assert run in plan
    assert "tables/study.md" in plan and "report.html" in plan

    snakemake(tmp_path, str((results / "split" / "split.csv").relative_to(tmp_path)), configs=(study,))
    split = pd.read_csv(results / "split" / "split.csv", keep_default_na=False)
    manifest = pd.read_csv(results / "prepared" / "manifest.csv", keep_default_na=False)
    official_test = set(manifest.loc[manifest["official"] == "test", "id"])
    assert len(official_test) == sum(OFFICIAL_SPLIT[i % len(OFFICIAL_SPLIT)] == "test" for i in range(48))
    assert set(split.loc[split["part"] == "test", "id"]) == official_test
    assert set(split["label"]) == {"Finding", "No Finding"}


def test_multilabel_phantoms_run_every_stage_in_both_fine_tuning_modes(tmp_path: Path):
    findings = PHANTOM_FINDINGS
    override = tmp_path / "multilabel.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "dataset": {"name": "tinyml", **MULTILABEL_PHANTOMS},
                "pretrain": {"methods": ["mae"]},
                "finetune": {"inits": ["mae", "scratch_resnet18"], "modes": ["full", "probe"]},
            }
        )
    )
    snakemake(tmp_path, configs=(TINY_CONFIG, override))
    results = tmp_path / "results" / "tinyml"
    study = pd.read_csv(results / "tables" / "study.csv")
    assert {"Mean AUC", *(f"AUC {f}" for f in findings)} <= set(study.columns)
    per_finding = study[[f"AUC {f}" for f in findings]].mean(axis=1)
    assert (study["Mean AUC"] - per_finding).abs().max() < 1e-3 and study["Mean AUC"].between(0, 1).all()
    # Per mode, 10%: MAE (the paper ratio) and scratch; 100%: both MAE ratios and scratch.
    assert study.groupby("Fine-tuning").size().to_dict() == {"Full network": 5, "Linear probe": 5}
    assert "Test mean AUC (multilabel)" in (results / "tables" / "label_fractions.md").read_text()
    assert "Mean AUC" in (results / "report.html").read_text()
