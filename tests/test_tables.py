"""Tables, figures and the HTML report from a handful of fake fine-tuning runs."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from report_data import N_TEST, RUNS, fake_run

from cxrmim.analysis.figures import FIGURES, write_figures
from cxrmim.analysis.hyperparameters import (
    NOT_IN_TABLE_1,
    hyperparameter_table,
    model_text,
)
from cxrmim.analysis.report import write_report
from cxrmim.analysis.runs import infer_main_mask_ratio, load_runs, main_runs
from cxrmim.analysis.significance import comparisons
from cxrmim.analysis.tables import write_tables
from cxrmim.analysis.verdict import oriented, verdict_pairs

REPO = Path(__file__).resolve().parents[1]
# Pretraining history columns of the last epoch per run; mae's history predates them.
PRETRAIN_LAST_EPOCH = {
    "rgmim_r0.75_vit-t_s0": {"fallback_fraction": 0.10, "visible_lung_fraction": 0.25},
    "rgmim_r0.75_vit-t_s1": {"fallback_fraction": 0.20, "visible_lung_fraction": 0.35},
    "mae_r0.75_vit-t_s0": {},
    "rgmim_r0.5_vit-t_s0": {"fallback_fraction": 0.0, "visible_lung_fraction": 0.5},
}


def fake_history(root: Path, run: str, last_epoch: dict[str, float]) -> Path:
    """A pretraining history.csv of two epochs whose last row carries `last_epoch`."""
    path = root / run / "history.csv"
    path.parent.mkdir(parents=True)
    first = dict.fromkeys(last_epoch, 0.9)  # earlier epochs must not leak into the table
    history = pd.DataFrame([{"epoch": 1, "loss": 1.0, **first}, {"epoch": 2, "loss": 0.5, **last_epoch}])
    history.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def metrics_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("finetune")
    return [
        fake_run(root, *identity, *key, accuracy) for identity, cells in RUNS.items() for key, accuracy in cells.items()
    ]


@pytest.fixture(scope="module")
def history_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("pretrain")
    return [fake_history(root, run, last) for run, last in PRETRAIN_LAST_EPOCH.items()]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "workflow_config.yaml").read_text())


def used_sections(config: dict) -> dict:
    """The config sections the tables rule passes."""
    return {
        k: config[k]
        for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare", "label_fractions", "split")
    }


@pytest.fixture(scope="module")
def tables_dir(
    metrics_paths: list[Path], history_paths: list[Path], config: dict, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("tables")
    write_tables(metrics_paths, used_sections(config), out, {"bootstrap_samples": 200, "seed": 0}, history_paths)
    return out


def read_table_1(tables_dir: Path) -> pd.DataFrame:
    """hyperparameters.csv as strings, indexed by hyperparameter."""
    return pd.read_csv(tables_dir / "hyperparameters.csv", dtype=str, keep_default_na=False).set_index("Hyperparameter")


def markdown_rows(text: str, heading: str) -> list[list[str]]:
    """Cells of the first pipe table after `heading`."""
    lines = text[text.index(heading) :].splitlines()
    table = []
    for line in lines[1:]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
        elif table:
            break
    return table


def test_label_fraction_table_has_fractions_as_columns(tables_dir: Path) -> None:
    text = (tables_dir / "label_fractions.md").read_text()
    rows = markdown_rows(text, "Test accuracy by label fraction")
    assert rows[0] == ["Method", "Architecture", "1%", "100%", "n"]
    body = {(row[0], row[1]): row for row in rows[2:]}
    assert list(body) == [
        ("RGMIM", "ViT"),
        ("RGMIM-lung", "ViT"),
        ("MAE", "ViT"),
        ("From Scratch", "ViT"),
        ("From Scratch", "ResNet-50"),
    ]
    # One row per init family: its 2 pretraining seeds x 2 subset seeds are 4 runs in one cell.
    rgmim_1pct = [0.60, 0.70, 0.65, 0.75]
    assert body[("RGMIM", "ViT")][2] == f"{np.mean(rgmim_1pct):.3f} ± {np.std(rgmim_1pct, ddof=1):.3f}"
    assert body[("RGMIM", "ViT")][4] == "4"
    assert body[("From Scratch", "ViT")][4] == "2"
    assert body[("From Scratch", "ResNet-50")][2] == "0.300"  # one run: no ±
    assert "pretraining seed" in text and "Test macro AUC by label fraction" in text
    long = pd.read_csv(tables_dir / "label_fractions.csv")
    assert len(long) == sum(len(cells) for cells in RUNS.values())
    assert {
        "method",
        "architecture",
        "init",
        "run_init",
        "fraction",
        "pretrain_seed",
        "seed",
        "test_accuracy",
        "test_f1_macro",
        "test_auc_macro",
        "val_accuracy",
    } <= set(long.columns)


def test_mask_ratio_table_has_pretraining_shares(tables_dir: Path) -> None:
    table = pd.read_csv(tables_dir / "mask_ratio.csv", dtype=str)
    rgmim = table[table["Method"] == "RGMIM"].set_index("Masking ratio")
    assert rgmim.loc["0.50", "Accuracy"] == f"0.825 ± {np.std([0.8, 0.85], ddof=1):.3f}"
    assert rgmim.loc["0.75", "n"] == "4"
    assert rgmim.loc["0.75", "Fallback images"] == "15.0%"  # mean of the two seeds' last epochs
    assert rgmim.loc["0.75", "Visible lung patches"] == "30.0%"
    assert rgmim.loc["0.50", "Fallback images"] == "0.0%"
    mae = table[table["Method"] == "MAE"].iloc[0]
    assert mae["Fallback images"] == "–" and mae["Visible lung patches"] == "–"  # history without the columns
    lung = table[table["Method"] == "RGMIM-lung"].iloc[0]
    assert lung["Fallback images"] == "–"  # no history given for it
    assert list(table["Method"]) == ["RGMIM", "RGMIM", "RGMIM-lung", "MAE"]
    assert set(table["Label fraction"]) == {"100%"}
    text = (tables_dir / "mask_ratio.md").read_text()
    assert "| Method | Architecture | Masking ratio |" in text and "outside the lung" in text


def test_hyperparameters_come_from_config(tables_dir: Path, config: dict) -> None:
    table = read_table_1(tables_dir)
    assert table.loc["Epochs", "Pretraining"] == str(config["pretrain"]["epochs"])
    assert table.loc["Epochs", "Fine-tuning"] == str(config["finetune"]["epochs"])
    assert table.loc["Masking ratio σ", "Pretraining"] == str(config["pretrain"]["mask_ratio"])
    assert table.loc["Patch size T", "Pretraining"] == str(config["patch_validity"]["patch_size"])
    assert table.loc["Minimum optimiser steps", "Fine-tuning"] == str(config["finetune"]["min_steps"])
    norm_pix = table.loc["Per-patch normalised target (norm_pix_loss)", "Pretraining"]
    assert norm_pix == str(config["pretrain"]["norm_pix_loss"])


def test_table_1_shows_the_models_built(tables_dir: Path) -> None:
    table = read_table_1(tables_dir)
    vit = "vit_tiny_patch16_224: ViT, 12 blocks, width 192, 5.52 M parameters"
    assert table.loc["Model built (ViT)", "Fine-tuning"] == vit
    assert table.loc["Model built (ViT)", "Pretraining"] == vit  # the ViT was pretrained too
    assert table.loc["Model built (ResNet-50)", "Fine-tuning"] == "–"  # its metrics.json has no `model` entry
    assert table.loc["Model built (ResNet-50)", "Pretraining"] == "–"
    assert table.loc["Input normalisation (grey)", "Fine-tuning"] == "mean 0.5, std 0.25"


def test_table_1_describes_a_cnn_by_its_stages() -> None:
    """A CNN has no ViT depth: Table 1 gives its stages (blocks, widths) and parameters, older runs what they hold."""
    cnn = {
        "model_timm_name": "resnet10t",
        "model_depth": None,
        "model_width": 256,
        "model_n_parameters": 1_231_000,
        "model_stage_blocks": [1, 1, 1, 1],
        "model_stage_widths": [32, 64, 128, 256],
    }
    runs = pd.DataFrame([cnn, cnn | {"model_stage_blocks": None, "model_stage_widths": None}])
    assert model_text(runs) == (
        "resnet10t: CNN, 4 stages of 1-1-1-1 blocks, widths 32-64-128-256, 1.23 M parameters; "
        "resnet10t: CNN, final width 256, 1.23 M parameters"
    )


def perturbed(value):
    """Another value of the same kind, for every leaf of a config entry."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 3 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [perturbed(v) for v in value] or [1]
    if isinstance(value, dict):
        return {k: perturbed(v) for k, v in value.items()}
    return 1  # None: unset


