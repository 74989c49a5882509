"""Tables, figures and the HTML report from a handful of fake fine-tuning runs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrmim.analysis.figures import FIGURES, write_figures
from cxrmim.analysis.report import write_report
from cxrmim.analysis.runs import infer_main_mask_ratio, load_runs, main_runs
from cxrmim.analysis.tables import write_tables
from cxrmim.evaluation import classification_metrics

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["COVID-19", "Normal", "Viral_Pneumonia"]
N_TEST = 20
# (init, method, architecture, mask ratio) -> test accuracy per (fraction, seed)
RUNS = {
    ("rgmim_r0.75_vit", "RGMIM", "ViT", 0.75): {(0.01, 0): 0.60, (0.01, 1): 0.70, (1.0, 0): 0.90, (1.0, 1): 0.95},
    ("mae_r0.75_vit", "MAE", "ViT", 0.75): {(0.01, 0): 0.50, (0.01, 1): 0.55, (1.0, 0): 0.85, (1.0, 1): 0.90},
    ("scratch_vit", "From Scratch", "ViT", None): {(0.01, 0): 0.35, (0.01, 1): 0.40, (1.0, 0): 0.60, (1.0, 1): 0.65},
    ("scratch_resnet50", "From Scratch", "ResNet-50", None): {(0.01, 0): 0.30, (1.0, 0): 0.55},
    ("rgmim_r0.5_vit", "RGMIM", "ViT", 0.5): {(1.0, 0): 0.80, (1.0, 1): 0.85},
}


def fake_run(root: Path, init: str, method: str, architecture: str, ratio: float | None, fraction: float,
             seed: int, accuracy: float) -> Path:
    """A run directory whose predictions have exactly `accuracy` and whose metrics agree with them."""
    run_dir = root / init / f"frac{fraction}_seed{seed}"
    run_dir.mkdir(parents=True)
    labels = np.arange(N_TEST) % len(CLASSES)
    n_correct = round(accuracy * N_TEST)
    preds = np.where(np.arange(N_TEST) < n_correct, labels, (labels + 1) % len(CLASSES))
    probs = np.full((N_TEST, len(CLASSES)), 0.1)
    probs[np.arange(N_TEST), preds] = 0.8
    predictions = pd.DataFrame({"index": 100 + np.arange(N_TEST), "id": [f"img{i}" for i in range(N_TEST)],
                                "label": [CLASSES[i] for i in labels], "pred": [CLASSES[i] for i in preds]})
    for i, name in enumerate(CLASSES):
        predictions[f"prob_{name}"] = probs[:, i]
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    test = classification_metrics(labels, probs, CLASSES)
    pd.DataFrame({"epoch": [1, 2, 3], "lr": [1e-3, 5e-4, 0.0], "train_loss": [1.0, 0.8, 0.7],
                  "val_accuracy": [0.5, accuracy, accuracy], "test_accuracy": [0.4, accuracy, accuracy - 0.05]}
                 ).to_csv(run_dir / "history.csv", index=False)
    metrics = {"init": init, "method": method, "architecture": architecture, "mask_ratio": ratio,
               "fraction": fraction, "seed": seed, "n_train": int(fraction * 1000), "classes": CLASSES,
               "best_epoch": 2, "val": {**test, "auc_macro": None}, "test": test}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "metrics.json"


@pytest.fixture(scope="module")
def metrics_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("finetune")
    return [fake_run(root, *identity, fraction, seed, accuracy)
            for identity, cells in RUNS.items() for (fraction, seed), accuracy in cells.items()]


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((REPO / "workflow_config.yaml").read_text())


@pytest.fixture(scope="module")
def tables_dir(metrics_paths: list[Path], config: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    used = {k: config[k] for k in ("encoders", "pretrain", "finetune", "patch_validity", "prepare")}  # as the rule passes
    write_tables(metrics_paths, used, out, {"bootstrap_samples": 200, "seed": 0})
    return out


def markdown_rows(text: str, heading: str) -> list[list[str]]:
    """Cells of the first pipe table after `heading`."""
    lines = text[text.index(heading):].splitlines()
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
    assert list(body) == [("RGMIM", "ViT"), ("MAE", "ViT"), ("From Scratch", "ViT"), ("From Scratch", "ResNet-50")]
    assert body[("RGMIM", "ViT")][2] == f"0.650 ± {np.std([0.6, 0.7], ddof=1):.3f}"  # sample std over seeds
    assert body[("From Scratch", "ResNet-50")][2] == "0.300"  # one seed: no ±
    assert "Test macro F1 by label fraction" in text and "Test macro AUC by label fraction" in text
    long = pd.read_csv(tables_dir / "label_fractions.csv")
    assert len(long) == sum(len(cells) for cells in RUNS.values())
    assert {"method", "architecture", "init", "fraction", "seed", "test_accuracy", "test_f1_macro",
            "test_auc_macro", "val_accuracy"} <= set(long.columns)


def test_mask_ratio_table(tables_dir: Path) -> None:
    table = pd.read_csv(tables_dir / "mask_ratio.csv")
    rgmim = table[table["Method"] == "RGMIM"].set_index("Masking ratio")["Accuracy"]
    assert rgmim[0.5] == f"0.825 ± {np.std([0.8, 0.85], ddof=1):.3f}"
    assert set(table["Label fraction"]) == {"100%"}
    assert "| Method | Architecture | Masking ratio |" in (tables_dir / "mask_ratio.md").read_text()


def test_hyperparameters_come_from_config(tables_dir: Path, config: dict) -> None:
    table = pd.read_csv(tables_dir / "hyperparameters.csv", dtype=str).set_index("Hyperparameter")
    assert table.loc["Epochs", "Pretraining"] == str(config["pretrain"]["epochs"])
    assert table.loc["Epochs", "Fine-tuning"] == str(config["finetune"]["epochs"])
    assert table.loc["Masking ratio σ", "Pretraining"] == str(config["pretrain"]["mask_ratio"])
    assert table.loc["Patch size T", "Pretraining"] == str(config["patch_validity"]["patch_size"])


def test_significance_pairs_rgmim_with_mae_and_scratch(tables_dir: Path) -> None:
    table = pd.read_csv(tables_dir / "significance.csv")
    assert len(table) == 4  # 2 fractions x 2 comparisons
    row = table[(table["fraction"] == 0.01) & (table["init_b"] == "scratch_vit")].iloc[0]
    assert row["difference"] == pytest.approx(0.65 - 0.375)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert row["n_seeds"] == 2 and row["n_images"] == N_TEST
    assert "Difference (95% CI)" in (tables_dir / "significance.md").read_text()


def test_main_mask_ratio_is_inferred(metrics_paths: list[Path]) -> None:
    runs = load_runs(metrics_paths)
    assert infer_main_mask_ratio(runs) == 0.75
    assert "rgmim_r0.5_vit" not in set(main_runs(runs, None)["init"])


def test_figures_and_self_contained_report(metrics_paths: list[Path], tables_dir: Path, tmp_path: Path) -> None:
    figures = write_figures(metrics_paths, {"dpi": 40, "style": "whitegrid"}, tmp_path / "figures", mask_ratio=0.75)
    assert [p.stem for p in figures] == list(FIGURES)
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in figures)
    report = write_report(
        tmp_path / "report.html", tables=sorted(tables_dir.glob("*.md")), figures=figures,
        config_source=REPO / "workflow_config.yaml", title="phantoms", captions_dir=REPO / "docs" / "captions",
    )
    page = report.read_text()
    assert page.count("data:image/png;base64,") == len(figures)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    assert "<link" not in page and "<script" not in page
    assert "<th>1%</th>" in page and "<table>" in page
    assert "bootstrap_samples: 1000" in page  # the config file verbatim


def test_scripts_run(metrics_paths: list[Path], tmp_path: Path) -> None:
    def script(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    paths = [str(p) for p in metrics_paths]
    config = (REPO / "workflow_config.yaml").read_text()
    as_json = json.dumps(yaml.safe_load(config))  # the rules pass the config as inline JSON
    script("tables").main(["--metrics", *paths, "--config", as_json, "--settings", '{"bootstrap_samples": 50}',
                           "--out-dir", str(tmp_path / "tables"), "--log", str(tmp_path / "tables.log")])
    # No --mask-ratio: the ratio fine-tuned at every fraction (0.75) is inferred.
    script("figures").main(["--metrics", *paths, "--settings", '{"dpi": 30}', "--out-dir", str(tmp_path / "figures")])
    script("report").main(["--tables-dir", str(tmp_path / "tables"),
                           "--figures", *map(str, sorted((tmp_path / "figures").glob("*.png"))),
                           "--config", as_json, "--out", str(tmp_path / "report.html")])
    page = (tmp_path / "report.html").read_text()
    assert page.index("Label fractions") < page.index("Hyperparameters")
    assert "bootstrap_samples: 1000" in page  # inline JSON config rendered as YAML
    assert "Difference (95% CI)" in (tmp_path / "tables" / "significance.md").read_text()
