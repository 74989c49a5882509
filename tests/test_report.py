"""The report opens with the verdict (headline figure, sentences, a table per budget), then the data and
provenance; every pairwise comparison is a heatmap with its table folded; it renders in a real browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from report_data import RUNS, fake_run

from cxrmim.analysis.report import (
    fill_config,
    markdown_html,
    ordered_tables,
    write_report,
)
from cxrmim.analysis.summary import RunFiles, config_digest
from cxrmim.analysis.tables import write_tables
from cxrmim.analysis.verdict_figures import write_verdict_figures

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["COVID-19", "Normal"]


def write_csv(path: Path, frame: pd.DataFrame, sep: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, sep=sep)
    return path


@pytest.fixture
def run_files(tmp_path: Path) -> RunFiles:
    """The stage outputs of a small finished run, as the report rule passes them."""
    results = tmp_path / "results"
    prepared = results / "prepared" / "summary.json"
    prepared.parent.mkdir(parents=True)
    prepared.write_text(
        json.dumps(
            {
                "dataset": "phantoms",
                "kind": "synthetic",
                "n_images": 10,
                "n_skipped_bad": 1,
                "n_dropped_duplicates": 2,
                "n_without_mask": 0,
                "image_size": 64,
                "labels": {"COVID-19": 5, "Normal": 5},
                "duplicates": [{"sources": ["a.png", "b.png", "c.png"], "labels": ["Normal"]}],
            }
        )
    )
    labels = [CLASSES[i % 2] for i in range(10)]
    manifest = write_csv(
        results / "prepared" / "manifest.csv",
        pd.DataFrame({"index": range(10), "label": labels, "has_mask": [1] * 9 + [0]}),
    )
    split = write_csv(
        results / "split" / "split.csv",
        pd.DataFrame({"index": range(10), "label": labels, "part": ["train"] * 6 + ["val"] * 2 + ["test"] * 2}),
    )
    validity = write_csv(
        results / "patch_validity" / "summary.csv",
        pd.DataFrame(
            [
                {
                    "label": "all",
                    "n_images": 10,
                    "n_without_mask": 1,
                    "n_patches": 64,
                    "mean": 21.5,
                    "std": 2.0,
                    "min": 15,
                    "q25": 20,
                    "median": 21,
                    "q75": 23,
                    "max": 27,
                }
            ]
        ),
    )
    metrics = []
    for i, device in enumerate(["cpu", "cpu", "cuda"]):
        path = results / "finetune" / f"run{i}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"device": device}))
        metrics.append(path)
    histories = [
        write_csv(
            results / "pretrain" / f"rgmim_r0.75_vit-cpu_s{seed}" / "history.csv",
            pd.DataFrame(
                {
                    "epoch": [1, 2],
                    "loss": [1.0, 0.5],
                    "fallback_fraction": [0.5, fallback],
                    "visible_lung_fraction": [0.5, 0.25],
                }
            ),
        )
        for seed, fallback in enumerate([0.10, 0.20])
    ]
    bench = results / "benchmarks"
    timing = {"prepare.tsv": 12.5, "finetune/a/frac1_seed0.tsv": 100.0, "finetune/b/frac1_seed0.tsv": 50.0}
    for name, seconds in timing.items():
        write_csv(bench / name, pd.DataFrame({"s": [seconds], "h:m:s": ["0:00:00"], "max_rss": [1.0]}), sep="\t")
    return RunFiles(
        prepared_summary=prepared,
        manifest=manifest,
        split=split,
        validity_summary=validity,
        metrics=metrics,
        pretrain_histories=histories,
        benchmarks_dir=bench,
    )


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """Tables (verdict, significance, ...) and the verdict's two figures from the fake fine-tuning runs."""
    root = tmp_path_factory.mktemp("analysis")
    paths = [
        fake_run(root / "finetune", *identity, *key, accuracy)
        for identity, cells in RUNS.items()
        for key, accuracy in cells.items()
    ]
    config = yaml.safe_load((REPO / "workflow_config.yaml").read_text())
    write_tables(paths, config, root / "tables", {"bootstrap_samples": 200, "seed": 0})
    figures = write_verdict_figures(
        root / "tables" / "accuracy_intervals.csv", root / "tables" / "significance.csv", {"dpi": 50}, root / "figures"
    )
    return root / "tables", figures


