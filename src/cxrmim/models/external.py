"""Load a published encoder (MRM.pth, medical_mae, FAIR MAE, MGCA/MedIM, torchxrayvision, timm) into a classifier.

Each format's documented remapping (cxrmim.external_formats) is applied, then the load is strict: a key the
model lacks, a model key the file lacks (besides the new head) or a shape that differs is an error listing them.
3-channel stems are summed to the one grey channel; ViT position embeddings are resampled to the run's grid.
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from torch import nn

from cxrmim.external_formats import ExternalInit
from cxrmim.models.encoders import InputNorm, create_encoder, is_vit

log = logging.getLogger("cxrmim.external")
LISTED = 25  # keys shown per kind of mismatch


def read_file(ext: ExternalInit) -> Any:
    """The checkpoint object: safetensors directly, torch files with weights_only=True (plus the format's few
    known plain classes), a full unpickle only when the entry sets allow_pickle."""
    path = Path(ext.path)
    if ext.format.name == "timm-folder":
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(
            f"external_inits.{ext.key}.path: {path} does not exist; point it at the downloaded file"
        )
    if path.suffix == ".safetensors":
        return load_file(str(path))
    classes = [getattr(importlib.import_module(m), c) for m, c in (g.rsplit(".", 1) for g in ext.format.safe_globals)]
    try:
        with torch.serialization.safe_globals(classes):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not ext.allow_pickle:
            reason = " ".join(str(err).split())[:300]
            raise ValueError(
                f"{path}: the file holds pickled Python objects that weights_only loading refuses ({reason}). If you "
                f"trust its source, set external_inits.{ext.key}.allow_pickle: true (runs arbitrary code from the file"
                "; the classes it names must be importable), or re-save only its tensors (torch.save(state_dict))"
            ) from err
    log.warning("external init %s: unpickling %s in full (allow_pickle: true in the config)", ext.key, path)
    return torch.load(path, map_location="cpu", weights_only=False)


def encoder_state(ext: ExternalInit, obj: Any) -> dict[str, torch.Tensor]:
    """The encoder's tensors from the file's container and key prefix, before any remapping."""
    if isinstance(obj, nn.Module):  # e.g. torchxrayvision's released .pt: a whole pickled model
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise TypeError(f"{ext.path}: expected a dict of tensors, found {type(obj).__name__}")
    if ext.container:
        if ext.container not in obj:
            raise ValueError(
                f"{ext.path}: format {ext.format.name} keeps its weights under {ext.container!r}, but the file's top "
                f"level has {sorted(map(str, obj))[:LISTED]}; choose the matching external_inits.{ext.key}.format "
                "(or set container)"
            )
        obj = obj[ext.container]
    elif all(isinstance(v, dict) for v in obj.values()) and obj:
        raise ValueError(
            f"{ext.path}: format {ext.format.name} expects a plain state dict, but the top level has "
            f"only containers {sorted(obj)[:LISTED]}; choose a format with a container"
        )
    if ext.prefix:
        kept = {k[len(ext.prefix) :]: v for k, v in obj.items() if k.startswith(ext.prefix)}
        if not kept:
            heads = sorted({k.split(".")[0] + "." for k in obj})[:LISTED]
            raise ValueError(
                f"{ext.path}: no key starts with the prefix {ext.prefix!r} (the file's key groups: "
                f"{heads}); set external_inits.{ext.key}.prefix"
            )
        obj = kept
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"{ext.path}: entries that are not tensors: {bad[:LISTED]}; if the weights sit under one of "
            f"them, set external_inits.{ext.key}.container to it"
        )
    return dict(obj)


def patch_size_of(state: dict[str, torch.Tensor], ext: ExternalInit) -> int:
    """A ViT checkpoint's patch size, from its patch-embedding kernel."""
    weight = state.get("patch_embed.proj.weight")
    if weight is None:
        raise ValueError(
            f"{ext.path}: no patch_embed.proj.weight, so not a ViT in timm/MAE naming; check "
            f"external_inits.{ext.key}.encoder and format"
        )
    return int(weight.shape[-1])


