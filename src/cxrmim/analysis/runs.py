"""Collect fine-tuning runs (metrics.json + history.csv + predictions.csv) into tables for analysis."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim import registry
from cxrmim.external_formats import summary_text
from cxrmim.recipe import DEFAULT_RECIPE

# Row order of the paper's Table 2: self-supervised methods first, then the baselines (cxrmim.registry); others last.
# A published encoder's rows carry its config label and take the place of its init kind (registry.place_label).
METHOD_ORDER = registry.label_order()
ARCHITECTURE_ORDER = ["ViT", "ResNet-50"]
IDENTITY = ["method", "architecture", "init", "mask_ratio", "fraction", "pretrain_seed", "seed"]
PRETRAIN_SEED_SUFFIX = re.compile(r"_s\d+$")  # `<method>_r<ratio>_<encoder>_s<seed>` (cxrmim.inits)
# Last-epoch pretraining measures shown in Table 3 and the report (older histories lack them).
PRETRAIN_MEASURES = ["fallback_fraction", "visible_lung_fraction"]


def load_runs(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: identity columns, n_labels, best_epoch, val_* and test_* metrics, run_dir."""
    rows = []
    for path in metrics_paths:
        path = Path(path)
        metrics = json.loads(path.read_text())
        row = {key: metrics.get(key) for key in (*IDENTITY, "best_epoch")}
        # One row label per init family: the runs of every pretraining seed are replicates of one init.
        row["run_init"] = row["init"]
        if row["pretrain_seed"] is not None:
            row["init"] = init_family(row["init"])
        row.update(built_model(metrics))
        for part in ("val", "test"):
            row.update({f"{part}_{k}": v for k, v in (metrics.get(part) or {}).items()})
        # Runs written before tasks, modes and presets existed were multiclass, full-network, `current` runs.
        row["task"] = metrics.get("task", "multiclass")
        row["mode"] = metrics.get("mode", "full")
        row["augment"] = metrics.get("augment", "current")
        row["augment_applied"] = metrics.get("augment_applied", row["augment"])  # what `native` resolved to
        row["budget"] = metrics.get("budget") or f"frac{row['fraction']:g}"
        row["n_labels"] = metrics.get("n_labels", metrics.get("n_train"))  # n_train: files written before n_labels
        row["recipe"] = metrics.get("recipe", DEFAULT_RECIPE)  # runs before per-init recipes: the one recipe
        row["external"] = summary_text(metrics["external"]) if metrics.get("external") else None
        row["run_dir"] = str(path.parent)
        rows.append(row)
    if not rows:
        raise ValueError("no metrics.json files given")
    runs = pd.DataFrame(rows)
    runs["mask_ratio"] = pd.to_numeric(runs["mask_ratio"], errors="coerce")
    numeric = [c for c in runs.columns if c.startswith(("val_", "test_"))]
    runs[numeric] = runs[numeric].apply(pd.to_numeric, errors="coerce")  # JSON null (undefined AUC) -> NaN
    return sort_runs(runs)


def init_family(name: str) -> str:
    """A pretrained init without its pretraining seed: rgmim_r0.75_vit-cpu_s1 -> rgmim_r0.75_vit-cpu."""
    return PRETRAIN_SEED_SUFFIX.sub("", name)


def numbers(values: Iterable[float]) -> str:
    """[0.5] -> '0.5'; [0.485, 0.456] -> '0.485/0.456'."""
    return "/".join(f"{float(v):g}" for v in values)


def built_model(metrics: dict) -> dict:
    """The encoder a run actually built and its input normalisation (None where metrics.json predates them)."""
    model = metrics.get("model") or {}
    norm = metrics.get("input_norm") or {}
    return {
        "model_timm_name": model.get("timm_name"),
        "model_depth": model.get("depth"),
        "model_width": model.get("width"),
        "model_n_parameters": model.get("n_parameters"),
        "model_stage_blocks": model.get("stage_blocks"),  # CNNs (None for ViTs and older metrics.json)
        "model_stage_widths": model.get("stage_widths"),
        "input_norm": f"mean {numbers(norm['mean'])}, std {numbers(norm['std'])}" if norm.get("mean") else None,
        "device": metrics.get("device"),
    }


