"""Pretraining figures from constructed inputs: every masking strategy illustrated, masking shares plotted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxrmim.analysis.pretrain_figures import Examples, masking_title, plot_loss_curves, plot_masking_illustration
from cxrmim.models.masking import MASKING

DPI = 40


def history(run_dir: Path, shares: bool) -> Path:
    """A three-epoch pretraining history, with or without the masking-share columns."""
    run_dir.mkdir(parents=True)
    frame = pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.7, 0.6]})
    if shares:
        frame = frame.assign(fallback_fraction=[0.2, 0.1, 0.1], visible_lung_fraction=[0.3, 0.25, 0.25])
    frame.to_csv(run_dir / "history.csv", index=False)
    return run_dir


def test_masking_titles_name_the_methods() -> None:
    assert masking_title("region") == "region masking (RGMIM)"
    assert masking_title("random") == "random masking (MAE)"
    assert masking_title("made_up") == "made up masking"


def test_loss_figure_adds_the_masking_shares_when_recorded(tmp_path: Path) -> None:
    old = [history(tmp_path / "mae_r0.75_vit_s0", shares=False)]
    plot_loss_curves(old, tmp_path / "old.png", DPI)
    plot_loss_curves([*old, history(tmp_path / "rgmim_r0.75_vit_s0", shares=True)], tmp_path / "new.png", DPI)
    assert Image.open(tmp_path / "old.png").size[0] == round(6.4 * DPI)  # loss only: older histories still plot
    assert Image.open(tmp_path / "new.png").size[0] == round(12.0 * DPI)  # loss and the shares panel


def test_masking_illustration_has_a_column_per_strategy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, size, patch = 2, 32, 8
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[:, 8:24, 4:28] = 1
    valid = masks.reshape(n, size // patch, patch, size // patch, patch).max(axis=(2, 4)).reshape(n, -1) > 0
    examples = Examples(rng.integers(0, 255, (n, size, size), dtype=np.uint8), masks, valid, ["a", "b"], patch)
    plot_masking_illustration(examples, 0.75, tmp_path / "masking.png", DPI)
    width = Image.open(tmp_path / "masking.png").size[0]
    assert width == round(2.4 * (2 + len(MASKING)) * DPI)  # original, lung mask, then one per strategy
