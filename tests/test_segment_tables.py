"""Tables, verdict, figures and the cross-dataset summary from fake segmentation runs (the seg-contract run folder)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from report_data import SEG_NEGATIVE, SEG_TEST, fake_prepared_lesions, fake_run, fake_segmentation_run

from cxrmim.analysis.figures import FIGURES, write_figures
from cxrmim.analysis.runs import load_runs
from cxrmim.analysis.segmentation_figures import worst_segmentations, write_segmentation_figures
from cxrmim.analysis.significance import init_scores
from cxrmim.analysis.study import write_study
from cxrmim.analysis.tables import summary_metrics, write_tables
from cxrmim.analysis.transfer import load_datasets, summary_table
from cxrmim.analysis.verdict_figures import headline_figure, write_verdict_figures

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = ("rgmim_r0.75_vit-t", "RGMIM", 0.75)
MAE = ("mae_r0.75_vit-t", "MAE", 0.75)
SCRATCH = ("scratch_vit-t", "From Scratch", None)
POSITIVE = [int(i) for i in SEG_TEST if i not in SEG_NEGATIVE]
# (init, fraction, seed) -> pixels each positive test image's prediction is moved (-1: nothing predicted). RGMIM is
# off by 0-1 pixels, scratch by 2-3 and misses one image: clearly better at both budgets; MAE, between them, is
# compared with both (a pretraining against scratch, and between pretrainings: RGMIM against MAE).
SHIFTS = {
    (PRETRAINED, 0.1, 0): dict.fromkeys(POSITIVE, 1),
    (PRETRAINED, 0.1, 1): {i: i % 2 for i in POSITIVE},
    (PRETRAINED, 1.0, 0): dict.fromkeys(POSITIVE, 0) | {POSITIVE[0]: 1},
    (PRETRAINED, 1.0, 1): {i: i % 2 for i in POSITIVE},
    (MAE, 0.1, 0): dict.fromkeys(POSITIVE, 2),
    (MAE, 0.1, 1): dict.fromkeys(POSITIVE, 2) | {POSITIVE[3]: 1},
    (MAE, 1.0, 0): dict.fromkeys(POSITIVE, 2),
    (MAE, 1.0, 1): {i: 1 + i % 2 for i in POSITIVE},
    (SCRATCH, 0.1, 0): dict.fromkeys(POSITIVE, 3),
    (SCRATCH, 0.1, 1): dict.fromkeys(POSITIVE, 3) | {POSITIVE[1]: -1},
    (SCRATCH, 1.0, 0): dict.fromkeys(POSITIVE, 2),
    (SCRATCH, 1.0, 1): dict.fromkeys(POSITIVE, 3) | {POSITIVE[2]: -1},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_prepared_lesions(tmp_path_factory.mktemp("prepared"))


@pytest.fixture(scope="module")
def seg_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("finetune")
    return [
        fake_segmentation_run(root, family, method, ratio, fraction, 0 if ratio else None, seed, shifts)
        for ((family, method, ratio), fraction, seed), shifts in SHIFTS.items()
    ]


@pytest.fixture(scope="module")
def tables_dir(seg_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = yaml.safe_load((REPO / "workflow_config.yaml").read_text())
    out = tmp_path_factory.mktemp("tables")
    settings = {"bootstrap_samples": 300, "seed": 0, "reference": "scratch_vit-t"}
    write_tables(seg_paths, config, out, settings)
    write_study(seg_paths, out, settings)
    return out


def test_per_image_score_is_the_dice_of_positive_test_images(seg_paths: list[Path]) -> None:
    runs = load_runs(seg_paths)
    scratch = runs[(runs["init"] == "scratch_vit-t") & (runs["fraction"] == 0.1)]
    scores, images = init_scores(scratch)
    assert list(images) == POSITIVE  # negatives (NaN dice) are not scored
    assert scores.shape == (2, len(POSITIVE))
    # Run means of the per-image scores are the metrics.json test_dice (the headline metric).
    assert scores.mean(axis=1) == pytest.approx(scratch["test_dice"].to_numpy())
    assert scores[1, 1] == 0.0  # the image scratch missed entirely


def test_label_fraction_table_shows_dice_iou_and_kaggle_dice(tables_dir: Path, seg_paths: list[Path]) -> None:
    text = (tables_dir / "label_fractions.md").read_text()
    assert "Test Dice" in text and "Test IoU" in text and "Test Kaggle Dice" in text
    assert "accuracy by label fraction" not in text
    runs = load_runs(seg_paths)
    dice = runs[(runs["init"] == "rgmim_r0.75_vit-t") & (runs["fraction"] == 0.1)]["test_dice"]
    cell = f"{dice.mean():.3f} ± {dice.std(ddof=1):.3f}"
    section = text[text.index("Test Dice") : text.index("Test IoU")]
    assert re.search(rf"\| RGMIM +\| ViT +\| {re.escape(cell)} ", section)
    ratio = pd.read_csv(tables_dir / "mask_ratio.csv")
    assert "Dice" in ratio.columns and "Accuracy" not in ratio.columns


def test_kaggle_dice_only_where_test_masks_can_be_empty(seg_paths: list[Path]) -> None:
    runs = load_runs(seg_paths)
    assert "test_kaggle_dice" in summary_metrics(runs)
    lungs = runs.assign(test_n_positive=runs["test_n"])  # lung masks: every test image is positive
    assert list(summary_metrics(lungs)) == ["test_dice", "test_iou"]


def test_verdict_says_better_in_dice(tables_dir: Path) -> None:
    verdict = pd.read_csv(tables_dir / "verdict.csv").set_index(["fraction", "init", "reference"])
    rgmim = verdict.xs(("rgmim_r0.75_vit-t", "scratch_vit-t"), level=["init", "reference"])
    assert list(rgmim.index) == [0.1, 1.0] and (rgmim["verdict"] == "better").all()
    assert (rgmim["difference"] > 0.3).all()
    between = verdict.xs(("rgmim_r0.75_vit-t", "mae_r0.75_vit-t"), level=["init", "reference"])
    assert (between["against"] == "MAE").all() and (between["verdict"] == "better").all()
    assert len(verdict) == 2 * 3  # per budget: RGMIM and MAE against scratch, RGMIM against MAE
    text = (tables_dir / "verdict.md").read_text()
    assert "beats training from scratch" in text and "test Dice" in text and "Reference Dice" in text
    assert "accuracy" not in text and "most common class" not in text
    assert f"{len(POSITIVE)} positive test images" in text  # negatives have no Dice: they are not resampled
    intervals = pd.read_csv(tables_dir / "accuracy_intervals.csv")
    assert (intervals["score"] == "Dice").all() and intervals["majority_share"].isna().all()
    significance = (tables_dir / "significance.md").read_text()
    assert "Dice A" in significance and "mean test Dice" in significance
    study = (tables_dir / "study.md").read_text()
    assert "| Dice" in study and "Kaggle Dice" in study and "Dice A − B" in study
    study_significance = pd.read_csv(tables_dir / "study_significance.csv")
    assert (study_significance.loc[study_significance["init_a"] == "rgmim_r0.75_vit-t", "ci_low"] > 0).all()


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels."""
    with Image.open(path) as image:
        return image.size


