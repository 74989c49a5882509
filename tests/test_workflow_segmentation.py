"""Dense transfer on real images: the Cohen COVID collection's human-reviewed lung masks segmented through the
workflow, from a tiny pretrained encoder and from scratch (issue 26's integration test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY_CONFIG, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

INITS = ("mae_r0.75_vit-tiny_s0", "scratch_vit-tiny")


def test_real_lung_masks_segmented_from_a_pretrained_and_a_scratch_encoder(tmp_path: Path, realdata: Path):
    csv = realdata / "cohen_covid_lungmasks" / "manifest.csv"
    labels = pd.read_csv(csv)["label"].unique()
    override = {
        "dataset": {"name": "cohen_seg", "kind": "manifest", "source": str(csv), "task": "segmentation",
                    "segment": "lung", "label_map": {v: "Other" for v in labels if v != "COVID-19"}},
        "prepare": {"image_size": 32, "workers": 2},
        "pretrain": {"methods": ["mae"], "mask_ratios": [0.75]},
        "finetune": {"inits": ["mae", "scratch_vit-tiny"], "epochs": 6, "min_steps": 40},
        "label_fractions": {"fractions": [1.0], "seeds": [0]},
    }  # fmt: skip
    config = tmp_path / "cohen_seg.yaml"
    config.write_text(yaml.safe_dump(override))
    snakemake(tmp_path, configs=(TINY_CONFIG, config))
    results = tmp_path / "results" / "cohen_seg"
    masks = np.load(results / "prepared" / "masks.npy")
    split = pd.read_csv(results / "split" / "split.csv")
    test = masks[split.loc[split["part"] == "test", "index"].to_numpy()] > 0
    # Predicting lung everywhere: what a model that learned nothing about where the lungs are could score.
    everywhere = float(np.mean([2 * m.sum() / (m.sum() + m.size) for m in test if m.any()]))
    for init in INITS:
        run = results / "finetune" / init / "frac1_seed0"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["task"] == "segmentation" and metrics["segment"] == "lung"
        assert metrics["test"]["n_positive"] == len(test) > 0
        assert metrics["test"]["dice"] > everywhere, (init, metrics["test"], everywhere)
        assert np.load(run / "predicted_masks.npy").shape == test.shape
    verdict = (results / "tables" / "verdict.md").read_text()
    assert "Dice" in verdict and "positive test images" in verdict
    assert (results / "figures" / "worst_segmentations.png").stat().st_size > 10_000
    # The predicted masks are rule segment's declared output and the figure's input: one deleted, redrawing the
    # figure plans that segment job (and no finetune job, which a segmentation dataset never has).
    predicted = results / "finetune" / INITS[1] / "frac1_seed0" / "predicted_masks.npy"
    predicted.unlink()
    planned = snakemake(tmp_path, "-n", "--forcerun", "figures", configs=(TINY_CONFIG, config)).stdout
    assert re.search(r"^segment\s+1$", planned, flags=re.M) and re.search(r"^figures\s+1$", planned, flags=re.M)
    assert not re.search(r"^finetune\s+\d+$", planned, flags=re.M), planned
