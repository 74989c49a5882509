"""SimSiam, BYOL, SKD and Cross (the joint-embedding family) as a `TrainingMethod` of the shared loop.

Two seeded views per image (`cxrmim.data.views`), the model from `cxrmim.models.joint_embedding`; the stage
(`cxrmim.train.pretrain`, the `contrastive_pretrain` rule) trains it like any other method. The exported backbone
is an `encoder.safetensors` that fine-tuning loads like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrmim import registry
from cxrmim.data.tensors import normalise
from cxrmim.data.views import ViewAugment, two_views
from cxrmim.models.encoders import create_encoder, write_encoder_files
from cxrmim.models.joint_embedding import build_joint_embedding
from cxrmim.train.epoch import EpochRandom
from cxrmim.train.memory import Probe
from cxrmim.train.method_base import SECTION_UNSIGNED_KEYS, MethodBase, RunInputs, check_spec, parameter_count
from cxrmim.train.pretrain_data import PretrainData

log = logging.getLogger("cxrmim.pretrain")

EMBEDDING_COLUMNS = ("embedding_std", "embedding_std_ratio")
VIEW_STREAM = 1  # EpochRandom stream of the augmentation draws
# (method, backbone, settings) -> a module whose forward(view_a, view_b) returns (loss, {"embedding_std": ...}).
ModelFactory = Callable[[str, nn.Module, dict[str, Any]], nn.Module]
# std x sqrt(d) of the normalised embeddings below this: every image maps to (nearly) one point.
COLLAPSE_RATIO = 0.05


class JointEmbedding(MethodBase):
    """A joint-embedding `TrainingMethod`: two augmented views per image, a loss between their embeddings."""

    unsigned_keys = SECTION_UNSIGNED_KEYS  # its settings are its own `contrastive.<method>` block

    def __init__(self, data: PretrainData, method: str, encoder_cfg: dict[str, Any], settings: dict[str, Any],
                 make_model: ModelFactory = build_joint_embedding) -> None:  # fmt: skip
        self.data, self.method, self.encoder_cfg, self.settings = data, method, encoder_cfg, settings
        self.config_section = f"contrastive.{method}"  # named in the memory advice
        self.augment = ViewAugment.from_config(settings.get("augment"))
        self.backbone = create_encoder(encoder_cfg, data.image_size, data.patch_size, num_classes=0)
        self.model = make_model(method, self.backbone, settings)
        self.core = self.model
        self.embedding_dim = int(settings["heads"]["projection_dim"])
        # The loss's parts (SKD, Cross) are per-image means in history.csv next to the collapse statistics.
        self.loss_terms: tuple[str, ...] = tuple(self.model.loss_terms)
        self.stat_names = ("embedding_std", *self.loss_terms)
        self.history_columns = (*EMBEDDING_COLUMNS, *self.loss_terms)

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
        """Methods with a target network (BYOL, SKD, Cross) move it towards the online one; SimSiam has none."""
        self.model.momentum_update(step, total_steps)

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Mean per-dimension std of the normalised embeddings, also relative to a healthy 1/sqrt(d); loss parts.

        A ratio under COLLAPSE_RATIO is logged as a collapse: the loss can still look fine then (SKD's distillation
        is 0 when every similarity is equal), the encoder has learnt nothing.
        """
        images = max(n_images, 1)
        std = sums["embedding_std"] / images
        ratio = std * self.embedding_dim**0.5
        if ratio < COLLAPSE_RATIO:
            log.warning(
                "%s: the embeddings collapsed (std x sqrt(d) = %.3g < %.2g, ~1 when spread); its encoder is not a "
                "useful initialisation: lower base_lr or raise the momentum", self.method, ratio, COLLAPSE_RATIO,
            )  # fmt: skip
        return {"embedding_std": std, "embedding_std_ratio": ratio} | {k: sums[k] / images for k in self.loss_terms}

    def describe(self) -> list[str]:
        """Method, data, augmentation and parameter counts."""
        backbone, trainable = parameter_count(self.backbone), parameter_count(self.model, trainable=True)
        return [
            f"method {self.method}, backbone {self.encoder_cfg['timm_name']}, {len(self.data.images)} images "
            f"{self.data.image_size}px; embedding dim {self.embedding_dim} (collapse: std -> 0, healthy "
            f"~{self.embedding_dim**-0.5:.3f})",
            f"views: {self.augment}",
            f"parameters: backbone {backbone:,}, trainable {trainable:,}",
        ]

    def write_outputs(self, out_dir: Path) -> None:
        """The online backbone's encoder files (`write_encoder_files`: encoder.safetensors and timm/)."""
        write_encoder_files(self.backbone, self.encoder_cfg, self.data.image_size, self.data.patch_size, out_dir)


def build(spec: registry.Method, data: PretrainData, run: RunInputs) -> JointEmbedding:
    """The registry's builder of every joint-embedding method (its model from `cxrmim.models.joint_embedding`)."""
    check_spec(spec, run)
    return JointEmbedding(data, spec.name, run.encoder_cfg, run.settings)
