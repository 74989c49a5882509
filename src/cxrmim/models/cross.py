"""Cross (Li, Togo, Ogawa, Haseyama, IJCARS 2022; RGMIM's "cross-view self-supervised learning").

A teacher-student pair as in BYOL (online network with predictor, EMA target network) trained with two
losses: the cross-view loss (the online prediction of one view regresses the target projection of the other)
and the cross-model loss (it also matches the target's projection of the same view). The paper's method
section was not available to us; docs/skd-cross.md says what is our reading and why.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from cxrmim.models.siamese import BYOL, embedding_stats, target_momentum


class Cross(BYOL):
    """Cross-view + weight x cross-model negative cosine similarity between online predictions and the target."""

    method_keys: ClassVar[tuple[str, ...]] = ("momentum", "cross_model_weight")
    loss_terms: ClassVar[tuple[str, ...]] = ("cross_view_loss", "cross_model_loss")

    @classmethod
    def from_settings(cls, backbone: nn.Module, settings: dict[str, Any]) -> Cross:
        """The model of a `contrastive.cross` section."""
        weight = float(settings.get("cross_model_weight", 1.0))
        return cls(backbone, settings["heads"], target_momentum(settings), weight)

    def __init__(
        self, backbone: nn.Module, heads: dict[str, Any], momentum: tuple[float, float], cross_model_weight: float
    ) -> None:
        super().__init__(backbone, heads, momentum)
        self.cross_model_weight = cross_model_weight

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(D(p_a, t_b) + D(p_b, t_a)) / 2 + weight x (D(p_a, t_a) + D(p_b, t_b)) / 2, D the negative cosine."""
        z_a, p_a = self.online(view_a)
        _, p_b = self.online(view_b)
        t_a, t_b = self.target(view_a), self.target(view_b)
        cross_view = 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))
        cross_model = 0.5 * (self.criterion(p_a, t_a) + self.criterion(p_b, t_b))
        n = view_a.shape[0]
        stats = embedding_stats(z_a) | {
            "cross_view_loss": cross_view.detach() * n,
            "cross_model_loss": cross_model.detach() * n,
        }
        return cross_view + self.cross_model_weight * cross_model, stats
