"""The report opens with what the run shows (dataset, key comparisons, provenance) and renders in a real browser."""

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
from PIL import Image

from cxrmim.analysis.report import fill_config, write_report
from cxrmim.analysis.summary import RunFiles, config_digest

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["COVID-19", "Normal"]
SIGNIFICANCE = [  # fraction, comparison, init_a, init_b, difference, ci_low, ci_high, p
    (0.01, "RGMIM (ViT) vs From Scratch (ViT)", "rgmim_r0.75_vit-cpu", "scratch_vit-cpu", 0.10, 0.02, 0.18, 0.01),
    (1.0, "RGMIM (ViT) vs From Scratch (ViT)", "rgmim_r0.75_vit-cpu", "scratch_vit-cpu", 0.05, 0.01, 0.09, 0.02),
    (0.01, "RGMIM (ViT) vs MAE (ViT)", "rgmim_r0.75_vit-cpu", "mae_r0.75_vit-cpu", 0.01, -0.05, 0.07, 0.6),
    (0.01, "MAE (ViT) vs From Scratch (ViT)", "mae_r0.75_vit-cpu", "scratch_vit-cpu", -0.08, -0.12, -0.03, 0.0),
]


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
    prepared.write_text(json.dumps({
        "dataset": "phantoms", "kind": "synthetic", "n_images": 10, "n_skipped_bad": 1, "n_dropped_duplicates": 2,
        "n_without_mask": 0, "image_size": 64, "labels": {"COVID-19": 5, "Normal": 5},
        "duplicates": [{"sources": ["a.png", "b.png", "c.png"], "labels": ["Normal"]}],
    }))
    labels = [CLASSES[i % 2] for i in range(10)]
    manifest = write_csv(results / "prepared" / "manifest.csv",
                         pd.DataFrame({"index": range(10), "label": labels, "has_mask": [1] * 9 + [0]}))
    split = write_csv(results / "split" / "split.csv", pd.DataFrame({
        "index": range(10), "label": labels, "part": ["train"] * 6 + ["val"] * 2 + ["test"] * 2}))
    validity = write_csv(results / "patch_validity" / "summary.csv", pd.DataFrame([{
        "label": "all", "n_images": 10, "n_without_mask": 1, "n_patches": 64, "mean": 21.5, "std": 2.0,
        "min": 15, "q25": 20, "median": 21, "q75": 23, "max": 27}]))
    significance = write_csv(results / "tables" / "significance.csv", pd.DataFrame(
        [{"fraction": f, "comparison": c, "init_a": a, "init_b": b, "accuracy_a": 0.6, "accuracy_b": 0.5,
          "difference": d, "ci_low": lo, "ci_high": hi, "p_value": p, "n_images": 120, "n_runs_a": 4,
          "n_runs_b": 2, "n_bootstrap": 1000} for f, c, a, b, d, lo, hi, p in SIGNIFICANCE]))
    metrics = []
    for i, device in enumerate(["cpu", "cpu", "cuda"]):
        path = results / "finetune" / f"run{i}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"device": device}))
        metrics.append(path)
    histories = [write_csv(results / "pretrain" / f"rgmim_r0.75_vit-cpu_s{seed}" / "history.csv", pd.DataFrame(
        {"epoch": [1, 2], "loss": [1.0, 0.5], "fallback_fraction": [0.5, fallback],
         "visible_lung_fraction": [0.5, 0.25]})) for seed, fallback in enumerate([0.10, 0.20])]
    bench = results / "benchmarks"
    timing = {"prepare.tsv": 12.5, "finetune/a/frac1_seed0.tsv": 100.0, "finetune/b/frac1_seed0.tsv": 50.0}
    for name, seconds in timing.items():
        write_csv(bench / name, pd.DataFrame({"s": [seconds], "h:m:s": ["0:00:00"], "max_rss": [1.0]}), sep="\t")
    return RunFiles(prepared_summary=prepared, manifest=manifest, split=split, validity_summary=validity,
                    significance=significance, metrics=metrics, pretrain_histories=histories, benchmarks_dir=bench)


