"""The paper's Table 1: every recipe setting that shapes the results, and the models the runs actually built."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrmim import registry
from cxrmim.data.splits import configured_budgets
from cxrmim.models.description import model_description
from cxrmim.recipe import DEFAULT_BETAS, DEFAULT_RECIPE, JOB_KEYS, LR_REFERENCE_BATCH, FinetuneSettings

# Config keys that do not change a result (where or how fast a job runs, which jobs exist): not in Table 1.
# Every other key of these sections has a row; tests/test_tables.py checks the schema against this list.
NOT_IN_TABLE_1 = {"pretrain": JOB_KEYS, "finetune": JOB_KEYS | {"imagenet_weights"}}
NONE = "–"


def encoder_text(config: dict[str, Any], key: str) -> str:
    """timm name and kwargs of an `encoders:` entry."""
    entry = config.get("encoders", {}).get(key, {})
    kwargs = ", ".join(f"{k}={v}" for k, v in (entry.get("kwargs") or {}).items())
    return f"{key}: {entry.get('timm_name', key)}({kwargs})"


def model_text(runs: pd.DataFrame) -> str:
    """'vit_tiny_patch16_224: ViT, 4 blocks, width 128, 0.68 M parameters' (CNNs: their stages) for the distinct
    models the runs built."""
    texts = []
    for _, model in runs.dropna(subset=["model_timm_name"]).iterrows():
        summary = {
            key: model.get(f"model_{key}")
            for key in ("timm_name", "width", "n_parameters", "stage_blocks", "stage_widths")
        }
        summary["depth"] = None if pd.isna(model["model_depth"]) else model["model_depth"]
        texts.append(model_description(summary))
    return "; ".join(dict.fromkeys(texts)) or NONE


def built_model_rows(runs: pd.DataFrame | None) -> list[tuple[str, Any, Any]]:
    """One row per architecture with the encoder the fine-tuning runs built (without the head), and the input
    normalisation they applied; the pretraining column repeats it where that architecture was pretrained."""
    if runs is None or runs.empty:
        return []
    rows = []
    for architecture, group in runs.groupby("architecture", sort=False):
        text = model_text(group)
        pretrained = group["pretrain_seed"].notna().any()
        rows.append((f"Model built ({architecture})", text if pretrained else NONE, text))
    norms = "; ".join(runs["input_norm"].dropna().unique()) or NONE
    rows.append(("Input normalisation (grey)", norms if runs["pretrain_seed"].notna().any() else NONE, norms))
    if "external" in runs:
        external = runs.dropna(subset=["external"]).drop_duplicates(["init", "external"])
        rows += [(f"External init {r['method']} ({r['init']})", NONE, r["external"]) for _, r in external.iterrows()]
    return rows


def schedule_text(fine: FinetuneSettings) -> str:
    """'warmup + cosine' or 'warmup + steps x0.1 at 0.5, 0.75 of training' (the steps as configured)."""
    steps = f"steps x{fine.lr_gamma:g} at {listed(list(fine.lr_milestones)) or NONE} of training"
    if fine.schedule == "step":
        return f"warmup + {steps}"
    return f"warmup + {fine.schedule}" + (f" (lr_steps unused: {steps})" if fine.lr_milestones else "")


def recipe_rows(recipes: Any) -> list[tuple[str, Any, Any]]:
    """One row per `finetune.recipes` entry: the inits it applies to and the keys it merges over `finetune:`."""
    if not isinstance(recipes, dict):
        return [("Per-init recipes", NONE, listed(recipes))]
    rows = [("Per-init recipes", NONE, f"{DEFAULT_RECIPE} (finetune section) for every init not listed below")]
    for name, recipe in recipes.items():
        keys = {k: v for k, v in recipe.items() if k != "inits"}
        rows.append((f"Recipe {name}: {listed(recipe.get('inits'))}", NONE, settings_text(keys) or "same"))
    return rows


def recipe_label(key: str) -> str:
    """'MRM recipe (mrm, mrm-noreport, mrm-nosr)': a `pretrain:` subsection and the methods that read it."""
    names = [name for name, own in registry.own_sections().items() if own == key]
    first = registry.method(names[0]).label
    return f"{first} recipe" + (f" ({', '.join(names)})" if len(names) > 1 else "")


def settings_text(values: dict[str, Any] | None) -> str | None:
    """{'a': 1, 'b': {'c': 2}} -> 'a 1, b.c 2' (a method's own recipe section on one line)."""
    if not values:
        return None
    parts = []
    for key, value in values.items():
        if isinstance(value, dict):
            parts += [f"{key}.{k} {v}" for k, v in value.items()]
        else:
            parts.append(f"{key} {listed(value)}")
    return ", ".join(parts)


def subset_seeds_text(fractions: dict[str, Any]) -> str | None:
    """'0, 1' plus each configured budget with its own seeds: '0, 1; frac0.01: 0, 1, 2, 3'."""
    configured = configured_budgets(fractions)
    by_budget = [
        f"{tag}: {listed(seeds)}"
        for tag, seeds in (fractions.get("seeds_by_budget") or {}).items()
        if tag in configured
    ]
    return (
        "; ".join([listed(fractions.get("seeds")) or "", *by_budget]) if by_budget else listed(fractions.get("seeds"))
    )


def listed(values: Any) -> str | None:
    """[0.8, 1.0] -> '0.8, 1.0'; None stays None."""
    if values is None:
        return None
    return ", ".join(map(str, values)) if isinstance(values, (list, tuple)) else str(values)


def hyperparameter_table(config: dict[str, Any], runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 1 from the config actually used, pretraining and fine-tuning side by side, then the built models."""
    pre = config.get("pretrain", {})
    fine = FinetuneSettings.from_config(config["finetune"])  # same defaults the training runs applied
    fine_raw = config["finetune"]
    decoder = pre.get("decoder", {})
    pre_augment = pre.get("augment") or {}
    fractions = config.get("label_fractions") or {}
    split = config.get("split") or {}
    validity = config.get("patch_validity") or {}
    own_sections = dict.fromkeys(registry.own_sections().values())  # MRM's, MedIM's recipe subsections
    rows = [
        ("Methods", listed(pre.get("methods")), listed(fine_raw.get("inits"))),
        ("Epochs", pre.get("epochs"), fine.epochs),
        (
            "Batch size (effective)",
            pre.get("effective_batch_size", pre.get("batch_size")),
            fine.effective_batch_size or fine.batch_size,
        ),
        ("Batch per step (accumulation)", pre.get("batch_size"), fine.batch_size),
        ("Base learning rate", pre.get("base_lr"), fine.base_lr),
        ("Peak learning rate", f"base × batch / {LR_REFERENCE_BATCH}", f"base × batch / {LR_REFERENCE_BATCH}"),
        ("Weight decay", pre.get("weight_decay"), fine.weight_decay),
        ("Optimiser", "AdamW", {"adamw": "AdamW", "sgd": "SGD"}.get(fine.optimizer, fine.optimizer)),
        ("SGD momentum", NONE, fine.momentum if fine.optimizer == "sgd" else f"({fine.momentum:g}, unused)"),
        ("Momentum β1, β2", listed(pre.get("betas")), listed(DEFAULT_BETAS) if fine.optimizer == "adamw" else NONE),
        ("Learning-rate schedule", "warmup + cosine", schedule_text(fine)),
        ("Gradient clipping (max norm)", NONE, fine.clip_grad),
        ("Warmup epochs", pre.get("warmup_epochs"), fine.warmup_epochs),
        ("Layer-wise lr decay", NONE, fine.layer_decay),
        ("Drop path", NONE, fine.drop_path),
        ("Minimum optimiser steps", NONE, fine.min_steps),
        ("Fine-tuning modes (full network, probe = head only)", NONE, listed(fine_raw.get("modes", ["full"]))),
        ("Augmentation presets", NONE, listed(fine_raw.get("augment_presets", ["current"]))),
        (
            "Masking-ratio study fine-tuned at",
            NONE,
            "every budget" if fine_raw.get("ratios_at_every_budget") else "100% labels",
        ),
        ("Augmentation: crop scale", listed(pre_augment.get("crop_scale")), listed(fine.crop_scale)),
        ("Augmentation: horizontal flip", pre_augment.get("hflip", False), fine.hflip),
        ("Per-patch normalised target (norm_pix_loss)", pre.get("norm_pix_loss"), NONE),
        ("Patch size T", validity.get("patch_size"), "same"),
        ("Lung-valid patch: coverage above", validity.get("threshold"), NONE),
        ("Image without lung mask", validity.get("no_mask_policy", "fail"), NONE),
        ("Masking ratio σ", pre.get("mask_ratio"), NONE),
        ("Masking ratios studied", listed(pre.get("mask_ratios")), NONE),
        ("Image size", config.get("prepare", {}).get("image_size"), "same"),
        ("Encoder", encoder_text(config, pre.get("encoder", "vit")), "per init (see encoders)"),
        (
            "Decoder (dim, depth, heads)",
            ", ".join(str(decoder.get(k)) for k in ("embed_dim", "depth", "num_heads")),
            NONE,
        ),
        *((recipe_label(key), settings_text(pre.get(key)), NONE) for key in own_sections),
        *(recipe_rows(fine_raw["recipes"]) if "recipes" in fine_raw else []),
        ("Seeds", listed(pre.get("seeds")), subset_seeds_text(fractions)),
        ("Label fractions", NONE, listed(fractions.get("fractions"))),
        (
            "Split: test, validation fraction (seed)",
            f"{split.get('test_fraction')}, {split.get('val_fraction')} ({split.get('seed')})" if split else None,
            "same",
        ),
        *built_model_rows(runs),
    ]
    return pd.DataFrame(
        [(name, NONE if a is None else str(a), NONE if b is None else str(b)) for name, a, b in rows],
        columns=["Hyperparameter", "Pretraining", "Fine-tuning"],
    )
