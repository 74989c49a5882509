"""Segmentation fine-tuning models: shapes, the classification encoder's weights loading strictly into the
segmenter's encoder, gradients into the encoder, layer decay over the same layers, determinism."""

from __future__ import annotations

import pytest
import torch

from cxrmim.models.encoders import create_encoder, load_encoder_weights, write_encoder_files
from cxrmim.models.segmentation import build_segmenter, load_segmenter_encoder, vit_block_indices
from cxrmim.train.finetune_optim import param_groups

VIT = {"timm_name": "vit_tiny_patch16_224", "kwargs": {"embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0}}
RESNET = {"timm_name": "resnet10t", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}}


def test_block_indices_are_evenly_spaced_and_end_at_the_last_block():
    assert vit_block_indices(12) == [2, 5, 8, 11]
    assert vit_block_indices(4) == [0, 1, 2, 3]
    assert vit_block_indices(2) == [0, 1]
    assert vit_block_indices(24) == [5, 11, 17, 23]


@pytest.mark.parametrize(("cfg", "size", "patch"), [(VIT, 32, 8), (VIT, 64, 16), (VIT, 48, 8), (RESNET, 64, 16)])
def test_logits_have_the_input_shape(cfg, size, patch):
    torch.manual_seed(0)
    model = build_segmenter(cfg, size, patch).eval()
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()


def test_resnet_segments_odd_sizes_too():
    model = build_segmenter(RESNET, 40).eval()  # 40 px: strides 16 and 32 give 3x3 and 2x2 maps
    assert model(torch.randn(1, 1, 40, 40)).shape == (1, 1, 40, 40)


@pytest.mark.parametrize("cfg", [VIT, RESNET])
def test_a_classification_encoder_loads_strictly(cfg, tmp_path):
    torch.manual_seed(1)
    classifier = create_encoder(cfg, 32, 8, num_classes=3)
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith(("head.", "fc."))}
    model = build_segmenter(cfg, 32, 8)
    model.encoder.load_state_dict(state, strict=True)  # the same keys, nothing missing or left over
    for key, value in state.items():
        assert torch.equal(model.encoder.state_dict()[key], value)
    # Through the encoder file a pretraining run writes (what fine-tuning loads).
    headless = create_encoder(cfg, 32, 8, num_classes=0)
    write_encoder_files(headless, cfg, 32, 8, tmp_path)
    fresh = build_segmenter(cfg, 32, 8)
    load_segmenter_encoder(fresh, str(tmp_path / "encoder.safetensors"))
    assert all(torch.equal(fresh.encoder.state_dict()[k], v) for k, v in headless.state_dict().items())
    load_encoder_weights(create_encoder(cfg, 32, 8, num_classes=2), tmp_path / "encoder.safetensors")  # and back


@pytest.mark.parametrize("cfg", [VIT, RESNET])
def test_gradients_reach_every_encoder_parameter(cfg):
    torch.manual_seed(2)
    model = build_segmenter(cfg, 32, 8)
    for module in model.modules():  # timm zero-inits each ResNet block's last BN, which silences its branch at init
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(torch.randn(2, 1, 32, 32)), torch.randint(0, 2, (2, 1, 32, 32)).float()
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []  # the first block too, and the ViT's final norm (applied to every level)


def by_parameter(model: torch.nn.Module, key: str) -> dict[str, float]:
    """Parameter name -> its group's `key` (lr_scale, weight_decay) in finetune_optim's layer-decay groups."""
    owner = {id(p): n for n, p in model.named_parameters()}
    return {owner[id(p)]: g[key] for g in param_groups(model, 0.05, 0.5) for p in g["params"]}


def test_layer_decay_groups_the_encoder_as_in_classification():
    torch.manual_seed(3)
    model = build_segmenter(VIT, 32, 8)
    seg = by_parameter(model, "lr_scale")
    cls = by_parameter(create_encoder(VIT, 32, 8, num_classes=2), "lr_scale")
    assert len(seg) == len(list(model.parameters()))  # every parameter is in a group
    for name, scale in cls.items():
        if not name.startswith("head."):
            assert seg[f"encoder.{name}"] == pytest.approx(scale), name
    # stem, 4 blocks (timm merges the final norm into the last), then the head: the classifier's 6 layers
    assert seg["encoder.patch_embed.proj.weight"] == pytest.approx(0.5**5)
    assert seg["head.weight"] == 1.0 and all(v == 1.0 for k, v in seg.items() if k.startswith("decoder."))
    decay = by_parameter(model, "weight_decay")
    assert decay["encoder.pos_embed"] == 0.0 and decay["encoder.blocks.0.attn.qkv.weight"] == 0.05


@pytest.mark.parametrize("cfg", [VIT, RESNET])
def test_deterministic_under_a_seed(cfg):
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_segmenter(cfg, 32, 8)
        outputs.append(model(torch.ones(2, 1, 32, 32)))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(8)
    assert not torch.equal(build_segmenter(cfg, 32, 8)(torch.ones(2, 1, 32, 32)), outputs[0])


def test_wrong_decoder_widths_name_the_levels():
    with pytest.raises(ValueError, match="has 5 feature levels"):
        build_segmenter(RESNET, 32, decoder_channels=(32, 16))


@pytest.mark.parametrize("key", ["mrm", "mgca"])
def test_published_encoders_loaded_headless_become_segmenter_encoders(key, tmp_path):
    from external_checkpoints import ENCODERS, write_all

    from cxrmim.external_formats import resolve_external
    from cxrmim.models.external import load_external

    entry = write_all(tmp_path)[key]
    cfg = ENCODERS[entry["encoder"]]
    encoder, _, _ = load_external(resolve_external(key, entry), cfg, 32, 0, 0.0)  # num_classes=0: headless
    model = build_segmenter(cfg, 32, encoder=encoder)
    assert model.encoder is encoder  # used as loaded, not rebuilt
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)
