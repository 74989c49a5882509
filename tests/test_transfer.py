"""The cross-dataset summary picks each dataset's headline metric, averages every run of an init, leaves out the
ratio study and other variants, shows missing cells; the experiment report opens with it, then a section per
dataset; both scripts run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrmim.analysis.experiment_report import DatasetFiles, build_experiment_report
from cxrmim.analysis.transfer import (
    MISSING,
    budget_axis,
    budget_text,
    headline_metric,
    load_datasets,
    summary_table,
    transfer_markdown,
    wide_table,
)

REPO = Path(__file__).resolve().parents[1]
INITS = {  # init family -> (method, architecture, mask ratio)
    "rgmim_r0.75_vit-t": ("RGMIM", "ViT", 0.75),
    "mae_r0.75_vit-t": ("MAE", "ViT", 0.75),
    "scratch_vit-t": ("From Scratch", "ViT", None),
    "rgmim_r0.5_vit-t": ("RGMIM", "ViT", 0.5),  # the ratio study: 100% labels only
}
# mimic (multiclass, the corpus): accuracy per (init, fraction) over (pretraining seed, subset seed) pairs.
MIMIC = {
    ("rgmim_r0.75_vit-t", 0.1): [0.60, 0.70, 0.65, 0.75],
    ("rgmim_r0.75_vit-t", 1.0): [0.90, 0.92, 0.94, 0.96],
    ("mae_r0.75_vit-t", 0.1): [0.50, 0.52, 0.54, 0.56],
    ("mae_r0.75_vit-t", 1.0): [0.80, 0.82, 0.84, 0.86],
    ("scratch_vit-t", 0.1): [0.40, 0.44],
    ("scratch_vit-t", 1.0): [0.70, 0.74],
    ("rgmim_r0.5_vit-t", 1.0): [0.10, 0.12, 0.14, 0.16],
}
# chexpert (multilabel): mean AUC; no MAE runs at all.
CHEXPERT = {
    ("rgmim_r0.75_vit-t", 0.01): [0.70, 0.72, 0.74, 0.76],
    ("rgmim_r0.75_vit-t", 1.0): [0.80, 0.82, 0.84, 0.86],
    ("scratch_vit-t", 0.01): [0.60, 0.62],
    ("scratch_vit-t", 1.0): [0.65, 0.69],
    ("rgmim_r0.5_vit-t", 1.0): [0.99, 0.99, 0.99, 0.99],
}


def write_run(root: Path, family: str, fraction: float, run: int, task: str, value: float, mode: str = "full") -> Path:
    """A metrics.json as finetune writes it, with `value` as the task's headline metric (other metrics differ)."""
    method, architecture, ratio = INITS[family]
    pretrain_seed, seed = (run // 2, run % 2) if ratio is not None else (None, run)
    init = family if pretrain_seed is None else f"{family}_s{pretrain_seed}"
    if task == "multilabel":
        test = {"auc_mean": value, "auc_Edema": value - 0.05, "loss": 0.3}
    else:
        test = {"accuracy": value, "auc_macro": 1.0 - value, "f1_macro": value / 2}
    metrics = {
        "init": init,
        "method": method,
        "architecture": architecture,
        "mask_ratio": ratio,
        "pretrain_seed": pretrain_seed,
        "fraction": fraction,
        "seed": seed,
        "budget": f"frac{fraction:g}",
        "n_labels": int(fraction * 1000),
        "task": task,
        "mode": mode,
        "augment": "current",
        "best_epoch": 2,
        "val": test,
        "test": test,
    }
    path = root / init / f"{mode}_frac{fraction:g}_seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))
    return path


def write_dataset(root: Path, values: dict, task: str) -> list[Path]:
    """Every run of one dataset, plus a linear-probe run (another variant) that the summary must leave out."""
    paths = [
        write_run(root, family, fraction, run, task, value)
        for (family, fraction), runs in values.items()
        for run, value in enumerate(runs)
    ]
    return [*paths, write_run(root, "rgmim_r0.75_vit-t", 1.0, 0, task, 0.01, mode="probe")]


@pytest.fixture
def datasets(tmp_path: Path) -> dict[str, list[Path]]:
    """Two evaluation datasets' metrics.json, the corpus (multiclass) first."""
    return {
        "mimic": write_dataset(tmp_path / "results" / "mimic" / "finetune", MIMIC, "multiclass"),
        "chexpert": write_dataset(tmp_path / "results" / "chexpert" / "finetune", CHEXPERT, "multilabel"),
    }


def test_each_dataset_gets_its_headline_metric_and_exact_cells(datasets: dict[str, list[Path]]):
    tidy = summary_table(load_datasets(datasets))
    metrics = tidy.drop_duplicates("dataset").set_index("dataset")["metric"]
    assert metrics.to_dict() == {"mimic": "test_accuracy", "chexpert": "test_auc_mean"}
    cell = tidy[(tidy["dataset"] == "mimic") & (tidy["init"] == "rgmim_r0.75_vit-t") & (tidy["budget"] == "frac0.1")]
    assert cell["runs"].item() == 4  # 2 pretraining seeds × 2 subset seeds
    assert cell["mean"].item() == pytest.approx(0.675)
    assert cell["std"].item() == pytest.approx(np.std([0.60, 0.70, 0.65, 0.75], ddof=1))
    auc = tidy[(tidy["dataset"] == "chexpert") & (tidy["init"] == "scratch_vit-t") & (tidy["budget"] == "frac1")]
    assert auc["mean"].item() == pytest.approx(0.67)  # mean AUC, not the per-finding AUC (0.62)
    wide = wide_table(tidy).set_index("Method")
    assert wide.loc["RGMIM", "mimic 10%"] == "0.675 ± 0.065"
    assert list(wide.columns) == ["Architecture", "mimic 10%", "mimic 100%", "chexpert 1%", "chexpert 100%"]
    assert list(wide.index) == ["RGMIM", "MAE", "From Scratch"]  # the paper's order


def test_ratio_study_and_other_variants_stay_out(datasets: dict[str, list[Path]]):
    tidy = summary_table(load_datasets(datasets))
    assert "rgmim_r0.5_vit-t" not in set(tidy["init"])
    full = tidy[(tidy["init"] == "rgmim_r0.75_vit-t") & (tidy["budget"] == "frac1")].set_index("dataset")
    assert full["runs"].to_dict() == {"mimic": 4, "chexpert": 4}  # the probe run (0.01) is not averaged in
    assert full.loc["mimic", "mean"] == pytest.approx(0.93)
    probe = summary_table(load_datasets(datasets, variant=("probe", "current")))
    assert set(probe["init"]) == {"rgmim_r0.75_vit-t"} and probe["mean"].tolist() == [0.01, 0.01]


def test_missing_cells_are_shown_not_dropped(datasets: dict[str, list[Path]]):
    tidy = summary_table(load_datasets(datasets))
    absent = tidy[(tidy["dataset"] == "chexpert") & (tidy["init"] == "mae_r0.75_vit-t")]
    assert len(absent) == 2 and (absent["runs"] == 0).all() and absent["mean"].isna().all()
    markdown = transfer_markdown(tidy)
    mae_row = next(line for line in markdown.splitlines() if line.startswith("| MAE |"))
    assert mae_row.endswith(f"| {MISSING} | {MISSING} |")
    assert "| chexpert | multilabel | test mean AUC | 1%, 100% |" in markdown
    assert "| mimic | multiclass | test accuracy |" in markdown


def test_binary_uses_auc_and_mixed_tasks_are_an_error():
    runs = pd.DataFrame({"task": ["binary"], "test_auc": [0.8], "test_accuracy": [0.7]})
    assert headline_metric(runs, "nih")[1] == "test_auc"
    with pytest.raises(ValueError, match="'nih'.*several tasks"):
        headline_metric(pd.DataFrame({"task": ["binary", "multiclass"], "test_auc": [0.8, 0.7]}), "nih")


def test_budget_axis_and_labels():
    assert budget_axis(["frac0.01", "frac1"]) == ({"frac0.01": 0.01, "frac1": 1.0}, True)
    assert budget_axis(["n100", "n1000"]) == ({"n100": 100.0, "n1000": 1000.0}, True)
    assert budget_axis(["frac0.1", "n1000"]) == ({"frac0.1": 0.0, "n1000": 1.0}, False)  # evenly spaced
    assert [budget_text(b) for b in ("frac0.01", "frac1", "n1000")] == ["1%", "100%", "n1000"]


def dataset_outputs(root: Path, name: str) -> DatasetFiles:
    """A dataset's verdict.md, headline figure and report.html, as its own report rules leave them."""
    verdict = root / name / "tables" / "verdict.md"
    verdict.parent.mkdir(parents=True)
    verdict.write_text(
        f"# Verdict: does pretraining help at each label budget?\n\n{name} sentence.\n\n"
        f"## 1% labels\n\n| Init | Verdict |\n|---|---|\n| RGMIM (ViT) {name} | better |\n"
    )
    png = root / name / "figures" / "accuracy_by_budget.png"
    png.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(png)
    (root / name / "report.html").write_text("<html></html>")
    return DatasetFiles(name, verdict, png, root / name / "report.html")


def test_experiment_report_opens_with_the_summary_then_each_dataset(tmp_path: Path):
    results = tmp_path / "results"
    csv = results / "exp" / "tables" / "transfer.csv"
    csv.parent.mkdir(parents=True)
    pd.DataFrame(
        {"dataset": ["mimic", "chexpert"], "task": ["multiclass", "multilabel"],
         "metric_label": ["test accuracy", "test mean AUC"]}
    ).to_csv(csv, index=False)  # fmt: skip
    (csv.parent / "transfer.md").write_text("# Across datasets\n\n| Method | mimic 1% |\n|---|---|\n| RGMIM | 0.5 |\n")
    png = results / "exp" / "figures" / "transfer.png"
    png.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(png)
    files = [dataset_outputs(results, "chexpert"), dataset_outputs(results, "mimic")]  # section order as given
    page = build_experiment_report(
        csv, csv.parent / "transfer.md", png, files, "mimic", {"name": "exp", "corpus": "mimic"}, results / "exp" / "report.html"
    )  # fmt: skip
    summary, chexpert, mimic = (page.index(s) for s in ('id="summary"', 'id="dataset-chexpert"', 'id="dataset-mimic"'))
    assert summary < page.index("<td>0.5</td>") < chexpert < mimic  # the summary table first
    assert page.count('<section class="dataset') == 2
    assert "Pretraining corpus: <strong>mimic</strong>" in page
    assert "<h2>mimic (in-domain)</h2>" in page and "<h2>chexpert (transferred)</h2>" in page
    assert 'href="../chexpert/report.html"' in page and 'href="../mimic/report.html"' in page
    assert "headline metric: test mean AUC" in page[chexpert:mimic]
    assert "chexpert sentence." in page[chexpert:mimic] and '<td class="better">better</td>' in page[chexpert:mimic]
    with pytest.raises(ValueError, match="'nih' is not in the cross-dataset summary"):
        build_experiment_report(csv, csv.parent / "transfer.md", png, [dataset_outputs(results, "nih")], "mimic", {},
                                results / "exp" / "report.html")  # fmt: skip


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """A script of scripts/ as the workflow runs it, on this checkout's package."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(REPO / "scripts" / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=120)


def test_scripts_end_to_end(tmp_path: Path, datasets: dict[str, list[Path]]):
    results = tmp_path / "results"
    listing = tmp_path / "chexpert_metrics.txt"  # @FILE: hundreds of paths need not be on the command line
    listing.write_text("\n".join(map(str, datasets["chexpert"])) + "\n")
    out = results / "exp"
    done = run_script(
        "transfer.py", "--dataset", "mimic", *datasets["mimic"], "--dataset", "chexpert", f"@{listing}",
        "--settings", '{"dpi": 40}', "--mask-ratio", "0.75", "--out-dir", out, "--log", tmp_path / "transfer.log",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tidy = pd.read_csv(out / "tables" / "transfer.csv")
    assert list(dict.fromkeys(tidy["dataset"])) == ["mimic", "chexpert"] and "rgmim_r0.5_vit-t" not in set(tidy["init"])
    with Image.open(out / "figures" / "transfer.png") as image:
        assert image.width > 200
    report = [
        arg for name in ("mimic", "chexpert") for f in [dataset_outputs(results, name)]
        for arg in ("--dataset", name, f.verdict_md, f.headline_png, f.report_html)
    ]  # fmt: skip
    done = run_script(
        "experiment_report.py", "--transfer-csv", out / "tables" / "transfer.csv",
        "--transfer-md", out / "tables" / "transfer.md", "--transfer-png", out / "figures" / "transfer.png", *report,
        "--config", json.dumps({"name": "exp", "corpus": "mimic", "evaluate": ["mimic", "chexpert"]}),
        "--out", out / "report.html", "--log", tmp_path / "report.log",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text()
    assert page.index("0.675 ± 0.065") < page.index('id="dataset-mimic"') < page.index('id="dataset-chexpert"')
    assert "data:image/png;base64," in page and "mean test AUC over the findings" in page  # transfer.rst caption
    bad = run_script("transfer.py", "--dataset", datasets["mimic"][0], "--out-dir", out)
    assert bad.returncode == 1 and "the first value is the dataset's name" in bad.stderr
