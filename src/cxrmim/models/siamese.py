"""SimSiam and BYOL around a timm backbone, from lightly's heads, losses and momentum helpers.

Each model's forward takes two augmented views and returns `(loss, stats)` for the shared training loop;
`stats["embedding_std"]` is the per-dimension standard deviation of the L2-normalised projections summed over
the batch (SimSiam's collapse signal: about 1/sqrt(d) when healthy, 0 when collapsed), plus the batch sums of
the model's `loss_terms`. Every model has `momentum_update(step, total_steps)`, called after each optimiser step
(a no-op without a target network), and `from_settings(backbone, settings)` reading its `method_keys`.
SKD (`skd.py`) and Cross (`cross.py`) build on BYOL's online/target pair.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import (
    BYOLPredictionHead,
    BYOLProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def embedding_stats(z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse statistic of one view's projections, summed over the batch (the loop divides by the images)."""
    return {"embedding_std": std_of_l2_normalized(z.detach().float()) * z.shape[0]}


class SimSiam(nn.Module):
    """Chen & He 2021: backbone + 3-layer projector + bottleneck predictor, stop-gradient, symmetric loss."""

    method_keys: ClassVar[tuple[str, ...]] = ()  # settings keys of this method beyond heads and the loop's
    loss_terms: ClassVar[tuple[str, ...]] = ()  # parts of the loss reported as history columns

    @classmethod
    def from_settings(cls, backbone: nn.Module, settings: dict[str, Any]) -> SimSiam:
        """The model of a `contrastive.simsiam` section."""
        return cls(backbone, settings["heads"])

    def __init__(self, backbone: nn.Module, heads: dict[str, Any]) -> None:
        super().__init__()
        features = int(backbone.num_features)
        hidden, out = int(heads["projection_hidden_dim"]), int(heads["projection_dim"])
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(features, hidden, out)
        self.prediction_head = SimSiamPredictionHead(out, int(heads["prediction_hidden_dim"]), out)
        self.criterion = NegativeCosineSimilarity()

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection z, prediction p) of one view."""
        z = self.projection_head(self.backbone(x))
        return z, self.prediction_head(z)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 with D the negative cosine similarity."""
        z_a, p_a = self.project(view_a)
        z_b, p_b = self.project(view_b)
        loss = 0.5 * (self.criterion(p_a, z_b.detach()) + self.criterion(p_b, z_a.detach()))
        return loss, embedding_stats(z_a)

    def momentum_update(self, step: int, total_steps: int) -> None:
        """No target network: nothing to move."""


class BYOL(nn.Module):
    """Grill et al. 2020: online network with predictor regresses a momentum (EMA) target network's projection."""

    method_keys: ClassVar[tuple[str, ...]] = ("momentum",)
    loss_terms: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_settings(cls, backbone: nn.Module, settings: dict[str, Any]) -> BYOL:
        """The model of a `contrastive.byol` section (momentum: tau start and end of the cosine schedule)."""
        return cls(backbone, settings["heads"], target_momentum(settings))

    def __init__(self, backbone: nn.Module, heads: dict[str, Any], momentum: tuple[float, float]) -> None:
        super().__init__()
        features = int(backbone.num_features)
        hidden, out = int(heads["projection_hidden_dim"]), int(heads["projection_dim"])
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(features, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, int(heads["prediction_hidden_dim"]), out)
        # The target starts as a copy and only moves by the EMA update; its state is in the checkpoint.
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.momentum = momentum
        self.criterion = NegativeCosineSimilarity()

    def online(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projection z, prediction p) of the online network."""
        z = self.projection_head(self.backbone(x))
        return z, self.prediction_head(z)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Projection of the momentum network (no gradient)."""
        return self.projection_head_momentum(self.backbone_momentum(x))

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetrised negative cosine similarity between online predictions and target projections."""
        z_a, p_a = self.online(view_a)
        _, p_b = self.online(view_b)
        loss = 0.5 * (self.criterion(p_a, self.target(view_b)) + self.criterion(p_b, self.target(view_a)))
        return loss, embedding_stats(z_a)

    @torch.no_grad()
    def momentum_update(self, step: int, total_steps: int) -> None:
        """EMA of the online weights with BYOL's cosine momentum schedule tau: base -> end over training.

        `step` counts optimiser steps done (1 after the first), lightly's schedule counts from 0.
        """
        tau = cosine_schedule(step - 1, max(total_steps, 1), self.momentum[0], self.momentum[1])
        update_momentum(self.backbone, self.backbone_momentum, m=tau)
        update_momentum(self.projection_head, self.projection_head_momentum, m=tau)


def target_momentum(settings: dict[str, Any]) -> tuple[float, float]:
    """(start, end) of the EMA momentum's cosine schedule; BYOL's end 1, start 0.99 unless configured."""
    momentum = settings.get("momentum", (0.99, 1.0))
    return float(momentum[0]), float(momentum[1])