def dropped_keys(state: dict[str, torch.Tensor], ext: ExternalInit) -> list[str]:
    """Keys the format says an encoder never uses, plus the final norm that MAE-style pooling replaces."""
    drop = ext.format.drop + (("norm.",) if ext.pool == "avg-fcnorm" else ())
    return [k for k in state if k.startswith(drop)]


def adapt(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Sum a 3-channel stem to one channel and resample the position embedding to the model's grid."""
    state = dict(state)
    stem = f"{model.pretrained_cfg.get('first_conv', '')}.weight"
    target = model.state_dict()
    rgb_to_grey = stem in state and stem in target and state[stem].ndim == 4 and target[stem].shape[1] == 1
    if rgb_to_grey and state[stem].shape[1] == 3:
        # Summing keeps the response to a grey image replicated over R, G and B (the authors' Grayscale(3)).
        state[stem] = state[stem].sum(dim=1, keepdim=True)
    if "pos_embed" in state and "pos_embed" in target and state["pos_embed"].shape != target["pos_embed"].shape:
        prefix = model.num_prefix_tokens
        old = math.isqrt(state["pos_embed"].shape[1] - prefix)
        if old * old + prefix == state["pos_embed"].shape[1]:
            state["pos_embed"] = resample_abs_pos_embed(
                state["pos_embed"], list(model.patch_embed.grid_size), [old, old], num_prefix_tokens=prefix
            )
    return state


def check_strict(state: dict[str, torch.Tensor], model: nn.Module, ext: ExternalInit, new: tuple[str, ...]) -> None:
    """Raise listing every missing, unexpected and mis-shaped key (`new`: prefixes of layers the run adds)."""
    target = model.state_dict()
    missing = sorted(k for k in target if k not in state and not k.startswith(new))
    unexpected = sorted(k for k in state if k not in target)
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state
        if k in target and state[k].shape != target[k].shape
    )
    if missing or unexpected or shapes:
        parts = [
            f"{name} ({len(keys)}): {keys[:LISTED]}"
            for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if keys
        ]
        raise ValueError(
            f"{ext.path} does not load strictly into encoders.{ext.encoder} as format {ext.format.name} after its "
            f"remapping: {'; '.join(parts)}. Choose the `encoders` entry of the checkpoint's architecture, or the "
            f"right external_inits.{ext.key}.format/prefix"
        )


def load_external(
    ext: ExternalInit, encoder_cfg: dict[str, Any], image_size: int, num_classes: int, drop_path: float
) -> tuple[nn.Module, InputNorm, dict[str, Any]]:
    """Classifier with the published encoder loaded strictly, the input norm to apply and what was done."""
    state = encoder_state(ext, read_file(ext))
    dropped = dropped_keys(state, ext)
    state = {k: v for k, v in state.items() if k not in set(dropped)}
    vit = is_vit(encoder_cfg)
    patch = patch_size_of(state, ext) if vit else 16
    if vit and image_size % patch:
        raise ValueError(
            f"{ext.path}: patch size {patch} does not divide the cache's {image_size}px images; "
            "prepare the images at a multiple of it"
        )
    model = create_encoder(
        encoder_cfg, image_size, patch, num_classes=num_classes, drop_path=drop_path, pool=ext.pool if vit else None
    )
    state = adapt(state, model)
    classifier = model.pretrained_cfg.get("classifier", "head")
    heads = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    check_strict(state, model, ext, heads + (("fc_norm.",) if ext.pool == "avg-fcnorm" and vit else ()))
    model.load_state_dict(state, strict=False)  # only the new head (and fc_norm) stay at their fresh init
    norm = InputNorm(ext.norm["mean"], ext.norm["std"])
    pool = ext.pool if vit else "global average (CNN)"  # `pool` chooses among ViT poolings only
    info = ext.summary() | {
        "pool": pool,
        "patch_size": patch if vit else None,
        "dropped_keys": len(dropped),
        "loaded_keys": len(state),
        "input_norm": norm.as_dict(),
    }
    log.info(
        "external init %s: %s loaded strictly (%d tensors, %d dropped by the format), pool %s, input norm %s",
        ext.key,
        ext.format.name,
        len(state),
        len(dropped),
        pool,
        norm.as_dict(),
    )
    return model, norm, info