def test_figures_draw_dice_and_say_why_where_they_cannot(
    tables_dir: Path, seg_paths: list[Path], prepared: Path, tmp_path: Path
) -> None:
    plots = {"dpi": 30}
    written = write_figures(seg_paths, plots, tmp_path)
    assert [p.stem for p in written] == list(FIGURES)
    empty = (5 * 30, 2 * 30)  # the placeholder figure's size
    sizes = {p.stem: png_size(p) for p in written}
    assert sizes["confusion_matrices"] == empty and sizes["auc_vs_fraction"] == empty
    assert sizes["accuracy_vs_fraction"] != empty and sizes["accuracy_vs_epoch"] != empty
    verdict = write_verdict_figures(
        tables_dir / "accuracy_intervals.csv", tables_dir / "significance.csv", plots, tmp_path
    )
    assert all(png_size(p) != empty for p in verdict)
    figure = headline_figure(pd.read_csv(tables_dir / "accuracy_intervals.csv"))
    assert figure.axes[0].get_ylabel() == "test Dice (mean, 95% interval)"
    assert "most common class" not in [line.get_label() for line in figure.axes[0].get_lines()]


def test_worst_segmentations_show_the_k_lowest_dice_per_init(seg_paths: list[Path], prepared: Path) -> None:
    runs = load_runs(seg_paths)
    figure = worst_segmentations(runs.assign(label=runs["method"]), prepared, k=3)
    assert len(figure.axes) == 3 * 3  # a row per init, k panels each
    scratch = runs[(runs["init"] == "scratch_vit-t") & (runs["fraction"] == 1.0) & (runs["seed"] == 0)]
    dice = pd.read_csv(Path(scratch["run_dir"].iloc[0]) / "predictions.csv")["dice"].dropna().sort_values()
    titles = [ax.get_title() for ax in figure.axes[6:]]  # scratch is the last row (paper order)
    assert [float(re.search(r"Dice ([\d.]+)", t).group(1)) for t in titles] == [round(d, 2) for d in dice[:3]]
    assert all(ax.images and ax.collections for ax in figure.axes)  # image, outlines of truth and prediction


