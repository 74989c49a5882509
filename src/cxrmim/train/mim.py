"""Masked image modeling (RGMIM, RGMIM-lung, MAE) as a `TrainingMethod` of the shared loop; the masking strategy
of each method is its `cxrmim.registry` entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from cxrmim import registry
from cxrmim.io import atomic_path
from cxrmim.models.encoders import write_encoder_files
from cxrmim.models.mae import MaskedAutoencoder, build_mae
from cxrmim.models.masking import MaskPlan, lung_batch_masked
from cxrmim.train.epoch import EpochRandom
from cxrmim.train.memory import Probe, mae_probes
from cxrmim.train.method_base import MethodBase, RunInputs, check_spec
from cxrmim.train.pretrain_data import PretrainData, batch_inputs

MASKING_COLUMNS = ("fallback_count", "fallback_fraction", "visible_lung_fraction")
MASK_STREAM, AUGMENT_STREAM = 0, 1  # EpochRandom streams


class MaskedImageModelingStep(nn.Module):
    """The loop's model: a masked autoencoder whose forward returns its loss and the masking statistics."""

    def __init__(self, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, images: torch.Tensor, plan: MaskPlan, valid: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss plus, summed over the batch: fallback images, lung-valid patches and the visible ones among them."""
        loss, _, _ = self.mae(images, plan=plan)
        visible = plan.mask < 0.5
        stats = {"fallback": plan.fallback.sum(), "visible_lung": (valid & visible).sum(), "lung": valid.sum()}
        return loss, stats


class MaskedImageModeling(MethodBase):
    """RGMIM / RGMIM-lung / MAE as a `TrainingMethod`: augmented images, a seeded mask per batch, MAE's loss."""

    stat_names = ("fallback", "visible_lung", "lung")
    history_columns = MASKING_COLUMNS

    def __init__(self, data: PretrainData, method: str, mask_ratio: float, encoder_cfg: dict, settings: dict) -> None:
        self.data, self.method, self.mask_ratio = data, method, mask_ratio
        self.encoder_cfg, self.settings = encoder_cfg, settings
        self.augment = settings.get("augment") or None
        masking = registry.method(method).masking
        self.mae = build_mae(encoder_cfg, data.image_size, data.patch_size, masking, mask_ratio, settings)
        self.core = self.mae
        self.model = MaskedImageModelingStep(self.mae)
        # lung_ratio shares one masked count for the whole run (max_i k_i over the un-augmented validity), so no
        # step reads it from the device and every batch has the same shapes; other strategies use their own.
        self.n_masked = lung_batch_masked(data.valid, mask_ratio) if self.mae.masking_name == "lung_ratio" else None

    def activation_probes(self) -> list[Probe]:
        """The parts whose activations the memory estimate counts (`cxrmim.train.memory`)."""
        return mae_probes(self.mae, self.mask_ratio)

    def loader_tensors(self) -> dict[str, torch.Tensor]:
        """Images plus masks (augmented runs) or the validity map."""
        return self.data.loader_tensors(self.augment)

    def make_batch(self, batch: dict[str, torch.Tensor], rng: EpochRandom) -> dict[str, Any]:
        """Normalise and augment the images, recompute their validity, draw the mask."""
        images, valid = batch_inputs(batch, self.data, self.augment, rng.stream(AUGMENT_STREAM))
        plan = self.mae.plan_masking(images.shape[0], valid, rng.stream(MASK_STREAM), images.device, self.n_masked)
        return {"images": images, "plan": plan, "valid": valid}

    def epoch_columns(self, sums: dict[str, float], n_images: int) -> dict[str, float]:
        """Fallback count and share of images; share of lung-valid patches the encoder saw."""
        return {
            "fallback_count": int(sums["fallback"]),
            "fallback_fraction": sums["fallback"] / n_images,
            "visible_lung_fraction": sums["visible_lung"] / max(sums["lung"], 1.0),
        }

    def own_signature(self) -> dict[str, Any]:
        """Masking ratio and patch size."""
        return {"mask_ratio": self.mask_ratio, "patch_size": self.data.patch_size}

    def describe(self) -> list[str]:
        """Method, masking, data and parameter counts."""
        data, mae = self.data, self.mae
        encoder = sum(p.numel() for p in mae.encoder.parameters())
        total = sum(p.numel() for p in mae.parameters())
        trainable = sum(p.numel() for p in mae.parameters() if p.requires_grad)
        return [
            f"method {self.method} ({mae.masking_name} masking), mask ratio {self.mask_ratio:.2f}, "
            f"{len(data.images)} images {data.image_size}px, patch {data.patch_size}"
            + (f", {self.n_masked} masked patches per image" if self.n_masked is not None else ""),
            f"parameters: encoder {encoder:,}, decoder {total - encoder:,}, trainable {trainable:,}",
        ]

    def write_outputs(self, out_dir: Path) -> None:
        """The encoder files (`write_encoder_files`) and autoencoder.safetensors (full MAE, for figures)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        save_autoencoder(self.mae, self.encoder_cfg, out_dir / "autoencoder.safetensors")
        write_encoder_files(self.mae.encoder, self.encoder_cfg, self.mae.image_size, self.mae.patch_size, out_dir)


def save_autoencoder(model: MaskedAutoencoder, encoder_cfg: dict[str, Any], path: Path) -> None:
    """Full MAE weights as safetensors, with the construction recipe as metadata (for figures)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"mae": json.dumps(model.construction_metadata(encoder_cfg))}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def build(spec: registry.Method, data: PretrainData, run: RunInputs) -> MaskedImageModeling:
    """The registry's builder of a masked method."""
    check_spec(spec, run)
    return MaskedImageModeling(data, spec.name, float(run.mask_ratio), run.encoder_cfg, run.settings)
