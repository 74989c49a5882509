"""A small U-Net: a timm `features_only` encoder (random init) with a light convolutional decoder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cxrmim.io import atomic_path
from cxrmim.models.unet import unet_blocks, unet_decode

FILE_FORMAT = "cxrmim-lung-segmenter"


@dataclass(frozen=True)
class SegmenterSpec:
    """What rebuilds a segmenter: the timm encoder, decoder widths and the input resolution it was trained at."""

    encoder: str
    decoder_channels: tuple[int, ...]
    image_size: int

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SegmenterSpec:
        """The spec described by the `lung_masks` config section."""
        return cls(
            str(settings["encoder"]), tuple(int(c) for c in settings["decoder_channels"]), int(settings["image_size"])
        )


class LungUNet(nn.Module):
    """U-Net over the first len(decoder_channels) feature maps of a timm encoder; one grey channel in, one logit out."""

    def __init__(self, encoder: str, decoder_channels: Sequence[int]) -> None:
        super().__init__()
        depth = len(decoder_channels)
        self.encoder = timm.create_model(
            encoder, pretrained=False, features_only=True, in_chans=1, out_indices=tuple(range(depth))
        )
        # The shared decoder (cxrmim.models.unet), kept under `decoder` and `head` so saved segmenters still load.
        self.decoder = unet_blocks(self.encoder.feature_info.channels(), decoder_channels)
        self.head = nn.Conv2d(int(decoder_channels[-1]), 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) normalised images -> (B, 1, H, W) lung logits."""
        return self.head(unet_decode(self.decoder, self.encoder(images), images.shape[-2:]))


def build_segmenter(spec: SegmenterSpec) -> LungUNet:
    """A randomly initialised segmenter for `spec` (no pretrained weights are ever downloaded)."""
    return LungUNet(spec.encoder, spec.decoder_channels)


def save_segmenter(model: nn.Module, spec: SegmenterSpec, path: str | Path) -> None:
    """Write the weights as safetensors with the spec as metadata, through a temporary file."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": FILE_FORMAT, "spec": json.dumps(asdict(spec))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def _file_spec(path: Path) -> SegmenterSpec | None:
    """The spec stored in a cxrmim segmenter file, or None for other files."""
    if path.suffix != ".safetensors":
        return None
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != FILE_FORMAT:
        return None
    stored = json.loads(meta["spec"])
    return SegmenterSpec(stored["encoder"], tuple(stored["decoder_channels"]), int(stored["image_size"]))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch checkpoint (plain state dict, or under 'state_dict' / 'model')."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state))


def load_segmenter(path: str | Path, fallback: SegmenterSpec) -> tuple[LungUNet, SegmenterSpec]:
    """Load a segmenter; files without cxrmim metadata are read as a state dict of the `fallback` architecture."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation weights not found: {path}; fix lung_masks.weights")
    spec = _file_spec(path) or fallback
    model = build_segmenter(spec)
    try:
        model.load_state_dict(_read_state(path), strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: weights do not fit a LungUNet with encoder {spec.encoder!r} and decoder_channels "
            f"{list(spec.decoder_channels)}; set lung_masks.encoder/decoder_channels to the checkpoint's "
            f"architecture ({str(err).splitlines()[0]})"
        ) from None
    return model, spec
