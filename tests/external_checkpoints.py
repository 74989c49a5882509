"""Tiny checkpoints in the exact key layouts and shape conventions of the published encoders (no downloads).

Layouts as read from the reference code (../shared/notes/published-encoders-and-protocols.md): FAIR MAE's
`{'model': encoder}`; medical_mae's `{'model', 'optimizer', 'epoch', 'scaler', 'args'}` with the MAE decoder;
MRM.pth with the decoder and its `bert_*` report branch; an MGCA/MedIM Lightning `.ckpt` (`state_dict`,
`img_encoder_q.model.` around a torchvision-named ResNet without fc, plus projection and text keys);
torchxrayvision's DenseNet (torchvision names, 1-channel conv0, 18-way classifier, `op_threshs` buffer); a timm
HF folder and a plain timm state dict. Models are tiny; every 3-channel stem is 3-channel as published.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.models._hub import save_for_hf

VIT_DIM, VIT_DEPTH, VIT_HEADS, DECODER_DIM = 32, 2, 2, 16
ENCODERS = {  # `encoders:` entries of the checkpoints' architectures
    "vit-ext": {
        "timm_name": "vit_tiny_patch16_224",
        "kwargs": {"embed_dim": VIT_DIM, "depth": VIT_DEPTH, "num_heads": VIT_HEADS, "mlp_ratio": 2.0},
    },
    "resnet-ext": {"timm_name": "resnet18", "kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8}},
    "densenet-ext": {"timm_name": "densenet121", "kwargs": {"growth_rate": 8, "block_config": [1, 2, 1, 1]}},
}


def vit_encoder_state() -> dict[str, torch.Tensor]:
    """A 224-px, patch-16, 3-channel ViT encoder in timm/MAE names, fixed positions with a zero cls row."""
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=0,
        in_chans=3,
        embed_dim=VIT_DIM,
        depth=VIT_DEPTH,
        num_heads=VIT_HEADS,
        mlp_ratio=2.0,
    )
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["pos_embed"][:, 0] = 0.0  # MAE's get_2d_sincos_pos_embed(cls_token=True): the cls row is zero
    return state


def mae_decoder_state(pred_dim: int) -> dict[str, torch.Tensor]:
    """MAE's decoder keys: decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.N, decoder_norm, decoder_pred."""
    block = timm.models.vision_transformer.Block(DECODER_DIM, 2, qkv_bias=True)
    state = {f"decoder_blocks.0.{k}": v for k, v in block.state_dict().items()}
    state |= {
        "mask_token": torch.zeros(1, 1, DECODER_DIM),
        "decoder_pos_embed": torch.zeros(1, 197, DECODER_DIM),
        "decoder_embed.weight": torch.randn(DECODER_DIM, VIT_DIM),
        "decoder_embed.bias": torch.zeros(DECODER_DIM),
        "decoder_norm.weight": torch.ones(DECODER_DIM),
        "decoder_norm.bias": torch.zeros(DECODER_DIM),
        "decoder_pred.weight": torch.randn(pred_dim, DECODER_DIM),
        "decoder_pred.bias": torch.zeros(pred_dim),
    }
    return state


def write_fair_mae(path: Path) -> Path:
    """mae_pretrain_vit_*.pth: {'model': encoder only}."""
    torch.save({"model": vit_encoder_state()}, path)
    return path


def write_medical_mae(path: Path) -> Path:
    """vit-b_CXR_0.5M_mae.pth: the full MAE (16x16x3 targets) with the pretraining loop's state around it."""
    model = vit_encoder_state() | mae_decoder_state(16 * 16 * 3)
    optimizer = {"state": {}, "param_groups": [{"lr": 1.5e-4, "weight_decay": 0.05, "params": list(range(4))}]}
    args = argparse.Namespace(model="mae_vit_base_patch16_dec512d8b", mask_ratio=0.9, epochs=800, norm_pix_loss=True)
    torch.save({"model": model, "optimizer": optimizer, "epoch": 799, "scaler": {"scale": 65536.0}, "args": args}, path)
    return path


def write_mrm(path: Path) -> Path:
    """MRM.pth: MAE layout, 32x32x3 super-resolution targets, plus bert_encoder.* and bert_mlp.*."""
    model = vit_encoder_state() | mae_decoder_state(32 * 32 * 3)
    model |= {
        "bert_encoder.embeddings.word_embeddings.weight": torch.randn(50, 24),
        "bert_encoder.encoder.layer.0.attention.self.query.weight": torch.randn(24, 24),
        "bert_mlp.weight": torch.randn(24, VIT_DIM),
        "bert_mlp.bias": torch.zeros(24),
    }
    torch.save({"model": model}, path)
    return path


