"""Loading external (ImageNet-style) weights into the grey, small-image encoders."""

from pathlib import Path

import pytest
import timm
import torch

from cxrmim.models.encoders import create_encoder, load_encoder_weights

VIT = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"depth": 2}}


def test_vit_weights_from_224px_rgb_are_resampled(tmp_path: Path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=1000)
    path = tmp_path / "imagenet_like.pth"
    torch.save({"model": source.state_dict()}, path)
    model = create_encoder(VIT, image_size=64, patch_size=8, num_classes=3)
    load_encoder_weights(model, path)
    state = model.state_dict()
    assert state["patch_embed.proj.weight"].shape == (192, 1, 8, 8)
    assert state["pos_embed"].shape == (1, 65, 192)
    assert torch.equal(state["blocks.1.mlp.fc2.weight"], source.state_dict()["blocks.1.mlp.fc2.weight"])
    assert torch.allclose(state["cls_token"], source.state_dict()["cls_token"])
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)


def test_mismatched_or_missing_weights_are_clear_errors(tmp_path: Path):
    wide = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2)
    path = tmp_path / "wide.pth"
    torch.save(wide.state_dict(), path)
    model = create_encoder(VIT, image_size=64, patch_size=8, num_classes=3)
    with pytest.raises(ValueError, match="wide.pth.*encoders"):
        load_encoder_weights(model, path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_encoder_weights(model, tmp_path / "missing.safetensors")


def test_resnet_rgb_stem_becomes_grey(tmp_path: Path):
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet.pth"
    torch.save(source.state_dict(), path)
    model = create_encoder({"timm_name": "resnet18"}, image_size=64, patch_size=8, num_classes=2)
    load_encoder_weights(model, path)
    expected = source.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(model.state_dict()["conv1.weight"], expected)
