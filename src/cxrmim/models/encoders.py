"""Encoders built through timm, shared by pretraining and fine-tuning; their files and input normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.models import load_state_dict
from timm.models._hub import save_config_for_hf
from torch import nn

from cxrmim.io import atomic_path
from cxrmim.pixels import PIXEL_MEAN, PIXEL_STD

IN_CHANS = 1  # chest X-rays are grey; one input channel throughout


@dataclass(frozen=True)
class InputNorm:
    """Normalisation of the grey input an encoder's weights expect: x = (pixel / 255 - mean) / std."""

    mean: float
    std: float

    def apply(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """(B, S, S) uint8 -> (B, 1, S, S) float on the same device."""
        return (images_uint8.unsqueeze(1).float() / 255.0 - self.mean) / self.std

    def as_dict(self) -> dict[str, list[float]]:
        """Per-channel lists, as timm's data config and metrics.json write them."""
        return {"mean": [self.mean], "std": [self.std]}

    @classmethod
    def from_rgb(cls, mean: Any, std: Any) -> InputNorm:
        """Grey statistics matching RGB weights whose first conv timm summed over the colour channels.

        With W' = sum_c W_c, a grey image g normalised by (g - m) / s gives sum_c W_c (g - m) / s, while the RGB
        network saw sum_c W_c (g - m_c) / s_c for the same grey picture replicated. Both agree exactly when every
        m_c = m and s_c = s; for unequal channels the channel means are the closest single pair (ImageNet's
        0.485/0.456/0.406 differ by < 0.04, so the error is a small shift of the first activations).
        """
        return cls(sum(mean) / len(mean), sum(std) / len(std))


GREY_NORM = InputNorm(PIXEL_MEAN, PIXEL_STD)  # the statistics scratch models and our pretraining use


def is_vit(encoder_cfg: dict[str, Any]) -> bool:
    """True for transformer encoders (the ones a masked autoencoder can pretrain)."""
    return encoder_cfg["timm_name"].startswith(("vit", "deit"))


# ViT pooling -> timm (global_pool, fc_norm): avg = GAP over LN(z_L) as in RGMIM eq. (4), the workflow's own;
# avg-fcnorm = MAE/MRM fine-tuning (patch-token mean, then a new LayerNorm); token = the class token (MGCA).
VIT_POOLS = {"avg": ("avg", False), "avg-fcnorm": ("avg", True), "token": ("token", False)}


def timm_kwargs(
    encoder_cfg: dict[str, Any],
    image_size: int,
    patch_size: int,
    num_classes: int,
    drop_path: float = 0.0,
    pool: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments that recreate this encoder with `timm.create_model` (ViT pooling: avg unless given)."""
    kwargs: dict[str, Any] = dict(encoder_cfg.get("kwargs") or {})
    kwargs.update(num_classes=num_classes, in_chans=IN_CHANS)
    if not encoder_cfg["timm_name"].startswith("densenet"):  # timm's DenseNet has no drop path
        kwargs.update(drop_path_rate=drop_path)
    if is_vit(encoder_cfg):
        global_pool, fc_norm = VIT_POOLS[pool or "avg"]
        kwargs.update(img_size=image_size, patch_size=patch_size, global_pool=global_pool, fc_norm=fc_norm)
    return kwargs


def create_encoder(
    encoder_cfg: dict[str, Any],
    image_size: int,
    patch_size: int,
    num_classes: int = 0,
    drop_path: float = 0.0,
    pool: str | None = None,
) -> nn.Module:
    """Create a randomly initialised timm model (ViT or CNN) for grey images."""
    kwargs = timm_kwargs(encoder_cfg, image_size, patch_size, num_classes, drop_path, pool)
    return timm.create_model(encoder_cfg["timm_name"], pretrained=False, **kwargs)


def imagenet_encoder(
    encoder_cfg: dict[str, Any], image_size: int, patch_size: int, path: str | Path
) -> tuple[nn.Module, InputNorm]:
    """Headless encoder with local ImageNet weights loaded by timm, and the grey normalisation they expect.

    timm reads the file (.safetensors or .pth), adapts the first conv of any stem (e.g. resnet10t's deep
    `conv1.0`) to one channel and resamples ViT patch and position embeddings to this image and patch size.
    The classifier is dropped first so timm loads strictly: weights of another architecture fail loudly.
    """
    kwargs = timm_kwargs(encoder_cfg, image_size, patch_size, num_classes=0)
    name = encoder_cfg["timm_name"]
    try:
        pretrained_cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an unknown tag
        pretrained_cfg = None
    if pretrained_cfg is None:
        raise ValueError(
            f"timm knows no pretrained weights for {name}; ImageNet transfer needs an architecture "
            "(optionally `name.tag`) that timm publishes weights for"
        )
    classifiers = pretrained_cfg.classifier  # "head", "fc", ...
    heads = tuple(f"{c}." for c in ((classifiers,) if isinstance(classifiers, str) else classifiers))
    state = {k: v for k, v in load_state_dict(str(path)).items() if not k.startswith(heads)}
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"state_dict": state, "num_classes": 0}, **kwargs
        )
    except RuntimeError as err:  # timm's strict load: missing, unexpected or mis-sized tensors
        detail = " ".join(str(err).split())[:400]
        raise ValueError(
            f"{path}: ImageNet weights do not fit the configured encoder {name} {encoder_cfg.get('kwargs') or {}} "
            f"({detail}); choose an `encoders` entry with the weights' architecture"
        ) from err
    cfg = model.pretrained_cfg
    return model, InputNorm.from_rgb(cfg["mean"], cfg["std"])


def save_encoder(
    model: nn.Module, path: str | Path, timm_name: str, kwargs: dict[str, Any], norm: InputNorm = GREY_NORM
) -> None:
    """Save encoder weights (without any classifier head) as safetensors with the timm recipe as metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}
    metadata = {
        "timm_name": timm_name,
        "timm_kwargs": json.dumps({**kwargs, "num_classes": 0}),
        "input_norm": json.dumps(norm.as_dict()),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_encoder_metadata(path: str | Path) -> dict[str, Any]:
    """Return the timm name, kwargs and input normalisation stored in an encoder file."""
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if "timm_name" not in meta:
        raise ValueError(f"{path}: not a cxrmim encoder file (no timm_name metadata); re-run the pretrain rule")
    # Files from before input_norm was stored were all pretrained on the grey statistics.
    norm = json.loads(meta["input_norm"]) if "input_norm" in meta else GREY_NORM.as_dict()
    return {
        "timm_name": meta["timm_name"],
        "timm_kwargs": json.loads(meta["timm_kwargs"]),
        "input_norm": InputNorm(norm["mean"][0], norm["std"][0]),
    }


def load_encoder_weights(model: nn.Module, path: str | Path) -> InputNorm:
    """Load a cxrmim encoder file into a classifier (only the head may be missing); return its input norm."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"encoder weights not found: {path}")
    transfer_encoder(load_file(str(path)), model, path)
    return read_encoder_metadata(path)["input_norm"]


def transfer_encoder(state: dict[str, torch.Tensor], model: nn.Module, source: str | Path) -> None:
    """Copy a headless encoder's tensors into a classifier; anything but the new head missing is an error."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # torch's size-mismatch message does not say which config to change
        raise ValueError(
            f"{source}: weights do not fit the configured encoder ({err}); match `encoders` to them"
        ) from err
    missing = [k for k in missing if not k.startswith(("head.", "fc."))]
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not fit the configured encoder (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); match `encoders` to them"
        )


def model_summary(model: nn.Module, timm_name: str) -> dict[str, Any]:
    """The model actually built: timm name, depth (ViT blocks, null for CNNs), width, encoder parameters; CNNs also
    their stages (blocks and output channels of each)."""
    head = {id(p) for p in model.get_classifier().parameters()}
    summary = {
        "timm_name": timm_name,
        "depth": len(model.blocks) if hasattr(model, "blocks") else None,
        "width": int(model.num_features),
        "n_parameters": sum(p.numel() for p in model.parameters() if id(p) not in head),
    }
    if summary["depth"] is None:
        stages = cnn_stages(model)
        summary |= {"stage_blocks": [n for n, _ in stages], "stage_widths": [w for _, w in stages]}
    return summary


def cnn_stages(model: nn.Module) -> list[tuple[int, int]]:
    """(blocks, output channels) per stage of a timm CNN: its feature levels that hold a sequence of blocks (a
    ResNet's layer1..4, a ConvNeXt stage's blocks); the stem's level (a single activation) is not a stage."""
    stages = []
    for level in getattr(model, "feature_info", None) or []:
        module = model.get_submodule(level["module"])
        blocks = module if isinstance(module, nn.Sequential) else getattr(module, "blocks", None)
        if isinstance(blocks, nn.Sequential):
            stages.append((len(blocks), int(level["num_chs"])))
    return stages


def export_timm_folder(
    model: nn.Module,
    encoder_cfg: dict[str, Any],
    image_size: int,
    patch_size: int,
    norm: InputNorm,
    out_dir: str | Path,
) -> None:
    """Write `config.json` + `model.safetensors`, loadable with one line of timm (see docs/configuration.md):

    `timm.create_model("local-dir:<out_dir>", pretrained=True, num_classes=k)`; the folder's config also gives
    `timm.data.resolve_data_config` the grey input size and normalisation.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = {k: v for k, v in timm_kwargs(encoder_cfg, image_size, patch_size, 0).items() if k != "drop_path_rate"}
    data_config = {
        "input_size": (IN_CHANS, image_size, image_size),
        "mean": (norm.mean,),
        "std": (norm.std,),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.startswith("head.")}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(out_dir / "config.json") as tmp:
        # The tag and licence of the architecture's ImageNet weights do not describe these weights.
        save_config_for_hf(
            model,
            str(tmp),
            model_config={"pretrained_cfg": {"tag": "cxrmim", "license": None}},
            model_args=args,
            data_config=data_config,
        )


def write_encoder_files(
    model: nn.Module,
    encoder_cfg: dict[str, Any],
    image_size: int,
    patch_size: int,
    out_dir: str | Path,
    norm: InputNorm = GREY_NORM,
) -> None:
    """A pretraining run's encoder: `encoder.safetensors` (what fine-tuning loads) and `timm/` (one line of timm)."""
    out_dir = Path(out_dir)
    kwargs = timm_kwargs(encoder_cfg, image_size, patch_size, num_classes=0)
    save_encoder(model, out_dir / "encoder.safetensors", encoder_cfg["timm_name"], kwargs, norm)
    export_timm_folder(model, encoder_cfg, image_size, patch_size, norm, out_dir / "timm")


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Activation checkpointing on every part that supports it (timm models, our MAE) -> parts switched."""
    parts = [m for m in model.modules() if callable(getattr(m, "set_grad_checkpointing", None))]
    for part in parts:
        try:
            part.set_grad_checkpointing(True)
        except (NotImplementedError, AssertionError) as err:  # timm models without support say so
            raise ValueError(
                f"{type(part).__name__} has no activation checkpointing; set grad_checkpointing: false"
            ) from err
    if not parts:
        raise ValueError(f"{type(model).__name__} has no activation checkpointing; set grad_checkpointing: false")
    return len(parts)
