"""MRM (masked record modeling): MAE on a 2x-downsampled image predicting high-resolution patches, plus masked
report modeling conditioned on the visible image tokens.

Image branch: the encoder sees the image at half resolution; the decoder predicts (2p)^2 pixels per token, the
patch of the full-resolution image at the same grid position (super-resolution target; `super_resolution=False`
predicts the low-resolution patch instead). Report branch: whole words masked, token embeddings plus the projected
mean of the visible image tokens, a light transformer, MLM loss on masked positions only.
Loss = L_report + lambda * L_image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.models.encoders import create_encoder
from cxrmim.models.mae import MaskedAutoencoder, build_mae, prefix_padded, sincos_2d
from cxrmim.models.masking import MaskPlan
from cxrmim.models.report_text import (
    ReportTransformer,
    masked_token_loss,
    scored_token_loss,
)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, n, p*p*C), row-major patches like timm's PatchEmbed."""
    batch, channels, height, width = images.shape
    p = patch_size
    x = images.reshape(batch, channels, height // p, p, width // p, p)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(batch, (height // p) * (width // p), p * p * channels)


def downsample(images: torch.Tensor) -> torch.Tensor:
    """The low-resolution input: 2x2 area average (anti-aliased, exact for even sizes)."""
    return F.avg_pool2d(images, 2)


def pixel_targets(images: torch.Tensor, patch_size: int, norm_pix: bool) -> torch.Tensor:
    """Per-patch pixel targets (normalised per patch when `norm_pix`), fp32."""
    target = patchify(images.float(), patch_size)
    if norm_pix:
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5
    return target


def masked_pixel_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE per patch averaged over masked patches only."""
    per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


class MaskedRecordModel(nn.Module):
    """MRM: the low-resolution MAE, the report transformer and the image-to-report projection."""

    def __init__(
        self,
        encoder_cfg: dict[str, Any],
        image_size: int,
        patch_size: int,
        mask_ratio: float,
        settings: dict[str, Any],
        vocab_size: int,
        max_length: int,
        mask_id: int,
        super_resolution: bool = True,
        report_loss: bool = True,
    ) -> None:
        super().__init__()
        if image_size % (2 * patch_size):
            raise ValueError(
                f"MRM halves the image: image size {image_size} must be a multiple of 2 x patch {patch_size}"
            )
        mrm = settings.get("mrm") or {}
        self.image_size, self.patch_size = image_size, patch_size
        self.super_resolution, self.report_loss = super_resolution, report_loss
        self.image_loss_weight = float(mrm.get("image_loss_weight", 1.0))
        self.mask_id = mask_id
        self.score_masked_only: bool | None = None  # None: on accelerators (see forward_report)
        self.mae: MaskedAutoencoder = build_mae(
            encoder_cfg, image_size // 2, patch_size, "random", mask_ratio, settings
        )
        if super_resolution:
            self.mae.decoder_pred = nn.Linear(self.mae.decoder_pred.in_features, (2 * patch_size) ** 2)
            nn.init.xavier_uniform_(self.mae.decoder_pred.weight)
            nn.init.zeros_(self.mae.decoder_pred.bias)
        text = mrm.get("text") or {}
        text_dim = int(text.get("embed_dim", 64))
        self.text = ReportTransformer(
            vocab_size, max_length, text_dim, int(text.get("depth", 1)), int(text.get("num_heads", 4))
        )
        self.image_to_text = nn.Linear(self.mae.encoder.embed_dim, text_dim)
        self.text_head = nn.Linear(text_dim, vocab_size)
        if not report_loss:  # the ablation trains no report parts; keep none in the model
            self.text = self.image_to_text = self.text_head = None

    def image_targets(self, images: torch.Tensor) -> torch.Tensor:
        """Full-resolution (2p)^2 patches (super-resolution) or the low-resolution p^2 patches."""
        if self.super_resolution:
            return pixel_targets(images, 2 * self.patch_size, self.mae.norm_pix_loss)
        return pixel_targets(downsample(images), self.patch_size, self.mae.norm_pix_loss)

    def forward_report(self, latent: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor,
                       masked: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """MLM on the masked words, every token conditioned on the mean visible image token -> (loss, count, correct)."""
        context = self.image_to_text(latent[:, self.mae.n_prefix :].mean(dim=1))
        inputs = torch.where(masked, torch.full_like(ids, self.mask_id), ids)
        features = self.text(inputs, attention, context)
        # Only masked positions are scored, so only they need the vocabulary projection (all B x L positions:
        # ~1 TFLOP and GBs of logits per step at paper scale). Selecting them reads their count back: the one
        # host sync of an MRM step, waiting only for the forward already queued. On the CPU (small vocabularies)
        # all positions are projected, which keeps CPU results bit-identical to earlier runs.
        gather = features.device.type != "cpu" if self.score_masked_only is None else self.score_masked_only
        if gather:
            return scored_token_loss(self.text_head(features[masked]), ids[masked], masked)
        return masked_token_loss(self.text_head(features), ids, masked)

    def forward(self, images: torch.Tensor, plan: MaskPlan, report_ids: torch.Tensor | None = None,
                report_attention: torch.Tensor | None = None, words_masked: torch.Tensor | None = None):  # fmt: skip
        """(loss, image loss, (report loss, masked count, correct) or None, predicted patches)."""
        latent = self.mae.forward_encoder(downsample(images), plan)
        pred = self.mae.forward_decoder(latent, plan)
        image_loss = masked_pixel_loss(pred, self.image_targets(images), plan.mask)
        if not self.report_loss:
            return self.image_loss_weight * image_loss, image_loss, None, pred
        report = self.forward_report(latent, report_ids, report_attention, words_masked)
        return report[0] + self.image_loss_weight * image_loss, image_loss, report, pred

    def export_encoder(self, encoder_cfg: dict[str, Any]) -> nn.Module:
        """The encoder at the full image size: same weights, sin-cos positions of the full-size grid."""
        encoder = create_encoder(encoder_cfg, self.image_size, self.patch_size, num_classes=0)
        state = {k: v.detach().clone() for k, v in self.mae.encoder.state_dict().items()}
        pos = sincos_2d(encoder.embed_dim, self.image_size // self.patch_size)
        state["pos_embed"] = prefix_padded(pos, self.mae.n_prefix) if self.mae.encoder_pos_has_prefix else pos[None]
        encoder.load_state_dict(state, strict=True)
        return encoder
