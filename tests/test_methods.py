"""Every registry method, one tiny epoch each: it trains, writes the files its entry promises, and fine-tunes.

Parametrised over `cxrmim.registry.METHODS`, so a new method is covered the moment it is declared (its recipe comes
from workflow_config.yaml, shrunk to a tiny model).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from report_data import TEXT, build_phantom_reports

from cxrmim import registry
from cxrmim.config import load_config
from cxrmim.inits import parse_init, pretrain_run_name
from cxrmim.plan import Plan
from cxrmim.recipe import FinetuneSettings
from cxrmim.train.finetune import finetune
from cxrmim.train.finetune_data import load_finetune_data
from cxrmim.train.pretrain import run_pretraining

TINY_VIT = {
    "timm_name": "vit_tiny_patch16_224",
    "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
}
SMALL_RESNET = {"timm_name": "resnet10t", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}
TINY_TEXT = {"embed_dim": 16, "depth": 1, "num_heads": 2}
# What makes any method's recipe tiny: one short epoch on CPU, tiny decoder and text encoder.
TINY = {"epochs": 1, "batch_size": 8, "effective_batch_size": 8, "warmup_epochs": 0, "device": "cpu",
        "compile": False, "num_workers": 0, "seed": 0}  # fmt: skip
FINETUNE = {"epochs": 1, "batch_size": 8, "base_lr": 1e-2, "weight_decay": 0.05, "layer_decay": 0.75,
            "drop_path": 0.0, "warmup_epochs": 0, "min_steps": 1, "augment": {"crop_scale": [0.9, 1.0], "hflip": False},
            "device": "cpu"}  # fmt: skip


def tiny_settings(method: registry.Method) -> dict:
    """The method's settings as the workflow builds them from workflow_config.yaml, at a tiny size."""
    settings = {**Plan(load_config()).method_settings(method.name, drop=("methods", "mask_ratios", "seeds")), **TINY}
    if method.family != registry.JOINT:
        settings["decoder"] = {"embed_dim": 16, "depth": 1, "num_heads": 2}
    own = registry.own_sections().get(method.name)
    if own and "text" in settings[own]:
        settings[own] = {**settings[own], "text": TINY_TEXT}
    return settings


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Phantoms with reports and a tokenizer (32 px, patch 8), plus a label subset of the training part."""
    root = tmp_path_factory.mktemp("corpus")
    paths = build_phantom_reports(root, n_images=32)
    split = pd.read_csv(paths["split"], keep_default_na=False)
    split[split["part"] == "train"][["index", "id", "label"]].to_csv(root / "subset.csv", index=False)
    return paths | {"subset": root / "subset.csv"}


@pytest.mark.slow
@pytest.mark.parametrize("method", registry.METHODS, ids=lambda m: m.name)
def test_method_trains_writes_its_outputs_and_fine_tunes(corpus: dict[str, Path], tmp_path: Path,
                                                         method: registry.Method) -> None:  # fmt: skip
    encoder = SMALL_RESNET if method.family == registry.JOINT else TINY_VIT
    ratio = 0.75 if method.has_mask_ratio else None
    out = tmp_path / pretrain_run_name(method.name, ratio, "tiny", 0)
    reports = {"tokenizer": corpus["tokenizer"], "text": TEXT} if method.reads_reports else {}
    result = run_pretraining(corpus["prepared"], corpus["split"], corpus["validity"], method.name, ratio, encoder,
                             tiny_settings(method), out, **reports)  # fmt: skip
    assert result.finished and result.epochs_run == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(method.outputs)
    history = pd.read_csv(out / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "lr", "images_per_s", *result.method.history_columns, "seconds"]
    assert math.isfinite(history["loss"].iloc[0])

    data = load_finetune_data(corpus["prepared"], corpus["split"], corpus["subset"])
    init = parse_init(out.name)
    tuned = finetune(data, init, encoder, FinetuneSettings.from_config(FINETUNE), seed=0, fraction=1.0,
                     weights=str(out / "encoder.safetensors"), patch_size=None)  # fmt: skip
    assert tuned.metrics["method"] == method.label and tuned.metrics["init"] == out.name
    assert 0.0 <= tuned.metrics["test"]["accuracy"] <= 1.0
