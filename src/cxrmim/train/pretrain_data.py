"""The unlabelled pretraining images with their lung masks and per-patch validity, and their augmentation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrmim.data.patches import patch_coverage, valid_patches
from cxrmim.data.tensors import augment_batch, load_prepared, normalise

log = logging.getLogger("cxrmim.pretrain")

PRETRAIN_PARTS = ("train", "val")  # unlabelled use of the training images; the test part is never seen


@dataclass
class PretrainData:
    """The pretraining images with their lung masks and per-patch validity, in memory."""

    images: torch.Tensor  # uint8 (N, S, S)
    masks: torch.Tensor  # uint8 (N, S, S)
    valid: torch.Tensor  # bool (N, n_patches), from validity.npz
    has_mask: torch.Tensor  # bool (N,)
    image_size: int
    patch_size: int
    threshold: float
    indices: torch.Tensor | None = None  # long (N,): each image's row in the prepared cache (aligns its report)

    def loader_tensors(self, augment: dict[str, Any] | None) -> dict[str, torch.Tensor]:
        """What a batch needs: the masks when validity is recomputed after augmentation, else the validity."""
        if augment:
            return {"images": self.images, "masks": self.masks, "has_mask": self.has_mask}
        return {"images": self.images, "valid": self.valid}


def load_pretrain_data(prepared_dir: str | Path, split_csv: str | Path, validity_npz: str | Path) -> PretrainData:
    """Select the train+val images of the prepared cache and their patch validity."""
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    chosen = split[split["part"].isin(PRETRAIN_PARTS)].sort_values("index")
    if chosen.empty:
        raise ValueError(f"{split_csv}: no images with part in {PRETRAIN_PARTS}; re-run the split rule")
    manifest = prepared.manifest.set_index("index", drop=False) if "index" in prepared.manifest else prepared.manifest
    ids = chosen["index"].to_numpy(dtype=np.int64)
    if "id" in chosen and "id" in manifest:
        stale = manifest.loc[ids, "id"].astype(str).to_numpy() != chosen["id"].astype(str).to_numpy()
        if stale.any():
            raise ValueError(f"{split_csv} does not match the prepared manifest (ids differ); re-run split")
    with np.load(validity_npz) as validity:
        valid, masks, has_mask = validity["valid"], validity["masks"], validity["has_mask"]
        include = validity["include"] if "include" in validity else np.ones(len(valid), dtype=bool)
        image_size, patch_size = int(validity["image_size"]), int(validity["patch_size"])
        threshold = float(validity["threshold"])
    if image_size != prepared.image_size or len(valid) != len(prepared.images):
        raise ValueError(f"{validity_npz} does not match the prepared cache; re-run the patch_validity rule")
    # Images whose predicted lung mask failed QC under lung_masks.qc_policy: skip take no part in pretraining.
    indices = ids[include[ids]]
    if len(indices) < len(ids):
        log.info("%d image(s) excluded by the lung-mask QC policy", len(ids) - len(indices))
    return PretrainData(
        images=torch.from_numpy(np.ascontiguousarray(prepared.images[indices])),
        masks=torch.from_numpy(np.ascontiguousarray(masks[indices])),
        valid=torch.from_numpy(np.ascontiguousarray(valid[indices])).bool(),
        has_mask=torch.from_numpy(np.ascontiguousarray(has_mask[indices])).bool(),
        image_size=image_size,
        patch_size=patch_size,
        threshold=threshold,
        indices=torch.from_numpy(indices.astype(np.int64)),
    )


def batch_inputs(
    batch: dict[str, torch.Tensor], data: PretrainData, augment: dict[str, Any] | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (augmented) images and the patch validity that matches them."""
    images = normalise(batch["images"])
    if not augment:
        return images, batch["valid"]
    images, masks = augment_batch(
        images, batch["masks"].unsqueeze(1), augment.get("crop_scale", (1.0, 1.0)), bool(augment.get("hflip")), generator
    )
    valid = valid_patches(patch_coverage(masks, data.patch_size), data.threshold)
    # Images without a lung mask follow the prepare stage's all-valid policy.
    return images, valid | ~batch["has_mask"].unsqueeze(1)