@pytest.mark.parametrize("section", ["pretrain", "finetune"])
def test_every_recipe_key_that_shapes_results_is_in_table_1(config: dict, section: str) -> None:
    """Changing any key of the schema's pretrain/finetune sections changes Table 1, unless it is declared as
    not shaping results (NOT_IN_TABLE_1): a new recipe key cannot be left out silently."""
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    keys = set(schema["properties"][section]["properties"]) - NOT_IN_TABLE_1[section]
    reference = hyperparameter_table(used_sections(config))
    for key in sorted(keys):
        changed = copy.deepcopy(used_sections(config))
        changed[section][key] = perturbed(changed[section].get(key))
        assert not hyperparameter_table(changed).equals(reference), f"{section}.{key} is not in Table 1"


def test_table_1_lists_per_budget_seeds(config: dict) -> None:
    """A budget with its own subset seeds (label_fractions.seeds_by_budget) shows them in Table 1's seeds row."""
    changed = copy.deepcopy(used_sections(config))
    changed["label_fractions"] = {"fractions": [0.01, 1.0], "seeds": [0, 1], "seeds_by_budget": {"frac0.01": [0, 1, 2]}}
    table = hyperparameter_table(changed).set_index("Hyperparameter")
    assert table.loc["Seeds", "Fine-tuning"] == "0, 1; frac0.01: 0, 1, 2"
    changed["label_fractions"]["fractions"] = [0.1, 1.0]  # an entry for a budget not run is not shown
    assert hyperparameter_table(changed).set_index("Hyperparameter").loc["Seeds", "Fine-tuning"] == "0, 1"


