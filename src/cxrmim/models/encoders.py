"""Encoders built through timm, shared by pretraining and fine-tuning, and their safetensors files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

IN_CHANS = 1  # chest X-rays are grey; one input channel throughout


def is_vit(encoder_cfg: dict[str, Any]) -> bool:
    """True for transformer encoders (the ones a masked autoencoder can pretrain)."""
    return encoder_cfg["timm_name"].startswith(("vit", "deit"))


def timm_kwargs(
    encoder_cfg: dict[str, Any], image_size: int, patch_size: int, num_classes: int, drop_path: float = 0.0
) -> dict[str, Any]:
    """The keyword arguments that recreate this encoder with `timm.create_model`."""
    kwargs: dict[str, Any] = dict(encoder_cfg.get("kwargs") or {})
    kwargs.update(num_classes=num_classes, in_chans=IN_CHANS, drop_path_rate=drop_path)
    if is_vit(encoder_cfg):
        # GAP over LN(z_L) as in RGMIM eq. (4): average pooling of the final-normed patch tokens.
        kwargs.update(img_size=image_size, patch_size=patch_size, global_pool="avg", fc_norm=False)
    return kwargs


def create_encoder(
    encoder_cfg: dict[str, Any], image_size: int, patch_size: int, num_classes: int = 0, drop_path: float = 0.0
) -> nn.Module:
    """Create a randomly initialised timm model (ViT or CNN) for grey images."""
    kwargs = timm_kwargs(encoder_cfg, image_size, patch_size, num_classes, drop_path)
    return timm.create_model(encoder_cfg["timm_name"], pretrained=False, **kwargs)


def save_encoder(model: nn.Module, path: str | Path, timm_name: str, kwargs: dict[str, Any]) -> None:
    """Save encoder weights (without any classifier head) as safetensors with the timm recipe as metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}
    metadata = {"timm_name": timm_name, "timm_kwargs": json.dumps({**kwargs, "num_classes": 0})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.replace(path)


def read_encoder_metadata(path: str | Path) -> dict[str, Any]:
    """Return the timm name and kwargs stored in an encoder file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "timm_name" not in meta:
        raise ValueError(f"{path}: not a cxrmim encoder file (no timm_name metadata); re-run the pretrain rule")
    return {"timm_name": meta["timm_name"], "timm_kwargs": json.loads(meta["timm_kwargs"])}


def _fit_vit_grid(state: dict[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Resample ImageNet-style ViT weights (e.g. 224 px, patch 16) onto this model's image and patch size."""
    from timm.layers import resample_abs_pos_embed, resample_patch_embed

    own = model.state_dict()
    key = "patch_embed.proj.weight"
    if key in state and state[key].shape[0] != own[key].shape[0]:
        raise ValueError(
            f"{path}: width {state[key].shape[0]} does not match the encoder's {own[key].shape[0]}; "
            "choose an `encoders` entry with the same timm_name/embed_dim as the weights"
        )
    if key in state and state[key].shape[-2:] != own[key].shape[-2:]:
        state[key] = resample_patch_embed(state[key], list(own[key].shape[-2:]))
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], list(model.patch_embed.grid_size), num_prefix_tokens=model.num_prefix_tokens
        )


def load_encoder_weights(model: nn.Module, path: str | Path) -> None:
    """Load encoder weights into a classifier; only the classification head may be missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state))
    own = model.state_dict()
    # Heads of other tasks (ImageNet's 1000 classes) are never carried over.
    state = {k: v for k, v in state.items() if k in own and not k.startswith(("head.", "fc."))}
    for key in ("patch_embed.proj.weight", "conv1.weight"):
        if key in state and state[key].shape[1] != own[key].shape[1]:
            # RGB weights for grey input: sum over colour channels keeps the response to a grey image.
            state[key] = state[key].sum(dim=1, keepdim=True)
    _fit_vit_grid(state, model, path)
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the configured encoder ({err}); match `encoders` to them") from err
    missing = [k for k in missing if not k.startswith(("head", "fc.", "fc_norm"))]
    if missing:
        raise ValueError(f"{path}: weights lack {len(missing)} encoder tensors, e.g. {missing[:5]}")
