"""SKD (Li, Togo, Ogawa, Haseyama, ICASSP 2022): BYOL's online/target pair plus self-knowledge distillation.

The self-knowledge of an image is how similar its features are to those of the other images in the batch. The
target (EMA) network's similarities, a softmax over the batch at a sharp teacher temperature, are the
distillation target of the online network's, seen through the other view (docs/skd-cross.md: the paper's
method section was not available to us, so the exact form of the relation and the temperatures are our choice).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.models.siamese import BYOL, embedding_stats, target_momentum


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """(n, n) -> (n, n - 1): each row without its diagonal entry (an image is not compared with itself)."""
    n = matrix.shape[0]
    return matrix.flatten()[1:].view(n - 1, n + 1)[:, :-1].reshape(n, n - 1)


def relation_distillation(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, teacher_temperature: float
) -> torch.Tensor:
    """KL(teacher || student) of each image's softmax similarity to the batch's other teacher embeddings.

    Teacher row i: cos(t_i, t_j) / teacher_temperature over j != i; student row i: cos(s_i, t_j) / temperature,
    the same anchors t_j, so only the student side carries a gradient. Computed in float32 (bf16 softmaxes
    over a batch lose the small differences the loss is about).
    """
    anchors = F.normalize(teacher.detach().float(), dim=1)
    student_logits = off_diagonal(F.normalize(student.float(), dim=1) @ anchors.T) / temperature
    teacher_logits = off_diagonal(anchors @ anchors.T) / teacher_temperature
    return F.kl_div(
        F.log_softmax(student_logits, dim=1), F.log_softmax(teacher_logits, dim=1),
        reduction="batchmean", log_target=True,
    )  # fmt: skip


class SKD(BYOL):
    """BYOL's cross-view regression plus the distillation of the target's batch similarities into the online net."""

    method_keys: ClassVar[tuple[str, ...]] = ("momentum", "temperature", "teacher_temperature", "distill_weight")
    loss_terms: ClassVar[tuple[str, ...]] = ("regression_loss", "distill_loss")

    @classmethod
    def from_settings(cls, backbone: nn.Module, settings: dict[str, Any]) -> SKD:
        """The model of a `contrastive.skd` section."""
        return cls(
            backbone, settings["heads"], target_momentum(settings), float(settings.get("temperature", 0.1)),
            float(settings.get("teacher_temperature", 0.04)), float(settings.get("distill_weight", 1.0)),
        )  # fmt: skip

    def __init__(
        self,
        backbone: nn.Module,
        heads: dict[str, Any],
        momentum: tuple[float, float],
        temperature: float,
        teacher_temperature: float,
        distill_weight: float,
    ) -> None:
        super().__init__(backbone, heads, momentum)
        self.temperature, self.teacher_temperature = temperature, teacher_temperature
        self.distill_weight = distill_weight

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Regression D(p_a, t_b) + D(p_b, t_a) halved, plus weight x the halved relation KL of both directions."""
        z_a, p_a = self.online(view_a)
        _, p_b = self.online(view_b)
        t_a, t_b = self.target(view_a), self.target(view_b)
        regression = 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))
        taus = (self.temperature, self.teacher_temperature)
        distill = 0.5 * (relation_distillation(p_a, t_b, *taus) + relation_distillation(p_b, t_a, *taus))
        n = view_a.shape[0]
        parts = {"regression_loss": regression.detach() * n, "distill_loss": distill.detach() * n}
        return regression + self.distill_weight * distill, embedding_stats(z_a) | parts