def test_significance_is_a_hierarchical_bootstrap(tables_dir: Path) -> None:
    table = pd.read_csv(tables_dir / "significance.csv")
    # Per fraction: RGMIM vs RGMIM-lung, MAE, scratch; RGMIM-lung vs MAE, scratch; MAE vs scratch (all ViT).
    assert len(table) == 2 * 6
    assert set(table["init_b"]) == {"rgmim-lung_r0.75_vit-t", "mae_r0.75_vit-t", "scratch_vit-t"}
    row = table[
        (table["fraction"] == 0.01) & (table["init_a"] == "rgmim_r0.75_vit-t") & (table["init_b"] == "scratch_vit-t")
    ].iloc[0]
    assert row["difference"] == pytest.approx(np.mean([0.60, 0.70, 0.65, 0.75]) - np.mean([0.35, 0.40]))
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert row["n_runs_a"] == 4 and row["n_runs_b"] == 2 and row["n_images"] == N_TEST
    text = (tables_dir / "significance.md").read_text()
    assert "hierarchical bootstrap" in text and "resamples the runs" in text and "Difference (95% CI)" in text


def test_verdict_judges_each_pretrained_init_against_its_baselines(tables_dir: Path) -> None:
    verdict = pd.read_csv(tables_dir / "verdict.csv")
    at_1 = verdict[verdict["fraction"] == 0.01].set_index(["init", "against"])
    # Every pretrained ViT against scratch ViT; RGMIM and RGMIM-lung against MAE; the ResNet has no pretrained init.
    assert set(at_1.index) == {
        ("rgmim_r0.75_vit-t", "scratch"),
        ("rgmim-lung_r0.75_vit-t", "scratch"),
        ("mae_r0.75_vit-t", "scratch"),
        ("rgmim_r0.75_vit-t", "MAE"),
        ("rgmim-lung_r0.75_vit-t", "MAE"),
    }
    significance = pd.read_csv(tables_dir / "significance.csv").set_index(["fraction", "init_a", "init_b"])
    row = at_1.loc[("rgmim-lung_r0.75_vit-t", "MAE")]
    assert row["difference"] == pytest.approx(0.55 - np.mean([0.50, 0.55]))
    stored = significance.loc[(0.01, "rgmim-lung_r0.75_vit-t", "mae_r0.75_vit-t")]
    assert (row["ci_low"], row["ci_high"], row["p_value"]) == (stored["ci_low"], stored["ci_high"], stored["p_value"])
    # A pair the bootstrap stored the other way round (MAE before MRM) is turned to init − reference.
    flipped = oriented(significance.reset_index().assign(init_a="mae", init_b="mrm"), "mrm", "mae")
    first = significance.iloc[0]
    assert (flipped["difference"], flipped["ci_low"], flipped["ci_high"]) == (
        -first["difference"],
        -first["ci_high"],
        -first["ci_low"],
    )
    assert (flipped["accuracy"], flipped["n_runs"]) == (first["accuracy_b"], first["n_runs_b"])
    assert at_1.loc[("rgmim_r0.75_vit-t", "scratch"), "verdict"] == "better"
    words = {"better", "worse", "cannot tell at this size"}
    assert set(verdict["verdict"]) <= words
    for _, r in verdict.iterrows():  # the word follows the interval
        assert r["verdict"] == (
            "better" if r["ci_low"] > 0 else "worse" if r["ci_high"] < 0 else "cannot tell at this size"
        )
    intervals = pd.read_csv(tables_dir / "accuracy_intervals.csv").set_index(["fraction", "init"])
    rgmim = intervals.loc[(0.01, "rgmim_r0.75_vit-t")]
    assert rgmim["accuracy"] == pytest.approx(np.mean([0.60, 0.70, 0.65, 0.75]))
    assert rgmim["ci_low"] < rgmim["accuracy"] < rgmim["ci_high"] and rgmim["n_runs"] == 4
    assert rgmim["majority_share"] == pytest.approx(7 / 20)  # 20 test images over 3 classes: 7, 7, 6
    text = (tables_dir / "verdict.md").read_text()
    assert text.startswith("# Verdict") and "## 1% labels: 10 labelled images, 20 test images" in text


