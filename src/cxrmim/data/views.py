"""Two-view augmentation for joint-embedding pretraining (SimSiam, BYOL), batched on the training device.

Chest-X-ray appropriate: random resized crop, a small rotation, optional horizontal flip, brightness and
contrast on the grey values, Gaussian blur. Never a vertical flip (the heart and diaphragm have a side and an up),
never colour jitter (one grey channel). Every draw comes from the generator passed in, so the views are a
function of (seed, epoch, rank, batch) and a resumed run sees the same views as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewAugment:
    """Strengths of each transform (a `contrastive.<method>.augment` config entry)."""

    crop_scale: tuple[float, float] = (0.4, 1.0)  # area fraction kept by the random resized crop
    crop_ratio: tuple[float, float] = (0.8, 1.25)  # aspect ratio range of the crop
    rotation: float = 10.0  # maximum absolute rotation, degrees
    hflip: bool = False  # left-right flip (off by default: the heart is on the left)
    brightness: float = 0.2  # additive shift, fraction of the normalised unit
    contrast: float = 0.2  # multiplicative factor drawn in [1 - c, 1 + c] around the image mean
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # pixels
    view_size: int | None = None  # side of the resized crop; None = the image size (smaller = cheaper steps)

    @classmethod
    def from_config(cls, values: dict[str, Any] | None) -> ViewAugment:
        """Defaults overridden by the given keys; unknown keys are an error naming them."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augment keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        for key in ("crop_scale", "crop_ratio", "blur_sigma"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def uniform(low: float, high: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """n draws from U[low, high) on the generator's device."""
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def crop_rotate_theta(n: int, augment: ViewAugment, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine maps of output to input coordinates: a resized crop, rotated, maybe mirrored left-right."""
    area = uniform(*augment.crop_scale, n, generator)
    log_ratio = uniform(math.log(augment.crop_ratio[0]), math.log(augment.crop_ratio[1]), n, generator)
    ratio = torch.exp(log_ratio)
    # Half-widths of the crop in [-1, 1] coordinates; clamped so the crop stays inside the image.
    scale_x = torch.sqrt(area * ratio).clamp(max=1.0)
    scale_y = torch.sqrt(area / ratio).clamp(max=1.0)
    shift_x = (1 - scale_x) * uniform(-1.0, 1.0, n, generator)
    shift_y = (1 - scale_y) * uniform(-1.0, 1.0, n, generator)
    angle = torch.deg2rad(uniform(-augment.rotation, augment.rotation, n, generator))
    mirror = torch.ones(n, device=generator.device)
    if augment.hflip:
        mirror = torch.where(uniform(0.0, 1.0, n, generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Only the x axis is ever mirrored: the y row of the matrix keeps a positive determinant on its own.
    return torch.stack(
        [
            torch.stack([scale_x * cos * mirror, -scale_y * sin, shift_x], dim=1),
            torch.stack([scale_x * sin * mirror, scale_y * cos, shift_y], dim=1),
        ],
        dim=1,
    )


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-image separable Gaussian blur with standard deviation sigma (pixels), one grouped convolution."""
    n, channels, height, width = images.shape
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (offsets[None] / sigma[:, None].to(images.dtype)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = images.reshape(1, n * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernels[:, None, None, :], groups=n * channels)
    flat = F.conv2d(flat, kernels[:, None, :, None], groups=n * channels)
    return flat.reshape(n, channels, height, width)


def random_view(images: torch.Tensor, augment: ViewAugment, generator: torch.Generator) -> torch.Tensor:
    """One augmented view of a batch of normalised grey images (B, 1, S, S) -> (B, 1, V, V), V = view_size or S."""
    n, channels, size = images.shape[0], images.shape[1], augment.view_size or images.shape[-1]
    theta = crop_rotate_theta(n, augment, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n, channels, size, size], align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    contrast = uniform(1 - augment.contrast, 1 + augment.contrast, n, generator).to(images.device, images.dtype)
    brightness = uniform(-augment.brightness, augment.brightness, n, generator).to(images.device, images.dtype)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = (views - mean) * contrast.view(n, 1, 1, 1) + mean + brightness.view(n, 1, 1, 1)
    if augment.blur_probability > 0:
        sigma = uniform(*augment.blur_sigma, n, generator).to(images.device)
        blurred = uniform(0.0, 1.0, n, generator) < augment.blur_probability
        # Unblurred images get a tiny sigma (an identity kernel) so every batch runs one fixed-shape convolution.
        sigma = torch.where(blurred.to(images.device), sigma, torch.full_like(sigma, 1e-3))
        # The kernel radius comes from the config, not the draws: no host sync, one shape every step.
        views = gaussian_blur(views, sigma, max(1, math.ceil(3 * augment.blur_sigma[1])))
    return views


def two_views(
    images: torch.Tensor, augment: ViewAugment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of the same images."""
    return random_view(images, augment, generator), random_view(images, augment, generator)