def load_pretrain_histories(history_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per pretraining run: name, init family, epochs and the last epoch's PRETRAIN_MEASURES (NaN if absent)."""
    rows = []
    for path in history_paths:
        path = Path(path)
        history = pd.read_csv(path)
        if history.empty:
            raise ValueError(f"{path}: pretraining history has no epochs; re-run its pretrain job")
        last = history.iloc[-1]
        rows.append(
            {
                "run": path.parent.name,
                "init": init_family(path.parent.name),
                "epochs": int(last["epoch"]) if "epoch" in history else len(history),
                **{m: float(last[m]) if m in history else float("nan") for m in PRETRAIN_MEASURES},
            }
        )
    return pd.DataFrame(rows, columns=["run", "init", "epochs", *PRETRAIN_MEASURES])


def default_variant(runs: pd.DataFrame, finetune_cfg: dict[str, Any]) -> pd.DataFrame:
    """Runs of the first configured mode and preset: the paper's tables compare inits, not variants."""
    mode = (finetune_cfg.get("modes") or ["full"])[0]
    preset = (finetune_cfg.get("augment_presets") or ["current"])[0]
    return runs[(runs["mode"] == mode) & (runs["augment"] == preset)]


def rank(values: pd.Series, order: list[str]) -> pd.Series:
    """Position in a preferred order; unknown values go last (alphabetically among themselves)."""
    return values.map(lambda v: order.index(v) if v in order else len(order))


def method_rank(runs: pd.DataFrame) -> pd.Series:
    """Position of each run's method in METHOD_ORDER; a published encoder's label takes its init kind's place."""
    places = [registry.place_label(m, i) for m, i in zip(runs["method"], runs["init"])]
    return rank(pd.Series(places, index=runs.index, dtype=object), METHOD_ORDER)


def sort_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Paper order: method, architecture, then init, fraction, pretraining seed and subset seed."""
    keyed = runs.assign(_m=method_rank(runs), _a=rank(runs["architecture"], ARCHITECTURE_ORDER))
    keyed = keyed.sort_values(["_m", "method", "_a", "architecture", "init", "fraction", "pretrain_seed", "seed"])
    return keyed.drop(columns=["_m", "_a"]).reset_index(drop=True)


def main_runs(runs: pd.DataFrame, mask_ratio: float | None) -> pd.DataFrame:
    """Runs of the label-fraction study: drop pretrained inits of other masking ratios (the ratio study).

    `mask_ratio` is pretrain.mask_ratio; when None it is inferred from the runs.
    """
    if mask_ratio is None:
        mask_ratio = infer_main_mask_ratio(runs)
    if mask_ratio is None:
        return runs
    keep = runs["mask_ratio"].isna() | np.isclose(runs["mask_ratio"].fillna(-1.0), mask_ratio)
    return runs[keep]


def infer_main_mask_ratio(runs: pd.DataFrame) -> float | None:
    """The masking ratio of the label-fraction study: the pretrained ratio fine-tuned at the most fractions.

    The ratio study fine-tunes the other ratios at 100% labels only. None (keep every ratio) when it is a tie.
    """
    pretrained = runs[runs["mask_ratio"].notna()]
    if pretrained.empty:
        return None
    counts = pretrained.groupby("mask_ratio")["fraction"].nunique().sort_values(ascending=False)
    if len(counts) > 1 and counts.iloc[0] == counts.iloc[1]:
        return None
    return float(counts.index[0])


def fraction_label(fraction: float) -> str:
    """0.05 -> '5%'."""
    return f"{fraction * 100:g}%"


def init_label(runs: pd.DataFrame) -> pd.Series:
    """'Method (Architecture)' per run, with the init name added where that pair is not unique."""
    label = runs["method"] + " (" + runs["architecture"] + ")"
    inits_per_label = runs.groupby(label)["init"].transform("nunique")
    return label.where(inits_per_label <= 1, label + " [" + runs["init"] + "]")


def load_history(runs: pd.DataFrame) -> pd.DataFrame:
    """All runs' history.csv rows, each tagged with its run's identity."""
    frames = []
    for _, run in runs.iterrows():
        history = pd.read_csv(Path(run["run_dir"]) / "history.csv")
        frames.append(history.assign(**{key: run[key] for key in IDENTITY}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_predictions(run_dir: str | Path) -> pd.DataFrame:
    """A run's test predictions, indexed by cache index."""
    return pd.read_csv(Path(run_dir) / "predictions.csv", keep_default_na=False).set_index("index").sort_index()


def correctness(run_dir: str | Path) -> pd.Series:
    """1.0 where the selected checkpoint classified the test image correctly, indexed by cache index."""
    predictions = load_predictions(run_dir)
    truth = predictions["target"] if "target" in predictions else predictions["label"]  # binary: 0/1 target
    return (predictions["pred"].astype(str) == truth.astype(str)).astype(float)


def positive_dice(run_dir: str | Path) -> pd.Series:
    """Per-image test Dice of a segmentation run's positive images (non-empty truth), indexed by cache index."""
    path = Path(run_dir) / "predictions.csv"
    predictions = pd.read_csv(path).set_index("index").sort_index()  # default NA parsing: dice is NaN on negatives
    missing = {"positive", "dice"} - set(predictions.columns)
    if missing:
        raise ValueError(f"{path}: no {sorted(missing)} column; a segmentation run writes positive and dice per image")
    dice = pd.to_numeric(predictions.loc[predictions["positive"].astype(int) == 1, "dice"], errors="coerce")
    if dice.empty or dice.isna().any():
        raise ValueError(f"{path}: needs a numeric dice on every positive test image (found {len(dice)} positives)")
    return dice.astype(float)


# The per-image score the bootstrap resamples and its name in the text: 0/1 correctness for classification
# (whose mean is the accuracy), Dice of the positive test images for segmentation (whose mean is test_dice).
SCORES = {"segmentation": (positive_dice, "dice", "Dice")}
CLASSIFICATION_SCORE = (correctness, "accuracy", "accuracy")


def task_of(runs: pd.DataFrame) -> str:
    """The one task of a set of runs (an error naming them when they mix tasks)."""
    tasks = sorted(set(runs["task"]))
    if len(tasks) != 1:
        raise ValueError(f"runs of several tasks {tasks} cannot be compared; give each task its own dataset")
    return tasks[0]


def score_name(runs: pd.DataFrame) -> str:
    """'accuracy' or 'Dice': what the per-image score of these runs averages to (accuracy for no runs)."""
    return SCORES.get(task_of(runs), CLASSIFICATION_SCORE)[2] if len(runs) else CLASSIFICATION_SCORE[2]


def score_metric(runs: pd.DataFrame) -> str:
    """The metrics.json key of that score: 'accuracy' or 'dice' (test_<key> and val_<key> in the runs)."""
    return SCORES.get(task_of(runs), CLASSIFICATION_SCORE)[1] if len(runs) else CLASSIFICATION_SCORE[1]


def image_scores(run_dir: str | Path, task: str) -> pd.Series:
    """A run's per-image test score for its task, indexed by cache index."""
    return SCORES.get(task, CLASSIFICATION_SCORE)[0](run_dir)