def test_worst_segmentations_file_and_its_empty_and_bad_cases(
    seg_paths: list[Path], prepared: Path, tmp_path: Path
) -> None:
    (path,) = write_segmentation_figures(seg_paths, {"dpi": 30}, tmp_path / "seg", prepared, k=2)
    assert path.name == "worst_segmentations.png" and png_size(path) != (150, 60)
    classification = [fake_run(tmp_path / "cls", "scratch_vit-t", "From Scratch", "ViT", None, 1.0, None, 0, 0.5)]
    (empty,) = write_segmentation_figures(classification, {"dpi": 30}, tmp_path / "cls_figures")
    assert png_size(empty) == (150, 60)
    with pytest.raises(ValueError, match="--prepared"):
        write_segmentation_figures(seg_paths, {"dpi": 30}, tmp_path / "x")
    broken = tmp_path / "broken"  # a prepared folder on another grid than the runs' predicted masks
    broken.mkdir()
    np.save(broken / "images.npy", np.zeros((3, 8, 8), np.uint8))
    np.save(broken / "lesion_masks.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="predicted_masks.npy has shape"):
        write_segmentation_figures(seg_paths, {"dpi": 30}, tmp_path / "y", broken)
    np.save(broken / "lesion_masks.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="lesion_masks.npy has shape"):
        write_segmentation_figures(seg_paths, {"dpi": 30}, tmp_path / "z", broken)


def test_figures_script_passes_the_prepared_folder(seg_paths: list[Path], prepared: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("figures_script", REPO / "scripts" / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "figures"
    module.main(["--metrics", *map(str, seg_paths), "--settings", '{"dpi": 30}', "--prepared", str(prepared),
                 "--worst-k", "2", "--out-dir", str(out)])  # fmt: skip
    assert {p.stem for p in out.glob("*.png")} == {*FIGURES, "accuracy_by_budget", "significance_heatmap",
                                                   "worst_segmentations"}  # fmt: skip


def test_transfer_summary_picks_test_dice(seg_paths: list[Path], tmp_path: Path) -> None:
    classification = [fake_run(tmp_path, "scratch_vit-t", "From Scratch", "ViT", None, 1.0, None, 0, 0.5)]
    tidy = summary_table(load_datasets({"mimic": classification, "siim": seg_paths}))
    siim = tidy[tidy["dataset"] == "siim"].set_index(["init", "budget"])
    assert (siim["metric"] == "test_dice").all() and (siim["metric_label"] == "test Dice").all()
    runs = load_runs(seg_paths)
    expected = runs[(runs["init"] == "rgmim_r0.75_vit-t") & (runs["fraction"] == 1.0)]["test_dice"].mean()
    assert siim.loc[("rgmim_r0.75_vit-t", "frac1"), "mean"] == pytest.approx(expected)
    assert tidy.loc[tidy["dataset"] == "mimic", "metric"].iloc[0] == "test_accuracy"
