"""Masked image modeling pretraining (RGMIM, RGMIM-lung or MAE masking; MRM and MedIM via
`cxrmim.train.report_pretrain`) on the shared training loop.

This module is the MIM method (`MaskedImageModeling`) plus the stage's entry point; the loop, checkpointing
and distributed setup live in `cxrmim.train.loop`, `.checkpoint` and `.distributed`, the data in
`cxrmim.train.pretrain_data`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from cxrmim.cli import parse_json_arg
from cxrmim.device import select_device
from cxrmim.inits import PRETRAIN_METHODS
from cxrmim.io import atomic_path
from cxrmim.models.encoders import write_encoder_files
from cxrmim.models.mae import MaskedAutoencoder, build_mae
from cxrmim.models.masking import METHOD_MASKING, MaskPlan, lung_batch_masked
from cxrmim.train.common import seed_everything
from cxrmim.train.distributed import distributed_session
from cxrmim.train.launch import add_run_arguments, report_unfinished, start_run
from cxrmim.train.loop import EpochRandom, LoopSettings, run_training
from cxrmim.train.memory import Probe, mae_probes
from cxrmim.train.pretrain_data import PretrainData, batch_inputs, load_pretrain_data

log = logging.getLogger("cxrmim.pretrain")

MASKING_COLUMNS = ("fallback_count", "fallback_fraction", "visible_lung_fraction")
HISTORY_COLUMNS = ["epoch", "loss", "lr", "images_per_s", *MASKING_COLUMNS, "seconds"]
# `pretrain:` keys that do not change the trained weights (or are the loop's, which signs them itself).
UNSIGNED_KEYS = {"device", "compile", "num_workers", "resources", "methods", "mask_ratios", "mask_ratio", "encoder", "seeds",
                 "data_placement", "grad_checkpointing"}
MASK_STREAM, AUGMENT_STREAM = 0, 1  # EpochRandom streams


class MaskedImageModelingStep(nn.Module):
    """The loop's model: a masked autoencoder whose forward returns its loss and the masking statistics."""

    def __init__(self, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, images: torch.Tensor, plan: MaskPlan, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss plus, summed over the batch: fallback images, lung-valid patches and the visible ones among them."""
        loss, _, _ = self.mae(images, plan=plan)
        visible = plan.mask < 0.5
        stats = {"fallback": plan.fallback.sum(), "visible_lung": (valid & visible).sum(), "lung": valid.sum()}
        return loss, stats


class MaskedImageModeling:
    """RGMIM / MAE as a `TrainingMethod`: augmented images, a seeded mask per batch, MAE reconstruction loss."""

    stat_names = ("fallback", "visible_lung", "lung")
    history_columns = MASKING_COLUMNS

    def __init__(self, data: PretrainData, method: str, mask_ratio: float, encoder_cfg: dict, settings: dict) -> None:
        self.data, self.method, self.mask_ratio = data, method, mask_ratio
        self.encoder_cfg, self.settings = encoder_cfg, settings
        self.augment = settings.get("augment") or None
        self.mae = build_mae(encoder_cfg, data.image_size, data.patch_size, METHOD_MASKING[method], mask_ratio, settings)
        self.model = MaskedImageModelingStep(self.mae)
        # lung_ratio shares one masked count for the whole run (max_i k_i over the un-augmented validity), so no
        # step reads it from the device and every batch has the same shapes; other strategies use their own.
        self.n_masked = lung_batch_masked(data.valid, mask_ratio) if self.mae.masking_name == "lung_ratio" else None

    def activation_probes(self) -> list[Probe]:
        """The parts whose activations the memory estimate counts (`cxrmim.train.memory`)."""
        return mae_probes(self.mae, self.mask_ratio)

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """Images plus masks (augmented runs) or the validity map."""
        return self.data.loader_tensors(self.augment)

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """Normalise and augment the images, recompute their validity, draw the mask."""
        images, valid = batch_inputs(batch, self.data, self.augment, rng.stream(AUGMENT_STREAM))
        plan = self.mae.plan_masking(images.shape[0], valid, rng.stream(MASK_STREAM), images.device, self.n_masked)
        return {"images": images, "plan": plan, "valid": valid}

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Fallback count and share of images; share of lung-valid patches the encoder saw."""
        return {
            "fallback_count": int(sums["fallback"]),
            "fallback_fraction": sums["fallback"] / n_images,
            "visible_lung_fraction": sums["visible_lung"] / max(sums["lung"], 1.0),
        }

    def signature(self) -> dict[str, Any]:
        """Method, ratio, architecture, the MIM settings and the data's shape."""
        return {
            "method": self.method,
            "mask_ratio": self.mask_ratio,
            "encoder": self.encoder_cfg,
            "settings": {k: v for k, v in self.settings.items() if k not in UNSIGNED_KEYS},
            "n_images": len(self.data.images),
            "image_size": self.data.image_size,
            "patch_size": self.data.patch_size,
        }

    def describe(self) -> list[str]:
        """Method, masking, data and parameter counts."""
        data, mae = self.data, self.mae
        encoder = sum(p.numel() for p in mae.encoder.parameters())
        total = sum(p.numel() for p in mae.parameters())
        trainable = sum(p.numel() for p in mae.parameters() if p.requires_grad)
        return [
            f"method {self.method} ({mae.masking_name} masking), mask ratio {self.mask_ratio:.2f}, "
            f"{len(data.images)} images {data.image_size}px, patch {data.patch_size}"
            + (f", {self.n_masked} masked patches per image" if self.n_masked is not None else ""),
            f"parameters: encoder {encoder:,}, decoder {total - encoder:,}, trainable {trainable:,}",
        ]

    def write_outputs(self, out_dir: Path) -> None:
        """The encoder files (`write_encoder_files`) and autoencoder.safetensors (full MAE, for figures)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        save_autoencoder(self.mae, self.encoder_cfg, out_dir / "autoencoder.safetensors")
        write_encoder_files(self.mae.encoder, self.encoder_cfg, self.mae.image_size, self.mae.patch_size, out_dir)


def save_autoencoder(model: MaskedAutoencoder, encoder_cfg: dict[str, Any], path: Path) -> None:
    """Full MAE weights as safetensors, with the construction recipe as metadata (for figures)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"mae": json.dumps(model.construction_metadata(encoder_cfg))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


@dataclass
class PretrainResult:
    """What a call to `run_pretraining` did."""

    finished: bool
    history: list[dict[str, float]]
    model: nn.Module  # the MaskedAutoencoder (MIM) or the report-aware model (MRM, MedIM)
    out_dir: Path
    epochs_run: int = 0


def run_pretraining(
    prepared_dir: str | Path,
    split_csv: str | Path,
    validity_npz: str | Path,
    method: str,
    mask_ratio: float,
    encoder_cfg: dict[str, Any],
    settings: dict[str, Any],
    out_dir: str | Path,
    stop_after_epochs: int | None = None,
    tokenizer: str | Path | None = None,
    text: dict[str, Any] | None = None,
) -> PretrainResult:
    """Pretrain, checkpointing every epoch to out_dir/checkpoint.pt and resuming from it when present.

    MRM / MedIM (`tokenizer`, `text`: the tokenizer file and `text:` config section) train through the same loop.
    """
    if method not in PRETRAIN_METHODS:
        raise ValueError(f"unknown pretraining method {method!r}; choose one of {sorted(PRETRAIN_METHODS)}")
    setup = select_device(str(settings.get("device", "auto")))
    loop_settings = LoopSettings.from_settings(settings)
    # MRM and MedIM mask at random or by the report: they never read the lung masks.
    data = load_pretrain_data(prepared_dir, split_csv, validity_npz, lung_masks=method in METHOD_MASKING)
    with distributed_session(setup.device.type) as ddp:
        seed_everything(loop_settings.seed)  # identical initial weights on every rank and every resume
        if method in METHOD_MASKING:
            mim = MaskedImageModeling(data, method, mask_ratio, encoder_cfg, settings)
        else:
            from cxrmim.train.report_pretrain import (
                build_report_method,  # text stack only for report methods
            )

            mim = build_report_method(method, data, mask_ratio, encoder_cfg, settings, prepared_dir, tokenizer, text)
        result = run_training(mim, loop_settings, setup, ddp, Path(out_dir), stop_after_epochs)
    model = mim.mae if method in METHOD_MASKING else mim.core
    return PretrainResult(result.finished, result.history, model, Path(out_dir), result.epochs_run)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the pretrain stage."""
    parser = argparse.ArgumentParser(
        description="MAE / RGMIM pretraining of a ViT on the prepared chest X-ray cache (torchrun-compatible).",
    )
    parser.add_argument("--prepared", required=True, help="prepared cache directory (images.npy, masks.npy, manifest.csv)")
    parser.add_argument("--split", required=True, help="split.csv; images whose part is train or val are used")
    parser.add_argument("--validity", required=True, help="validity.npz of the patch_validity stage")
    parser.add_argument("--method", required=True, choices=sorted(PRETRAIN_METHODS), help="rgmim = region, rgmim-lung = lung_ratio, mae = random masking; mrm(-noreport|-nosr), medim read the reports")
    parser.add_argument("--mask-ratio", required=True, type=float, help="fraction of patches to mask, e.g. 0.75")
    add_run_arguments(parser, "JSON (inline or file) of the `pretrain:` config section")
    parser.add_argument("--tokenizer", default=None, help="tokenizer JSON of the tokenizer rule (mrm, mrm-nosr, medim)")
    parser.add_argument("--text", default=None, help="JSON (inline or file) of the `text:` config section (report methods)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of scripts/pretrain.py."""
    args = parse_args(argv)
    settings = start_run(args)
    result = run_pretraining(
        args.prepared, args.split, args.validity, args.method, args.mask_ratio,
        parse_json_arg(args.encoder), settings, args.out, args.stop_after_epochs,
        args.tokenizer, parse_json_arg(args.text) if args.text else None,
    )  # fmt: skip
    report_unfinished(result.finished)
    return 0
