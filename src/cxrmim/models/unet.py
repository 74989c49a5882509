"""The U-Net decoder shared by the lung segmenter (cxrmim.segment.model) and the fine-tuning segmenters
(cxrmim.models.segmentation): one conv block per encoder feature map, deepest first, each after upsampling to the
next shallower map and concatenating it, then one block at the input's resolution without a skip."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["conv_block", "unet_blocks", "unet_decode"]


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv + BN + ReLU layers, the usual U-Net decoder unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def unet_blocks(feature_channels: Sequence[int], decoder_channels: Sequence[int]) -> nn.ModuleList:
    """Decoder blocks for feature maps of `feature_channels` (shallowest first): one per map, the last without a skip.

    len(decoder_channels) must equal len(feature_channels): block k takes the previous block's output plus the
    k-th shallower skip.
    """
    if len(decoder_channels) != len(feature_channels):
        raise ValueError(
            f"decoder_channels {list(decoder_channels)} has {len(decoder_channels)} widths for "
            f"{len(feature_channels)} encoder feature maps {list(feature_channels)}; give one width per map"
        )
    skip_channels = list(reversed(feature_channels[:-1])) + [0]
    blocks, in_channels = [], int(feature_channels[-1])
    for skip, out_channels in zip(skip_channels, decoder_channels):
        blocks.append(conv_block(in_channels + int(skip), int(out_channels)))
        in_channels = int(out_channels)
    return nn.ModuleList(blocks)


def unet_decode(blocks: nn.ModuleList, features: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """Run the blocks over encoder feature maps (shallowest first) up to `size` (the input's H, W)."""
    x = features[-1]
    skips = list(reversed(features[:-1])) + [None]
    for block, skip in zip(blocks, skips):
        # Upsampling to the skip's own size works for any stride pattern and odd input sizes.
        target = skip.shape[-2:] if skip is not None else tuple(size)
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = block(x)
    return x
