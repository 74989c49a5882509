"""Masked autoencoder with a timm ViT encoder and a pluggable masking strategy (`cxrmim.models.masking`).

The model of the masked methods (RGMIM, RGMIM-lung, MAE) and the image branch of MRM and MedIM.

Follows the structure of facebookresearch/mae `models_mae.py`: patchify -> forward_encoder (visible
patches only) -> forward_decoder (mask tokens re-inserted) -> forward_loss (masked patches only).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from cxrmim.models.encoders import IN_CHANS, create_encoder, is_vit
from cxrmim.models.masking import MaskPlan, masking_for


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Transformer sin-cos embedding of 1-D positions -> (len(positions), embed_dim)."""
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding for a square grid, row-major -> (grid_size**2, embed_dim)."""
    if embed_dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs embed_dim divisible by 4; got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    # Half of the channels encode the row, half the column.
    embed = torch.cat([sincos_1d(embed_dim // 2, rows.flatten()), sincos_1d(embed_dim // 2, cols.flatten())], dim=1)
    return embed.float()


def prefix_padded(pos: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Prepend zero rows for class/register tokens, as MAE does for the class token -> (1, len, D)."""
    return torch.cat([torch.zeros(n_prefix, pos.shape[1]), pos], dim=0).unsqueeze(0)


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Transformer blocks in turn; checkpointed ones recompute in backward with the same drop-path draws."""
    for block in blocks:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)  # preserves the RNG state: drop path draws repeat
        else:
            x = block(x)
    return x


class MaskedAutoencoder(nn.Module):
    """ViT masked autoencoder on one grey channel; the masking strategy is chosen by name."""

    def __init__(
        self,
        encoder_cfg: dict[str, Any],
        image_size: int,
        patch_size: int,
        masking: str = "random",
        mask_ratio: float = 0.75,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        if not is_vit(encoder_cfg):
            raise ValueError(f"masked image modeling needs a ViT encoder; got {encoder_cfg['timm_name']}")
        self.encoder = create_encoder(encoder_cfg, image_size, patch_size, num_classes=0)
        self.image_size, self.patch_size = image_size, patch_size
        self.grad_checkpointing = False  # set_grad_checkpointing: recompute block activations in backward
        self.grid_size = image_size // patch_size
        self.n_patches = self.grid_size**2
        self.masking_name = masking
        self.masking = masking_for(masking)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        embed_dim = self.encoder.embed_dim
        self.n_prefix = self.encoder.num_prefix_tokens
        self.encoder_pos_has_prefix = not self.encoder.no_embed_class

        # Fixed sin-cos positions (MAE): frozen so the encoder file carries the same table fine-tuning sees.
        encoder_pos = sincos_2d(embed_dim, self.grid_size)
        if self.encoder_pos_has_prefix:
            encoder_pos = prefix_padded(encoder_pos, self.n_prefix)[0]
        with torch.no_grad():
            self.encoder.pos_embed.copy_(encoder_pos.unsqueeze(0))
        self.encoder.pos_embed.requires_grad_(False)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            prefix_padded(sincos_2d(decoder_embed_dim, self.grid_size), self.n_prefix), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * IN_CHANS)
        self.init_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Keep only block inputs in the forward and recompute the rest in backward (timm's switch, for MAE)."""
        self.grad_checkpointing = enable
        self.encoder.set_grad_checkpointing(enable)

    def init_weights(self) -> None:
        """MAE initialisation: patch embedding as a xavier linear, 0.02-normal tokens, xavier linears, unit norms."""
        proj = self.encoder.patch_embed.proj.weight
        with torch.no_grad():
            nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        for token in (self.encoder.cls_token, self.encoder.reg_token, self.mask_token):
            if token is not None:
                nn.init.normal_(token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n, p*p*C), patches row-major like timm's PatchEmbed."""
        p, g = self.patch_size, self.grid_size
        batch, channels = images.shape[:2]
        x = images.reshape(batch, channels, g, p, g, p)
        x = torch.einsum("bchpwq->bhwpqc", x)
        return x.reshape(batch, g * g, p * p * channels)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, n, p*p*C) -> (B, C, H, W); inverse of `patchify`."""
        p, g = self.patch_size, self.grid_size
        batch = patches.shape[0]
        channels = patches.shape[2] // (p * p)
        x = patches.reshape(batch, g, g, p, p, channels)
        x = torch.einsum("bhwpqc->bchpwq", x)
        return x.reshape(batch, channels, g * p, g * p)

    def plan_masking(
        self,
        batch_size: int,
        valid: torch.Tensor | None,
        generator: torch.Generator | None,
        device: torch.device,
        n_masked: int | None = None,
    ) -> MaskPlan:
        """Draw this batch's mask with the configured strategy and ratio (`n_masked`: see the strategy)."""
        return self.masking(batch_size, self.n_patches, self.mask_ratio, valid, generator, device, n_masked)

    def prefix_tokens(self, batch_size: int) -> torch.Tensor | None:
        """Class (and register) tokens with their position embedding, or None for pool-only ViTs."""
        tokens = [t for t in (self.encoder.cls_token, self.encoder.reg_token) if t is not None]
        if not tokens:
            return None
        prefix = torch.cat(tokens, dim=1)
        if self.encoder_pos_has_prefix:
            prefix = prefix + self.encoder.pos_embed[:, : self.n_prefix]
        return prefix.expand(batch_size, -1, -1)

    def forward_encoder(self, images: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """Embed all patches, keep the visible ones, prepend prefix tokens, run the ViT -> (B, prefix+n_keep, D)."""
        x = self.encoder.patch_embed(images)
        x = x + self.encoder.pos_embed[:, self.n_prefix if self.encoder_pos_has_prefix else 0 :]
        x = torch.gather(x, 1, plan.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        prefix = self.prefix_tokens(x.shape[0])
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)
        x = self.encoder.norm_pre(x)
        x = run_blocks(self.encoder.blocks, x, self.grad_checkpointing)
        return self.encoder.norm(x)

    def forward_decoder(self, latent: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """Re-insert mask tokens in original patch order and predict pixels -> (B, n, p*p*C)."""
        x = self.decoder_embed(latent)
        prefix, visible = x[:, : self.n_prefix], x[:, self.n_prefix :]
        n_masked = self.n_patches - visible.shape[1]
        tokens = torch.cat([visible, self.mask_token.expand(x.shape[0], n_masked, -1)], dim=1)
        tokens = torch.gather(tokens, 1, plan.ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([prefix, tokens], dim=1) + self.decoder_pos_embed
        x = run_blocks(self.decoder_blocks, x, self.grad_checkpointing)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, self.n_prefix :]

    def target_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel targets per patch, normalised per patch when `norm_pix_loss` is on."""
        target = self.patchify(images).float()
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches only (fp32 even under autocast)."""
        per_patch = ((pred.float() - self.target_patches(images)) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(
        self,
        images: torch.Tensor,
        valid: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        plan: MaskPlan | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, MaskPlan]:
        """Mask, encode, decode; returns (loss, predicted patches, mask plan)."""
        if plan is None:
            plan = self.plan_masking(images.shape[0], valid, generator, images.device)
        latent = self.forward_encoder(images, plan)
        pred = self.forward_decoder(latent, plan)
        return self.forward_loss(images, pred, plan.mask), pred, plan

    def construction_metadata(self, encoder_cfg: dict[str, Any]) -> dict[str, Any]:
        """Everything needed to rebuild this model from an autoencoder file."""
        return {
            "encoder_cfg": encoder_cfg,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "masking": self.masking_name,
            "mask_ratio": self.mask_ratio,
            "decoder_embed_dim": self.decoder_embed.out_features,
            "decoder_depth": len(self.decoder_blocks),
            "decoder_num_heads": self.decoder_blocks[0].attn.num_heads if len(self.decoder_blocks) else 1,
            "norm_pix_loss": self.norm_pix_loss,
        }


def build_mae(
    encoder_cfg: dict[str, Any], image_size: int, patch_size: int, masking: str, mask_ratio: float, settings: dict
) -> MaskedAutoencoder:
    """Construct the autoencoder from the `pretrain` config section (decoder sizes, norm_pix_loss)."""
    decoder = settings.get("decoder") or {}
    return MaskedAutoencoder(
        encoder_cfg,
        image_size,
        patch_size,
        masking=masking,
        mask_ratio=mask_ratio,
        decoder_embed_dim=int(decoder.get("embed_dim", 512)),
        decoder_depth=int(decoder.get("depth", 8)),
        decoder_num_heads=int(decoder.get("num_heads", 16)),
        norm_pix_loss=bool(settings.get("norm_pix_loss", False)),
    )
