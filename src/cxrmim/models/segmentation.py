"""Segmentation fine-tuning models: an `encoders` entry's own timm encoder with a dense decoder, (B, 1, H, W) ->
(B, 1, H, W) logits (docs/segmentation.md).

The encoder is the very timm model classification fine-tunes (created by `create_encoder` headless), read through
timm's `forward_intermediates`, so every init that loads into a classifier loads into it under the same keys
(`model.encoder`), and timm's layer-wise lr decay sees the same layers.

- ViT: a SETR-PUP-style head fed with several levels (SETR's MLA idea): the tokens of 4 evenly spaced blocks,
  each reshaped to the patch grid, concatenated, fused by a 1x1 conv, then upsampled x2 per step with a 3x3 conv
  each until the input's size. MRM fine-tunes on SIIM with mmseg's UPerNet (a deconvolution pyramid from one
  scale, a pyramid pooling module and an FPN: several million parameters at ViT-B width); a plain ViT has one
  scale to begin with, and at the CPU default (a 128-wide, 4-block ViT on 64-px images, 8x8 tokens) that neck
  would outweigh the encoder, while this head is tens of thousands of parameters and still sees shallow blocks.
- CNN: the U-Net decoder of the lung segmenter (cxrmim.models.unet) over every feature level of the encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.models.encoders import create_encoder, is_vit
from cxrmim.models.unet import unet_blocks, unet_decode

__all__ = ["CNN_DECODER", "VIT_LEVELS", "Segmenter", "build_segmenter", "load_segmenter_encoder", "vit_block_indices"]

VIT_LEVELS = 4  # blocks the ViT head reads (SETR-MLA and UPerNet-on-ViT use 4)
VIT_WIDTH = 64  # fused channels of the ViT head; halved per upsampling step, never below MIN_WIDTH
MIN_WIDTH = 16
CNN_DECODER = (64, 32, 16, 16, 16)  # U-Net widths, deepest first, for 5 feature levels (the lung segmenter's + 16)


def vit_block_indices(depth: int, levels: int = VIT_LEVELS) -> list[int]:
    """`levels` evenly spaced blocks ending with the last one (depth 12 -> 2, 5, 8, 11; depth 4 -> 0, 1, 2, 3)."""
    return sorted({max(0, round((i + 1) * depth / levels) - 1) for i in range(levels)})


class ProgressiveHead(nn.Module):
    """SETR-PUP-style decoder over several ViT levels: fuse (1x1 conv), then (x2 upsample, 3x3 conv) steps."""

    def __init__(self, embed_dim: int, levels: int, patch_size: int, width: int = VIT_WIDTH) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            nn.Conv2d(embed_dim * levels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        steps, blocks, channels = max(0, math.ceil(math.log2(patch_size))), [], width
        for _ in range(steps):
            out = max(MIN_WIDTH, channels // 2)
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)
                )
            )
            channels = out
        self.up = nn.ModuleList(blocks)
        self.out_channels = channels

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """(B, C, h, w) token grids of each level -> (B, out_channels, H, W)."""
        x = self.fuse(torch.cat(list(features), dim=1))
        for block in self.up:
            x = block(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        if tuple(x.shape[-2:]) != tuple(size):  # a patch size that is not a power of two
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x


class UNetHead(nn.Module):
    """The shared U-Net decoder over a CNN's feature levels (shallowest first)."""

    def __init__(self, feature_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        self.blocks = unet_blocks(feature_channels, decoder_channels)
        self.out_channels = int(decoder_channels[-1])

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        """Feature maps -> (B, out_channels, H, W)."""
        return unet_decode(self.blocks, features, size)


def _prefixed(pattern: str) -> str:
    """A timm group_matcher regex of the encoder, for the same parameters under `encoder.`."""
    return r"^encoder\.(?:" + pattern.removeprefix("^") + ")"


class Segmenter(nn.Module):
    """`encoder` (a headless timm model) read at `indices` by forward_intermediates, a decoder, a 1x1 logit conv."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, indices: list[int] | None, vit: bool) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.head = nn.Conv2d(decoder.out_channels, 1, kernel_size=1)
        self.indices, self.vit = indices, vit

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) normalised images -> (B, 1, H, W) logits."""
        # A ViT's final LayerNorm (part of its pretrained weights) puts every level's tokens on one scale.
        options = {"norm": True, "output_fmt": "NCHW"} if self.vit else {}
        features = self.encoder.forward_intermediates(images, indices=self.indices, intermediates_only=True, **options)
        return self.head(self.decoder(features, images.shape[-2:]))

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """The encoder's layer groups under `encoder.`; the decoder and head match none, so timm's layer decay puts
        them in the last group, where a classifier's head is (full lr)."""
        matcher = self.encoder.group_matcher(coarse=coarse)
        return {
            name: [(_prefixed(p), s) for p, s in spec] if isinstance(spec, (list, tuple)) else _prefixed(spec)
            for name, spec in matcher.items()
            if spec is not None
        }

    def no_weight_decay(self) -> set[str]:
        """The encoder's no-decay parameters (position embedding, tokens) under `encoder.`."""
        names = self.encoder.no_weight_decay() if hasattr(self.encoder, "no_weight_decay") else ()
        return {f"encoder.{name}" for name in names}


def build_segmenter(
    encoder_cfg: dict[str, Any],
    image_size: int,
    patch_size: int = 16,
    encoder: nn.Module | None = None,
    decoder_channels: Sequence[int] | None = None,
    drop_path: float = 0.0,
) -> Segmenter:
    """A segmenter for an `encoders` entry: a fresh headless encoder, or `encoder` as built and loaded elsewhere
    (imagenet_encoder, load_external with num_classes=0); load pretraining weights with load_segmenter_encoder.

    `decoder_channels`: CNN U-Net widths, one per feature level, deepest first (default CNN_DECODER); ViTs ignore it.
    """
    if encoder is None:
        encoder = create_encoder(encoder_cfg, image_size, patch_size, num_classes=0, drop_path=drop_path)
    if not hasattr(encoder, "forward_intermediates"):
        raise ValueError(
            f"timm {encoder_cfg['timm_name']} has no forward_intermediates; segmentation needs a timm model that "
            "exposes its intermediate features (ViTs, ResNets, ConvNeXts, ...)"
        )
    if is_vit(encoder_cfg):
        indices = vit_block_indices(len(encoder.blocks))
        patch = int(encoder.patch_embed.patch_size[0])
        decoder = ProgressiveHead(int(encoder.embed_dim), len(indices), patch)
        return Segmenter(encoder, decoder, indices, vit=True)
    channels = [int(level["num_chs"]) for level in encoder.feature_info]
    widths = tuple(decoder_channels or CNN_DECODER)
    if len(widths) != len(channels):
        raise ValueError(
            f"segmentation decoder_channels {list(widths)}: {encoder_cfg['timm_name']} has {len(channels)} feature "
            f"levels ({channels} channels); give {len(channels)} widths, deepest first"
        )
    return Segmenter(encoder, UNetHead(channels, widths), None, vit=False)


def load_segmenter_encoder(model: Segmenter, path: str) -> Any:
    """Load a cxrmim encoder file (encoder.safetensors) into the segmenter's encoder; return its InputNorm."""
    from cxrmim.models.encoders import load_encoder_weights

    return load_encoder_weights(model.encoder, path)
