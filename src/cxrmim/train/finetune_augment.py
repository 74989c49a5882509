"""Fine-tuning augmentation presets, applied to whole batches on the device with a seeded device generator.

`none`: no augmentation. `current`: the config's random resized crop and optional horizontal flip (the
behaviour before presets existed). `classic`: horizontal flip, small rotation, affine (scale, shear,
translation) and a smooth elastic displacement, in one resampling. `randaugment`: timm's RandAugment recipe
`rand-m9-n2-mstd0.5` (two ops per image drawn from its op list, each applied with probability 0.5, magnitude 9/10
with noise std 0.5) re-implemented on tensors, since timm's works on PIL images on the host. It differs from
timm's in: no Equalize (no batched histogram equalisation in torch) and grey images only (colour ops reduce to
brightness/contrast/sharpness), and ops are applied per image as masks over the batch rather than sequentially.
`native`: each model's own augmentation, as the MAE-vs-ResNet study used them: `randaugment` for a ViT (MAE's
fine-tuning recipe), `classic` for a convolutional network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cxrmim import registry
from cxrmim.data.tensors import augment_batch
from cxrmim.models.encoders import InputNorm
from cxrmim.recipe import FinetuneSettings

AUGMENT_PRESETS = registry.names(registry.AUGMENT_PRESETS)  # declared in cxrmim.registry
RANDAUG_OPS = (
    "identity",
    "autocontrast",
    "rotate",
    "posterize",
    "solarize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)
RANDAUG_N, RANDAUG_M, RANDAUG_STD, RANDAUG_PROB = 2, 9.0, 0.5, 0.5


def uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    """n draws in [low, high) on the generator's device."""
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def resample(images: torch.Tensor, theta: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Apply per-image affine maps (B, 2, 3), plus an optional displacement field (B, S, S, 2), in one pass."""
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if offsets is not None:
        grid = grid + offsets.to(grid.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def affine_theta(
    angle: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor, shift: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """Per-image affine matrices from rotation (radians), scale, x-shear, (2, B) shift and flip sign (+-1)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(len(angle), 2, 3, device=angle.device)
    theta[:, 0, 0] = scale * cos * flip
    theta[:, 0, 1] = scale * (-sin + shear * cos)
    theta[:, 1, 0] = scale * sin * flip
    theta[:, 1, 1] = scale * (cos + shear * sin)
    theta[:, 0, 2], theta[:, 1, 2] = shift[0], shift[1]
    return theta


def classic(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip, rotation within 10 degrees, scale 0.9-1.1, shear 0.1, shift 5% and an elastic field of 2% amplitude."""
    batch, size = images.shape[0], images.shape[-1]
    flip = torch.where(uniform(generator, batch, 0, 1) < 0.5, -1.0, 1.0)
    theta = affine_theta(
        uniform(generator, batch, -math.radians(10), math.radians(10)),
        uniform(generator, batch, 0.9, 1.1),
        uniform(generator, batch, -0.1, 0.1),
        uniform(generator, 2 * batch, -0.05, 0.05).view(2, batch),
        flip,
    )
    # A coarse 4x4 random field upsampled smoothly: elastic distortion without a per-pixel Gaussian filter.
    coarse = 0.02 * (2 * torch.rand(batch, 2, 4, 4, generator=generator, device=generator.device) - 1)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return resample(images, theta, field)


def randaugment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """RandAugment on [0, 1] grey images: each image gets RANDAUG_N ops, each applied with RANDAUG_PROB."""
    batch = images.shape[0]
    device = generator.device
    for _ in range(RANDAUG_N):
        op = torch.randint(len(RANDAUG_OPS), (batch,), generator=generator, device=device)
        applied = (op[:, None] == torch.arange(len(RANDAUG_OPS), device=device)) & (
            uniform(generator, batch, 0, 1) < RANDAUG_PROB
        )[:, None]
        noise = torch.randn(batch, generator=generator, device=device) * RANDAUG_STD
        level = ((RANDAUG_M + noise) / 10.0).clamp(0, 1)  # timm's magnitude / max magnitude 10
        sign = torch.where(uniform(generator, batch, 0, 1) < 0.5, -1.0, 1.0)
        candidates = randaugment_ops(images, level.to(images.device), sign.to(images.device))
        for index, name in enumerate(RANDAUG_OPS):
            chosen = applied[:, index].to(images.device).view(-1, 1, 1, 1)
            images = torch.where(chosen, candidates[name], images)
    return images


def shear_theta(shear_x: torch.Tensor, shear_y: torch.Tensor) -> torch.Tensor:
    """Per-image shear matrices [[1, sx, 0], [sy, 1, 0]] (timm's shear range is 0.3 at full magnitude)."""
    theta = torch.zeros(len(shear_x), 2, 3, device=shear_x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 1], theta[:, 1, 0] = shear_x, shear_y
    return theta


def randaugment_ops(images: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every op applied to every image at its level (timm's ranges); the caller keeps each image's chosen one."""
    view = lambda v: v.view(-1, 1, 1, 1)
    batch = len(level)
    zeros, ones = torch.zeros(batch, device=images.device), torch.ones(batch, device=images.device)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    bits = (4 - (level * 4).round()).clamp(min=1)  # posterize: keep 8 - 4*level bits
    step = view(2.0 ** (8 - bits)) / 255.0
    factor = view(1 + sign * level * 0.9)  # enhance ops: factor 1 +- 0.9*level
    return {
        "identity": images,
        "autocontrast": (images - low) / (high - low).clamp(min=1e-6),
        "rotate": resample(
            images,
            affine_theta(
                sign * level * math.radians(30), ones, zeros, torch.zeros(2, batch, device=images.device), ones
            ),
        ),
        "posterize": torch.floor(images / step) * step,
        "solarize": torch.where(images >= view(1 - level), 1 - images, images),
        "contrast": (mean + factor * (images - mean)).clamp(0, 1),
        "brightness": (images * factor).clamp(0, 1),
        "sharpness": (blurred + factor * (images - blurred)).clamp(0, 1),
        "shear_x": resample(images, shear_theta(sign * level * 0.3, zeros)),
        "shear_y": resample(images, shear_theta(zeros, sign * level * 0.3)),
        "translate_x": resample(
            images, affine_theta(zeros, ones, zeros, torch.stack([sign * level * 0.9, zeros]), ones)
        ),
        "translate_y": resample(
            images, affine_theta(zeros, ones, zeros, torch.stack([zeros, sign * level * 0.9]), ones)
        ),
    }


def applied_preset(preset: str, vit: bool) -> str:
    """The preset a run applies: `native` resolves by architecture, every other preset is itself."""
    if preset not in AUGMENT_PRESETS:
        raise ValueError(f"finetune augment preset {preset!r} is not one of {AUGMENT_PRESETS}")
    if preset == "native":
        return "randaugment" if vit else "classic"
    return preset


def augment_images(
    images_uint8: torch.Tensor, norm: InputNorm, settings: FinetuneSettings, generator: torch.Generator
) -> torch.Tensor:
    """(B, S, S) uint8 -> augmented, normalised (B, 1, S, S) float by the run's preset (settings.augment)."""
    images = images_uint8.unsqueeze(1).float() / 255.0
    preset = settings.augment
    if preset == "current":
        # Resampling commutes with the affine normalisation, so cropping before it matches the old order.
        images, _ = augment_batch(images, None, settings.crop_scale, settings.hflip, generator)
    elif preset == "classic":
        images = classic(images, generator)
    elif preset == "randaugment":
        images = randaugment(images, generator)
    elif preset != "none":
        raise ValueError(
            f"finetune augment preset {preset!r} cannot be applied as is; one of {AUGMENT_PRESETS[:-1]} "
            "(native resolves to classic or randaugment by architecture)"
        )
    return (images - norm.mean) / norm.std