@pytest.fixture
def report(run_files: RunFiles, analysis: tuple[Path, list[Path]], tmp_path: Path) -> Path:
    """A report from the run files, the tables and the verdict's figures, and one more real figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_path = tmp_path / "accuracy_vs_fraction.png"
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0.01, 0.1, 1.0], [0.4, 0.6, 0.8], marker="o")
    figure.savefig(figure_path, dpi=60)
    plt.close(figure)
    tables_dir, verdict_figures = analysis
    return write_report(
        tmp_path / "report.html",
        tables=ordered_tables(tables_dir),
        figures=[*verdict_figures, figure_path],
        config_source=REPO / "workflow_config.yaml",
        title="phantoms",
        captions_dir=REPO / "docs" / "captions",
        files=run_files,
        repo=REPO,
    )


def test_report_opens_with_the_verdict(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    order = [
        '<section class="verdict">',
        "<h2>Verdict: does pretraining help at each label budget?</h2>",
        "<p>At 1% labels (10 labelled images;",
        'alt="accuracy_by_budget"',
        "<h3>1% labels: 10 labelled images",
        "<h3>100% labels",
        "The run: data and provenance",
        "<h2>Tables</h2>",
        "<h2>Label fractions (Table 2)",
        "<h2>Significance",
        'alt="significance_heatmap"',
        "<details><summary>Every pairwise comparison",
        "<h2>Figures</h2>",
        'alt="accuracy_vs_fraction"',
        "<h2>Configuration</h2>",
    ]
    positions = [page.index(marker) for marker in order]
    assert positions == sorted(positions), [m for m, p in zip(order, positions)]
    # The verdict is shown once (not again among the tables), the placed figures once each, every table but the
    # pairwise one unfolded, and the fold closed until the reader opens it.
    assert page.count("Verdict: does pretraining help") == 1
    assert page.count('alt="significance_heatmap"') == page.count('alt="accuracy_by_budget"') == 1
    assert page.count("<details>") == 1 and "<details open" not in page
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    assert "beat training from scratch" in text and "Against MAE, the comparison the papers make" in text
    assert "Each claim rests on 20 test images and 1–4 runs per pretrained init" in text
    # Verdict words carry a style beside the word itself (the word is what print and colour-blind readers get).
    assert '<td class="better">better</td>' in page and '<td class="unclear">cannot tell at this size</td>' in page
    caption = " ".join((REPO / "docs" / "captions" / "accuracy_by_budget.rst").read_text().split()[:8])
    assert caption in page


def test_markdown_tables_fold_and_take_a_figure_before_them() -> None:
    text = "# T\n\nnote\n\n| a | b |\n|---|---|\n| 1 | better |\n"
    folded = markdown_html(text, before_tables="<figure>F</figure>", fold="show")
    assert folded.index("<p>note</p>") < folded.index("<figure>F</figure>") < folded.index("<details>")
    assert "<summary>show (1 rows)</summary><table>" in folded and folded.endswith("</details>")
    assert "<details>" not in markdown_html(text) and '<td class="better">better</td>' in markdown_html(text)


def test_report_shows_the_data_and_provenance(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    # Dataset: counts, skips and duplicates, masks, images per class and split.
    assert "10 images" in text and "1 unreadable" in text and "2 duplicate images dropped (1 duplicate sets" in text
    assert "Lung masks provided with the dataset: 9 of 10 images." in text
    assert "mean 21.5 of 64" in text
    assert "<td>all</td><td>6</td><td>2</td><td>2</td><td>10</td>" in page
    assert "a.png" not in page  # file paths of duplicates (possibly patient-identifying) stay out
    # Pretraining masking shares, mean over the two seeds' last epochs, with what they mean.
    assert "rgmim_r0.75_vit-cpu: 15.0% fallback images, 25.0% of lung patches visible" in text
    assert "outside the lung" in text
    # Provenance.
    commit = re.search(r"<td>Commit</td><td>([^<]*)</td>", page).group(1)
    assert re.fullmatch(r"[0-9a-f]{40}( \(uncommitted changes\))?", commit)
    assert re.search(r"<td>Config digest \(sha256 of canonical JSON\)</td><td>[0-9a-f]{64}</td>", page)
    assert "cpu (2 fine-tuning runs), cuda (1 fine-tuning runs)" in text
    assert "<td>finetune</td><td>2</td><td>2 min 30 s</td><td>1 min 40 s</td>" in page
    assert "<td>prepare</td><td>1</td><td>12 s</td>" in page or "<td>prepare</td><td>1</td><td>13 s</td>" in page


def test_captions_are_read_and_their_config_references_filled(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    caption = (REPO / "docs" / "captions" / "accuracy_vs_fraction.rst").read_text().split()[:6]
    assert " ".join(caption) in page
    assert (
        fill_config('ratio ({{ snakemake.config["pretrain"]["mask_ratio"] }})', {"pretrain": {"mask_ratio": 0.9}})
        == "ratio (0.9)"
    )
    assert fill_config("{{ snakemake.config['x']['y'] }}", {}) == "?"


def test_provenance_without_git_and_digest_is_canonical(run_files: RunFiles, tmp_path: Path) -> None:
    page = write_report(
        tmp_path / "r.html",
        tables=[],
        figures=[],
        config_source='{"a": 1, "b": [1, 2]}',
        title="t",
        files=run_files,
        repo=tmp_path,
    ).read_text(encoding="utf-8")
    assert "<td>Commit</td><td>unknown</td>" in page  # tmp_path is no git checkout
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1}) != config_digest({"a": 2})
    assert config_digest({"a": 1, "b": [1, 2]}) in page


def test_report_without_summary_inputs_still_builds(tmp_path: Path) -> None:
    page = write_report(
        tmp_path / "r.html", tables=[], figures=[], config_source='{"a": 1}', title="t", repo=tmp_path
    ).read_text(encoding="utf-8")
    assert "no dataset summary given" in page and "no verdict table given" in page


def chromium() -> str | None:
    """The Debian chromium binary, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    """Users open the page in a browser: a real one must render it to a non-blank image without failing."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed on CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1200,2000",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert screenshot.exists(), result.stderr[-3000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.shape == (2000, 1200)
    dark = pixels < 128  # text, table rules, the figure's axes
    assert dark.mean() > 0.005, "the rendered page is blank"
    assert dark[:300].any(), "nothing rendered at the top of the page (the title and verdict)"
    # The headline figure is on the first screen: RGMIM's red line (#d62728) is drawn in its top part.
    rgb = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)[:1200]
    red = (rgb[..., 0] > 170) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    assert red.sum() > 50, "the headline figure is not rendered on the first screen"


def test_results_page_is_generated_from_the_run(
    analysis: tuple[Path, list[Path]], report: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """benchmarks/results_table.py writes docs/results.md from a run's tables and report: the commit the report
    recorded, the accuracy table and the verdict, nothing typed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("results_table", REPO / "benchmarks" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = tmp_path / "run"
    shutil.copytree(analysis[0], results / "tables")
    shutil.copy(report, results / "report.html")
    assert module.main([str(results), "--wall-time", "595 s on 2 cores"]) == 0
    page = capsys.readouterr().out
    commit = re.search(r"<td>Commit</td><td>([^<]*)</td>", report.read_text()).group(1)
    assert f"commit {commit}, config digest " in page and "595 s on 2 cores" in page
    assert "| Method | Architecture | 1% (10 images) | 100% (1000 images) | runs |" in page
    rgmim = [0.60, 0.70, 0.65, 0.75]
    assert f"| RGMIM | ViT | {np.mean(rgmim):.3f} ± {np.std(rgmim, ddof=1):.3f} |" in page
    assert "rgmim_r0.5" not in page  # the masking-ratio study's other ratio is not a row of the budget table
    assert "## Verdict: does pretraining help" in page and "### 1% labels: 10 labelled images" in page