def write_mgca_resnet(path: Path) -> Path:
    """MGCA/MedIM Lightning .ckpt: torchvision ResNet (fc = Identity) under img_encoder_q.model., plus heads/text."""
    resnet = timm.create_model(
        "resnet18", pretrained=False, num_classes=0, in_chans=3, **ENCODERS["resnet-ext"]["kwargs"]
    )
    state = {f"img_encoder_q.model.{k}": v for k, v in resnet.state_dict().items()}
    state |= {
        "img_encoder_q.global_embed.head.0.weight": torch.randn(8, 64),
        "img_encoder_q.local_embed.head.0.weight": torch.randn(8, 32, 1),
        "text_encoder_q.model.embeddings.word_embeddings.weight": torch.randn(30, 8),
        "prototype_layer.weight": torch.randn(5, 8),
    }
    torch.save(
        {
            "epoch": 49,
            "global_step": 1000,
            "pytorch-lightning_version": "1.5.9",
            "state_dict": state,
            "optimizer_states": [],
            "lr_schedulers": [],
            "hyper_parameters": {"img_encoder": "resnet_50"},
        },
        path,
    )
    return path


def write_xrv_densenet(path: Path) -> Path:
    """torchxrayvision DenseNet state: torchvision densenet names, 1-channel conv0, 18 outputs, op_threshs."""
    kwargs = ENCODERS["densenet-ext"]["kwargs"]
    model = torchvision.models.DenseNet(
        growth_rate=kwargs["growth_rate"],
        block_config=tuple(kwargs["block_config"]),
        num_init_features=2 * kwargs["growth_rate"],
        num_classes=18,
    )
    model.features.conv0 = torch.nn.Conv2d(1, 2 * kwargs["growth_rate"], 7, 2, 3, bias=False)
    state = model.state_dict() | {"op_threshs": torch.rand(18)}
    torch.save(state, path)
    return path


def write_timm_folder(folder: Path) -> Path:
    """timm's own HF export (config.json + model.safetensors) of an ImageNet-style 3-channel ViT with its head."""
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        in_chans=3,
        embed_dim=VIT_DIM,
        depth=VIT_DEPTH,
        num_heads=VIT_HEADS,
        mlp_ratio=2.0,
    )
    save_for_hf(model, str(folder), safe_serialization="both")
    return folder


def write_timm_state(path: Path) -> Path:
    """A plain timm ResNet state dict (safetensors) with its 1000-way fc."""
    model = timm.create_model("resnet18", pretrained=False, in_chans=3, **ENCODERS["resnet-ext"]["kwargs"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_all(root: Path) -> dict[str, dict]:
    """Every format's checkpoint under root, with the `external_inits:` entries that load them."""
    root.mkdir(parents=True, exist_ok=True)
    return {
        "fair-mae": {"path": str(write_fair_mae(root / "mae_pretrain_vit.pth")), "format": "mae", "encoder": "vit-ext"},
        "medical-mae": {
            "path": str(write_medical_mae(root / "vit-b_CXR_0.5M_mae.pth")),
            "format": "medical-mae",
            "encoder": "vit-ext",
            "label": "medical_mae ViT",
        },
        "mrm": {
            "path": str(write_mrm(root / "MRM.pth")),
            "format": "mrm",
            "encoder": "vit-ext",
            "label": "MRM (released)",
        },
        "mgca": {
            "path": str(write_mgca_resnet(root / "mgca_resnet.ckpt")),
            "format": "prefixed",
            "encoder": "resnet-ext",
        },
        "xrv": {
            "path": str(write_xrv_densenet(root / "xrv-densenet.pt")),
            "format": "xrv-densenet",
            "encoder": "densenet-ext",
        },
        "timm-folder": {
            "path": str(write_timm_folder(root / "timm_vit")),
            "format": "timm-folder",
            "encoder": "vit-ext",
        },
        "timm-state": {
            "path": str(write_timm_state(root / "resnet.safetensors")),
            "format": "timm",
            "encoder": "resnet-ext",
            "input_norm": {"mean": 0.449, "std": 0.226},
        },
    }
