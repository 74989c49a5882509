"""Encoders: local ImageNet weights through timm, our encoder files, and the timm folder export."""

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_data_config

from cxrmim.models.encoders import (
    GREY_NORM,
    InputNorm,
    create_encoder,
    export_timm_folder,
    imagenet_encoder,
    load_encoder_weights,
    model_summary,
    read_encoder_metadata,
    save_encoder,
    timm_kwargs,
)

REPO = Path(__file__).resolve().parents[1]
VIT = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"depth": 2}}
DEEP_STEM = {"timm_name": "resnet10t", "kwargs": {}}  # stem conv1.0 / conv1.3 / conv1.6, not conv1
IMAGENET_RGB = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_vit_imagenet_weights_load_through_timm_resampled_to_grey(tmp_path: Path):
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=1000)
    path = tmp_path / "imagenet_like.pth"
    torch.save({"model": source.state_dict()}, path)  # a training checkpoint, as timm's train.py writes it
    model, norm = imagenet_encoder(VIT, image_size=64, patch_size=8, path=path)
    state, reference = model.state_dict(), source.state_dict()
    assert state["patch_embed.proj.weight"].shape == (192, 1, 8, 8)  # one channel, 16 px patches resampled to 8
    assert state["pos_embed"].shape == (1, 65, 192)  # 14 x 14 grid resampled to 8 x 8
    assert torch.equal(state["blocks.1.mlp.fc2.weight"], reference["blocks.1.mlp.fc2.weight"])
    assert torch.equal(state["cls_token"], reference["cls_token"])
    # vit_tiny's ImageNet weights were trained on mean = std = 0.5 per channel: the same for grey input.
    assert norm == InputNorm(0.5, 0.5)


def test_deep_stem_resnet_imagenet_weights_become_grey(tmp_path: Path):
    source = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet10t.safetensors"
    save_file(source.state_dict(), str(path))
    model, norm = imagenet_encoder(DEEP_STEM, image_size=64, patch_size=16, path=path)
    expected = source.state_dict()["conv1.0.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.state_dict()["conv1.0.weight"], expected)
    assert torch.equal(model.state_dict()["layer4.0.conv2.weight"], source.state_dict()["layer4.0.conv2.weight"])
    # Grey statistics of summed RGB weights: the means of the per-channel ImageNet statistics.
    assert norm.mean == pytest.approx(sum(IMAGENET_RGB[0]) / 3) and norm.std == pytest.approx(sum(IMAGENET_RGB[1]) / 3)
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, model.num_features)


def test_mismatched_imagenet_weights_are_clear_errors(tmp_path: Path):
    wide = timm.create_model("vit_small_patch16_224", pretrained=False, depth=2)
    path = tmp_path / "wide.pth"
    torch.save(wide.state_dict(), path)
    with pytest.raises(ValueError, match="wide.pth.*encoders"):
        imagenet_encoder(VIT, image_size=64, patch_size=8, path=path)
    shallow = tmp_path / "shallow.safetensors"
    save_file(timm.create_model("vit_tiny_patch16_224", depth=1).state_dict(), str(shallow))
    with pytest.raises(ValueError, match="shallow.safetensors.*encoders"):  # blocks.1 missing: no partial load
        imagenet_encoder(VIT, image_size=64, patch_size=8, path=shallow)
    with pytest.raises(ValueError, match="vit_tiny_patch16_224.nope"):
        imagenet_encoder({"timm_name": "vit_tiny_patch16_224.nope"}, image_size=64, patch_size=8, path=shallow)


def test_own_encoder_file_carries_its_normalisation(tmp_path: Path):
    encoder = create_encoder(VIT, 32, 8)
    torch.nn.init.constant_(encoder.blocks[1].mlp.fc1.weight, 0.25)
    path = tmp_path / "encoder.safetensors"
    save_encoder(encoder, path, VIT["timm_name"], timm_kwargs(VIT, 32, 8, 0), norm=InputNorm(0.4, 0.2))
    assert read_encoder_metadata(path)["input_norm"] == InputNorm(0.4, 0.2)
    classifier = create_encoder(VIT, 32, 8, num_classes=3)
    assert load_encoder_weights(classifier, path) == InputNorm(0.4, 0.2)
    assert torch.all(classifier.blocks[1].mlp.fc1.weight == 0.25)
    save_encoder(encoder, path, VIT["timm_name"], timm_kwargs(VIT, 32, 8, 0))
    assert read_encoder_metadata(path)["input_norm"] == GREY_NORM  # pretraining's default statistics
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_encoder_weights(classifier, tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    "encoder_cfg",
    [{"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}}, DEEP_STEM],
)
def test_exported_folder_loads_with_one_line_of_timm(tmp_path: Path, encoder_cfg: dict):
    encoder = create_encoder(encoder_cfg, 48, 8)
    with torch.no_grad():
        for param in encoder.parameters():
            param.uniform_(-0.1, 0.1)
    export_timm_folder(encoder, encoder_cfg, 48, 8, InputNorm(0.45, 0.3), tmp_path / "timm")
    # The two lines of docs/configuration.md, run as written there (with this folder).
    readme = (REPO / "docs" / "configuration.md").read_text()
    lines = [
        line
        for line in readme.splitlines()
        if line.startswith(('model = timm.create_model("local-dir:', "data_config = timm.data"))
    ]
    assert len(lines) == 2, "docs/configuration.md lost its timm loading example"
    namespace = {"timm": timm}
    exec("\n".join(lines).replace("path/to/folder", str(tmp_path / "timm")), namespace)
    model, data_config = namespace["model"], namespace["data_config"]
    assert data_config == resolve_data_config({}, model=model)
    assert data_config["input_size"] == (1, 48, 48)
    assert data_config["mean"] == pytest.approx([0.45]) and data_config["std"] == pytest.approx([0.3])
    reference = encoder.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith(("head.", "fc.")):
            assert torch.equal(value, reference[key]), key
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 4)  # num_classes=4 of the documented line
    assert (
        model_summary(model, encoder_cfg["timm_name"])["n_parameters"]
        == model_summary(encoder, encoder_cfg["timm_name"])["n_parameters"]
    )  # same encoder; the new head is not counted


def test_model_summary_describes_the_built_model():
    vit = create_encoder(
        {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 64, "depth": 3, "num_heads": 2}},
        32,
        8,
        num_classes=5,
    )
    summary = model_summary(vit, "vit_tiny_patch16_224")
    assert (summary["depth"], summary["width"]) == (3, 64)
    assert summary["n_parameters"] == sum(p.numel() for p in vit.parameters()) - (64 * 5 + 5)
    resnet = model_summary(create_encoder(DEEP_STEM, 32, 8, num_classes=5), "resnet10t")
    assert resnet["depth"] is None and resnet["width"] == 512
