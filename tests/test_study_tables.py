"""The per-budget study tables (binary task, modes and presets) and their significance against a reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxrmim.analysis.runs import default_variant, load_runs
from cxrmim.analysis.study import study_significance, study_table, write_study
from cxrmim.evaluation import binary_metrics

N_TEST = 40
# (init, method, architecture, ratio) -> share of test images right, per (budget, augment)
ACCURACY = {
    ("mae_r0.75_vit-s", "MAE", "ViT", 0.75): {
        ("n100", "none"): 0.70,
        ("n1000", "none"): 0.90,
        ("n100", "classic"): 0.75,
    },
    ("scratch_resnet18", "From Scratch", "resnet18", None): {
        ("n100", "none"): 0.50,
        ("n1000", "none"): 0.60,
        ("n100", "classic"): 0.55,
    },
}


def fake_binary_run(root: Path, init: tuple, budget: str, augment: str, seed: int, accuracy: float,
                    applied: str | None = None) -> Path:  # fmt: skip
    """A binary run whose predictions are right on `accuracy` of the test images and whose metrics agree."""
    name, method, architecture, ratio = init
    run_dir = root / name / f"{budget}_seed{seed}_full-{augment}"
    run_dir.mkdir(parents=True)
    target = np.arange(N_TEST) % 2
    right = np.arange(N_TEST) < round((accuracy + 0.025 * seed) * N_TEST)
    pred = np.where(right, target, 1 - target)
    prob = np.where(pred == 1, 0.8, 0.2)
    pd.DataFrame(
        {
            "index": np.arange(N_TEST),
            "id": [f"i{i}" for i in range(N_TEST)],
            "label": np.where(target == 1, "Finding", "No Finding"),
            "target": target,
            "pred": pred,
            "prob_Finding": prob,
        }
    ).to_csv(run_dir / "predictions.csv", index=False)
    metrics = {
        "init": name,
        "method": method,
        "architecture": architecture,
        "mask_ratio": ratio,
        "pretrain_seed": None,
        "fraction": None,
        "seed": seed,
        "n_train": int(budget[1:]),
        "best_epoch": 1,
        "task": "binary",
        "mode": "full",
        "augment": augment,
        "budget": budget,
        "n_labels": int(budget[1:]),
        "val": {},
        "test": binary_metrics(target, prob, 0.5),
    }
    if applied is not None:
        metrics["augment_applied"] = applied
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir / "metrics.json"


@pytest.fixture(scope="module")
def binary_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("study")
    return [
        fake_binary_run(root, init, budget, augment, seed, accuracy)
        for init, cells in ACCURACY.items()
        for (budget, augment), accuracy in cells.items()
        for seed in (0, 1)
    ]


def test_one_table_per_budget_with_the_study_columns(binary_runs: list[Path]) -> None:
    table = study_table(load_runs(binary_runs))
    assert list(table["Budget"].unique()) == ["100 labelled images", "1,000 labelled images"]
    assert {"Accuracy", "Precision", "F1", "Recall", "AUC", "Augmentation", "Fine-tuning"} <= set(table.columns)
    row = table[
        (table["Init"] == "mae_r0.75_vit-s")
        & (table["Budget"] == "100 labelled images")
        & (table["Augmentation"] == "none")
    ].iloc[0]
    assert row["Accuracy"] == f"{np.mean([0.70, 0.725]):.3f} ± {np.std([0.70, 0.725], ddof=1):.3f}"
    assert row["n"] == 2 and row["Labelled images"] == 100


def test_significance_against_the_reference_is_per_budget_and_preset(binary_runs: list[Path]) -> None:
    significance = study_significance(load_runs(binary_runs), "scratch_resnet18", n_samples=200, seed=0)
    assert len(significance) == 3 and set(significance["init_a"]) == {"mae_r0.75_vit-s"}
    cell = significance[(significance["budget"] == "n1000")].iloc[0]
    assert cell["difference"] == pytest.approx(0.30) and cell["n_runs_a"] == cell["n_runs_b"] == 2
    assert cell["p_value"] < 0.05
    assert study_significance(load_runs(binary_runs), None, n_samples=200, seed=0).empty


def test_native_preset_shows_what_each_model_applied_and_pairs_the_models(tmp_path: Path) -> None:
    mae, resnet = list(ACCURACY)
    paths = [
        fake_binary_run(tmp_path, init, "n100", "native", seed, 0.7, applied)
        for init, applied in ((mae, "randaugment"), (resnet, "classic"))
        for seed in (0, 1)
    ]
    runs = load_runs(paths)
    table = study_table(runs).set_index("Init")
    assert table.loc[mae[0], "Augmentation"] == "native (randaugment)"
    assert table.loc[resnet[0], "Augmentation"] == "native (classic)"
    significance = study_significance(runs, resnet[0], n_samples=50, seed=0)
    assert significance[["augment", "init_a", "init_b"]].values.tolist() == [["native", mae[0], resnet[0]]]


def test_study_markdown_has_a_section_per_budget(binary_runs: list[Path], tmp_path: Path) -> None:
    markdown = write_study(binary_runs, tmp_path, {"reference": "scratch_resnet18", "bootstrap_samples": 100})
    text = markdown.read_text()
    assert "## 100 labelled images" in text and "## 1,000 labelled images" in text
    assert "Hierarchical bootstrap (runs and test images) against the reference init" in text
    assert len(pd.read_csv(tmp_path / "study_significance.csv")) == 3


def test_paper_tables_use_only_the_first_mode_and_preset(binary_runs: list[Path], tmp_path: Path) -> None:
    runs = load_runs(binary_runs)
    first = default_variant(runs, {"modes": ["full"], "augment_presets": ["classic", "none"]})
    assert set(first["augment"]) == {"classic"}
    assert default_variant(runs, {}).empty  # no `current` runs here


def test_runs_of_two_tasks_are_refused(binary_runs: list[Path], tmp_path: Path) -> None:
    runs = load_runs(binary_runs)
    runs.loc[0, "task"] = "multiclass"
    with pytest.raises(ValueError, match="different tasks"):
        study_table(runs)


def test_paper_tables_survive_count_budgets_only(binary_runs: list[Path], tmp_path: Path) -> None:
    from cxrmim.analysis.tables import write_tables

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow_config.yaml").read_text())
    config["finetune"]["augment_presets"] = ["none", "classic"]
    written = write_tables(binary_runs, config, tmp_path, {"bootstrap_samples": 20})
    assert "100 labelled images" not in written["label_fractions"].read_text()  # fractions only in Table 2


def test_figures_draw_the_chosen_variant_and_binary_confusion(binary_runs: list[Path], tmp_path: Path) -> None:
    from cxrmim.analysis.figures import FIGURES, decisions, write_figures
    from cxrmim.analysis.runs import load_predictions

    assert len(write_figures(binary_runs, {"dpi": 30}, tmp_path, variant=("full", "none"))) == len(FIGURES)
    classes, truth, pred = decisions(load_predictions(binary_runs[0].parent))
    assert classes == ["not Finding", "Finding"] and set(truth) <= set(classes) and set(pred) <= set(classes)


def test_multilabel_runs_get_mean_auc_tables_and_placeholder_figures(tmp_path: Path) -> None:
    from cxrmim.analysis.figures import FIGURES, write_figures
    from cxrmim.analysis.tables import write_tables

    paths = []
    for init, auc in (("mae_r0.75_vit-s", 0.8), ("scratch_resnet18", 0.6)):
        for seed in (0, 1):
            run_dir = tmp_path / "runs" / init / f"frac1_seed{seed}"
            run_dir.mkdir(parents=True)
            pd.DataFrame(
                {"index": [0, 1], "id": ["a", "b"], "label": ["Effusion", "No Finding"], "prob_Effusion": [0.9, 0.1]}
            ).to_csv(run_dir / "predictions.csv", index=False)
            pd.DataFrame({"epoch": [1], "test_auc_mean": [auc]}).to_csv(run_dir / "history.csv", index=False)
            metrics = {
                "init": init,
                "method": "MAE" if "mae" in init else "From Scratch",
                "architecture": "ViT",
                "mask_ratio": 0.75 if "mae" in init else None,
                "pretrain_seed": None,
                "fraction": 1.0,
                "seed": seed,
                "n_train": 10,
                "best_epoch": 1,
                "task": "multilabel",
                "mode": "full",
                "augment": "current",
                "budget": "frac1",
                "n_labels": 10,
                "val": {},
                "test": {"auc_mean": auc + 0.01 * seed, "auc_Effusion": auc, "loss": 0.5},
            }
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
            paths.append(run_dir / "metrics.json")
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow_config.yaml").read_text())
    written = write_tables(paths, config, tmp_path / "tables", {"bootstrap_samples": 20})
    assert "Test mean AUC (multilabel)" in written["label_fractions"].read_text()
    assert "no pair of runs" in written["significance"].read_text()
    table = study_table(load_runs(paths))
    assert {"Mean AUC", "AUC Effusion"} <= set(table.columns)
    assert len(write_figures(paths, {"dpi": 30}, tmp_path / "figures")) == len(FIGURES)


def test_count_budgets_only_write_a_significance_table_the_report_can_read(tmp_path):
    """The MAE-vs-ResNet config has count budgets only: significance.csv has a header and no rows, and the report's
    verdict says nothing is compared there instead of failing on an empty file."""
    from cxrmim.analysis.significance import SIGNIFICANCE_COLUMNS, significance_table
    from cxrmim.analysis.verdict import INTERVAL_COLUMNS, verdict_table
    from cxrmim.analysis.verdict_text import verdict_sentences

    runs = pd.DataFrame({"task": ["binary", "binary"], "fraction": [None, None], "init": ["mae", "scratch"]})
    table = significance_table(runs, n_samples=10, seed=0)
    assert table.empty and list(table.columns) == SIGNIFICANCE_COLUMNS
    path = tmp_path / "significance.csv"
    table.to_csv(path, index=False)
    verdict = verdict_table(runs, pd.read_csv(path))
    (sentence,) = verdict_sentences(verdict, pd.DataFrame(columns=INTERVAL_COLUMNS))
    assert "Nothing to judge" in sentence