@pytest.fixture
def report(run_files: RunFiles, tmp_path: Path) -> Path:
    """A report from the run files, a table and one real figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure_path = tmp_path / "accuracy_vs_fraction.png"
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0.01, 0.1, 1.0], [0.4, 0.6, 0.8], marker="o")
    figure.savefig(figure_path, dpi=60)
    plt.close(figure)
    table = tmp_path / "label_fractions.md"
    table.write_text("# Label fractions (Table 2)\n\n| Method | 1% |\n|---|---|\n| RGMIM | 0.600 ± 0.010 |\n")
    return write_report(tmp_path / "report.html", tables=[table], figures=[figure_path],
                        config_source=REPO / "workflow_config.yaml", title="phantoms",
                        captions_dir=REPO / "docs" / "captions", files=run_files, repo=REPO)


def test_report_opens_with_what_the_run_shows(report: Path) -> None:
    page = report.read_text(encoding="utf-8")
    assert page.index("What this run shows") < page.index("<h2>Tables</h2>") < page.index("<h2>Figures</h2>")
    text = html.unescape(re.sub(r"<[^>]+>", " ", page))
    # Dataset: counts, skips and duplicates, masks, images per class and split.
    assert "10 images" in text and "1 unreadable" in text and "2 duplicate images dropped (1 duplicate sets" in text
    assert "Lung masks provided with the dataset: 9 of 10 images." in text
    assert "mean 21.5 of 64" in text
    assert "<td>all</td><td>6</td><td>2</td><td>2</td><td>10</td>" in page
    assert "a.png" not in page  # file paths of duplicates (possibly patient-identifying) stay out
    # One sentence per comparison, with its interval; the direction follows the interval.
    assert ("At 1% labels RGMIM (ViT) beats From Scratch (ViT): +0.100 test accuracy (95% CI +0.020 to +0.180, "
            "p = 0.010; 4 vs 2 runs on 120 test images); at 100%: +0.050 [+0.010, +0.090].") in text
    assert "At 1% labels RGMIM (ViT) cannot be told apart from MAE (ViT)" in text
    assert "At 1% labels MAE (ViT) is beaten by From Scratch (ViT): -0.080" in text and "p < 0.001" in text
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
    assert fill_config('ratio ({{ snakemake.config["pretrain"]["mask_ratio"] }})', {"pretrain": {"mask_ratio": 0.9}}) \
        == "ratio (0.9)"
    assert fill_config("{{ snakemake.config['x']['y'] }}", {}) == "?"


def test_provenance_without_git_and_digest_is_canonical(run_files: RunFiles, tmp_path: Path) -> None:
    page = write_report(tmp_path / "r.html", tables=[], figures=[], config_source='{"a": 1, "b": [1, 2]}',
                        title="t", files=run_files, repo=tmp_path).read_text(encoding="utf-8")
    assert "<td>Commit</td><td>unknown</td>" in page  # tmp_path is no git checkout
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1}) != config_digest({"a": 2})
    assert config_digest({"a": 1, "b": [1, 2]}) in page


def test_report_without_summary_inputs_still_builds(tmp_path: Path) -> None:
    page = write_report(tmp_path / "r.html", tables=[], figures=[], config_source='{"a": 1}', title="t",
                        repo=tmp_path).read_text(encoding="utf-8")
    assert "no dataset summary given" in page and "no significance table given" in page


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
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={screenshot}", "--window-size=1200,2000", report.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert screenshot.exists(), result.stderr[-3000:]
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.shape == (2000, 1200)
    dark = pixels < 128  # text, table rules, the figure's axes
    assert dark.mean() > 0.005, "the rendered page is blank"
    assert dark[:300].any(), "nothing rendered at the top of the page (the title and summary)"
