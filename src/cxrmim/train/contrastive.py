"""SimSiam and BYOL pretraining of a timm backbone on the shared training loop (the `contrastive_pretrain` rule).

This module is the joint-embedding method (`JointEmbedding`) plus the stage's entry point; two seeded views per
image (`cxrmim.data.views`), the model from `cxrmim.models.siamese`, and the loop, checkpoints and DDP of
`cxrmim.train.loop`. The exported backbone is an `encoder.safetensors` that fine-tuning loads like any other.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from cxrmim.cli import parse_json_arg
from cxrmim.data.tensors import normalise
from cxrmim.data.views import ViewAugment, two_views
from cxrmim.device import select_device
from cxrmim.inits import CONTRASTIVE_METHODS
from cxrmim.models.encoders import create_encoder, write_encoder_files
from cxrmim.models.siamese import BYOL, build_siamese
from cxrmim.train.common import seed_everything
from cxrmim.train.distributed import distributed_session
from cxrmim.train.launch import add_run_arguments, report_unfinished, start_run
from cxrmim.train.loop import (
    EpochRandom,
    LoopResult,
    LoopSettings,
    run_training,
)
from cxrmim.train.memory import Probe
from cxrmim.train.pretrain_data import PretrainData, load_pretrain_data

log = logging.getLogger("cxrmim.pretrain")

EMBEDDING_COLUMNS = ("embedding_std", "embedding_std_ratio")
VIEW_STREAM = 1  # EpochRandom stream of the augmentation draws
# Settings keys that do not change the trained weights (the loop signs its own keys itself).
UNSIGNED_KEYS = {"device", "compile", "num_workers", "resources", "data_placement", "grad_checkpointing"}


class JointEmbedding:
    """SimSiam or BYOL as a `TrainingMethod`: two augmented views per image, a loss between their embeddings."""

    stat_names = ("embedding_std",)
    history_columns = EMBEDDING_COLUMNS

    def __init__(self, data: PretrainData, method: str, encoder_cfg: dict[str, Any], settings: dict[str, Any]) -> None:
        self.data, self.method, self.encoder_cfg, self.settings = data, method, encoder_cfg, settings
        self.config_section = f"contrastive.{method}"  # named in the memory advice
        self.augment = ViewAugment.from_config(settings.get("augment"))
        self.backbone = create_encoder(encoder_cfg, data.image_size, data.patch_size, num_classes=0)
        self.model = build_siamese(method, self.backbone, settings)
        self.embedding_dim = int(settings["heads"]["projection_dim"])

    def activation_probes(self) -> list[Probe]:
        """The backbone on both views (BYOL's target runs without gradients; the small heads are not counted)."""
        size = self.augment.view_size or self.data.image_size
        return [Probe(self.backbone, (1, size, size), times=2.0)]

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """The uint8 images; views are made on the device per batch."""
        return {"images": self.data.images}

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """Two seeded views of the normalised images."""
        view_a, view_b = two_views(normalise(batch["images"]), self.augment, rng.stream(VIEW_STREAM))
        return {"view_a": view_a, "view_b": view_b}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """BYOL moves its target network towards the online one after every optimiser step."""
        if isinstance(self.model, BYOL):
            self.model.update_target(step, total_steps)

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Mean per-dimension std of the normalised embeddings, also relative to a healthy 1/sqrt(d)."""
        std = sums["embedding_std"] / max(n_images, 1)
        return {"embedding_std": std, "embedding_std_ratio": std * self.embedding_dim**0.5}

    def signature(self) -> dict[str, Any]:
        """Method, architecture, the method's settings and the data's shape."""
        return {
            "method": self.method,
            "encoder": self.encoder_cfg,
            "settings": {k: v for k, v in self.settings.items() if k not in UNSIGNED_KEYS},
            "n_images": len(self.data.images),
            "image_size": self.data.image_size,
        }

    def describe(self) -> list[str]:
        """Method, data, augmentation and parameter counts."""
        backbone = sum(p.numel() for p in self.backbone.parameters())
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return [
            f"method {self.method}, backbone {self.encoder_cfg['timm_name']}, {len(self.data.images)} images "
            f"{self.data.image_size}px; embedding dim {self.embedding_dim} (collapse: std -> 0, healthy "
            f"~{self.embedding_dim ** -0.5:.3f})",
            f"views: {self.augment}",
            f"parameters: backbone {backbone:,}, trainable {trainable:,}",
        ]

    def write_outputs(self, out_dir: Path) -> None:
        """The online backbone's encoder files (`write_encoder_files`: encoder.safetensors and timm/)."""
        write_encoder_files(self.backbone, self.encoder_cfg, self.data.image_size, self.data.patch_size, out_dir)


def run_contrastive(
    prepared_dir: str | Path,
    split_csv: str | Path,
    validity_npz: str | Path,
    method: str,
    encoder_cfg: dict[str, Any],
    settings: dict[str, Any],
    out_dir: str | Path,
    stop_after_epochs: int | None = None,
) -> tuple[LoopResult, JointEmbedding]:
    """Pretrain, checkpointing every epoch to out_dir/checkpoint.pt and resuming from it when present."""
    if method not in CONTRASTIVE_METHODS:
        raise ValueError(f"unknown contrastive method {method!r}; choose one of {list(CONTRASTIVE_METHODS)}")
    setup = select_device(str(settings.get("device", "auto")))
    loop_settings = LoopSettings.from_settings(settings)
    # The same images (train + val, lung-mask QC applied) as masked-image pretraining.
    data = load_pretrain_data(prepared_dir, split_csv, validity_npz, lung_masks=False)  # views of the images only
    with distributed_session(setup.device.type) as ddp:
        seed_everything(loop_settings.seed)  # identical initial weights on every rank and every resume
        joint = JointEmbedding(data, method, encoder_cfg, settings)
        result = run_training(joint, loop_settings, setup, ddp, Path(out_dir), stop_after_epochs)
    return result, joint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the contrastive_pretrain stage."""
    parser = argparse.ArgumentParser(description="SimSiam / BYOL pretraining of a timm backbone (torchrun-compatible).")
    parser.add_argument("--prepared", required=True, help="prepared cache directory")
    parser.add_argument("--split", required=True, help="split.csv; images whose part is train or val are used")
    parser.add_argument("--validity", required=True, help="validity.npz (its lung-mask QC exclusions apply here too)")
    parser.add_argument("--method", required=True, choices=list(CONTRASTIVE_METHODS))
    add_run_arguments(parser, "JSON (inline or file) of `contrastive.<method>`")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of scripts/contrastive_pretrain.py."""
    args = parse_args(argv)
    settings = start_run(args)
    result, _ = run_contrastive(
        args.prepared, args.split, args.validity, args.method, parse_json_arg(args.encoder), settings, args.out,
        args.stop_after_epochs,
    )  # fmt: skip
    report_unfinished(result.finished)
    return 0