def test_imagenet_transfer_is_judged_against_scratch() -> None:
    """An init pretrained elsewhere (no pretraining seed of ours) is compared with, and judged against, scratch."""
    inits = pd.DataFrame(
        {
            "init": ["imagenet_resnet50", "scratch_resnet50", "scratch_vit"],
            "method": ["Transfer", "From Scratch", "From Scratch"],
            "architecture": ["ResNet-50", "ResNet-50", "ViT"],
            "pretrain_seed": [None, None, None],
            "mask_ratio": [None, None, None],
        }
    )
    assert comparisons(inits) == [("imagenet_resnet50", "scratch_resnet50")]
    assert verdict_pairs(inits) == [("imagenet_resnet50", "scratch_resnet50", "scratch")]


def test_main_mask_ratio_is_inferred(metrics_paths: list[Path]) -> None:
    runs = load_runs(metrics_paths)
    assert infer_main_mask_ratio(runs) == 0.75
    assert "rgmim_r0.5_vit-t" not in set(main_runs(runs, None)["init"])
    assert set(runs.loc[runs["init"] == "rgmim_r0.75_vit-t", "pretrain_seed"]) == {0, 1}


def test_figures_and_self_contained_report(metrics_paths: list[Path], tables_dir: Path, tmp_path: Path) -> None:
    figures = write_figures(metrics_paths, {"dpi": 40, "style": "whitegrid"}, tmp_path / "figures", mask_ratio=0.75)
    assert [p.stem for p in figures] == list(FIGURES)
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in figures)
    report = write_report(
        tmp_path / "report.html",
        tables=sorted(tables_dir.glob("*.md")),
        figures=figures,
        config_source=REPO / "workflow_config.yaml",
        title="phantoms",
        captions_dir=REPO / "docs" / "captions",
    )
    page = report.read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "<script" not in page
    assert "<th>1%</th>" in page and "<table>" in page
    assert "bootstrap_samples: 1000" in page  # the config file verbatim


def test_scripts_run(metrics_paths: list[Path], history_paths: list[Path], tmp_path: Path) -> None:
    def script(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    paths = [str(p) for p in metrics_paths]
    config = (REPO / "workflow_config.yaml").read_text()
    as_json = json.dumps(yaml.safe_load(config))  # the rules pass the config as inline JSON
    script("tables").main(
        [
            "--metrics",
            *paths,
            "--config",
            as_json,
            "--settings",
            '{"bootstrap_samples": 50}',
            "--pretrain-histories",
            *map(str, history_paths),
            "--out-dir",
            str(tmp_path / "tables"),
            "--log",
            str(tmp_path / "tables.log"),
        ]
    )
    # No --mask-ratio: the ratio fine-tuned at every fraction (0.75) is inferred.
    script("figures").main(["--metrics", *paths, "--settings", '{"dpi": 30}', "--out-dir", str(tmp_path / "figures")])
    script("report").main(
        [
            "--tables-dir",
            str(tmp_path / "tables"),
            "--figures",
            *map(str, sorted((tmp_path / "figures").glob("*.png"))),
            "--config",
            as_json,
            "--out",
            str(tmp_path / "report.html"),
        ]
    )
    page = (tmp_path / "report.html").read_text()
    assert page.index("Label fractions") < page.index("Hyperparameters")
    assert "bootstrap_samples: 1000" in page  # inline JSON config rendered as YAML
    assert "Difference (95% CI)" in (tmp_path / "tables" / "significance.md").read_text()
