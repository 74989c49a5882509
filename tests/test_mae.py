"""Masked autoencoder: shapes, masked-only loss, timm-loadable encoder, aligned augmentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from cxrmim.data.patches import patch_coverage, valid_patches
from cxrmim.data.tensors import augment_batch
from cxrmim.models.encoders import read_encoder_metadata, save_encoder, timm_kwargs
from cxrmim.models.mae import MaskedAutoencoder, sincos_2d

ENCODER = {
    "timm_name": "vit_tiny_patch16_224",
    "kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
}
IMAGE_SIZE, PATCH_SIZE = 32, 8


@pytest.fixture(scope="module")
def model() -> MaskedAutoencoder:
    """A tiny region-masking autoencoder."""
    torch.manual_seed(0)
    return MaskedAutoencoder(ENCODER, IMAGE_SIZE, PATCH_SIZE, "region", 0.75, 16, 1, 2).eval()


def test_forward_shapes_and_patchify_roundtrip(model: MaskedAutoencoder) -> None:
    images = torch.randn(3, 1, IMAGE_SIZE, IMAGE_SIZE)
    valid = torch.ones(3, 16, dtype=torch.bool)
    loss, pred, plan = model(images, valid, torch.Generator().manual_seed(0))
    assert pred.shape == (3, 16, PATCH_SIZE**2) and loss.ndim == 0 and torch.isfinite(loss)
    assert plan.ids_keep.shape == (3, 4)
    assert torch.equal(model.unpatchify(model.patchify(images)), images)
    # patchify follows the row-major token order of timm's PatchEmbed.
    unfolded = torch.nn.functional.unfold(images, PATCH_SIZE, stride=PATCH_SIZE).transpose(1, 2)
    assert torch.equal(model.patchify(images), unfolded)


def test_position_embeddings_are_fixed_sincos(model: MaskedAutoencoder) -> None:
    assert not model.encoder.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert torch.allclose(model.encoder.pos_embed[0, 1:], sincos_2d(32, IMAGE_SIZE // PATCH_SIZE))
    assert torch.all(model.encoder.pos_embed[0, 0] == 0)


def test_loss_counts_only_masked_patches(model: MaskedAutoencoder) -> None:
    images = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    mask = torch.zeros(2, 16)
    mask[:, :5] = 1.0
    target = model.patchify(images)
    pred = target.clone()
    pred[:, 5:] += 10.0  # errors on kept patches must not count
    assert model.forward_loss(images, pred, mask).item() == 0.0
    pred = target.clone()
    pred[:, :5] += 2.0  # error 2 on every pixel of every masked patch -> mean squared error 4
    assert model.forward_loss(images, pred, mask).item() == pytest.approx(4.0)


def test_encoder_file_loads_strictly_into_timm(model: MaskedAutoencoder, tmp_path: Path) -> None:
    path = tmp_path / "encoder.safetensors"
    save_encoder(model.encoder, path, ENCODER["timm_name"], timm_kwargs(ENCODER, IMAGE_SIZE, PATCH_SIZE, 0))
    meta = read_encoder_metadata(path)
    fresh = timm.create_model(meta["timm_name"], **meta["timm_kwargs"])
    fresh.load_state_dict(load_file(str(path)), strict=True)
    images = torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.allclose(fresh(images), model.encoder(images), atol=1e-6)


def test_augmentation_keeps_image_and_validity_aligned() -> None:
    # An image whose bright pixels are exactly the lung mask: after the shared warp they must still coincide.
    yy, xx = torch.meshgrid(torch.arange(IMAGE_SIZE), torch.arange(IMAGE_SIZE), indexing="ij")
    masks = torch.stack([((xx - 10 - k) ** 2 + (yy - 16) ** 2 < 40 + 10 * k).float() for k in range(4)]).unsqueeze(1)
    images = masks.clone()
    aug_images, aug_masks = augment_batch(images, masks, (0.5, 0.9), True, torch.Generator().manual_seed(3))
    # Bilinear image vs nearest mask differ only on boundary pixels; compare where the image is clearly in/out.
    confident = (aug_images < 0.05) | (aug_images > 0.95)
    assert torch.equal((aug_images > 0.5)[confident], (aug_masks > 0.5)[confident])
    assert confident.float().mean() > 0.8
    bright_coverage = patch_coverage((aug_images > 0.5).squeeze(1), PATCH_SIZE)
    mask_coverage = patch_coverage(aug_masks.squeeze(1), PATCH_SIZE)
    assert (bright_coverage - mask_coverage).abs().max() < 0.2
    assert not torch.equal(aug_masks, masks)  # the warp really moved things
    assert valid_patches(mask_coverage).any()


def test_initialisation_follows_mae() -> None:
    torch.manual_seed(0)
    wide = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 128, "depth": 2, "num_heads": 2}}
    mae = MaskedAutoencoder(wide, IMAGE_SIZE, PATCH_SIZE, "random", 0.75, 64, 1, 2)

    def xavier_std(weight: torch.Tensor) -> float:
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        return (2.0 / (fan_in + fan_out)) ** 0.5

    # The patch embedding is initialised as the linear layer it is (fan-in = p*p*channels), not as a conv.
    proj = mae.encoder.patch_embed.proj.weight
    assert proj.std().item() == pytest.approx(xavier_std(proj), rel=0.1)
    for name, module in mae.named_modules():
        if isinstance(module, torch.nn.Linear):
            assert module.weight.std().item() == pytest.approx(xavier_std(module.weight), rel=0.15), name
            assert module.bias is None or torch.all(module.bias == 0), name
        elif isinstance(module, torch.nn.LayerNorm):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0), name
    for token in (mae.encoder.cls_token, mae.mask_token):
        assert 0.01 < token.std().item() < 0.03 and token.abs().max().item() < 0.15
