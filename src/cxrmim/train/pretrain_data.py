"""The unlabelled pretraining images with their lung masks and per-patch validity, and their augmentation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrmim.data.npz import npz_member
from cxrmim.data.patches import patch_coverage, valid_patches
from cxrmim.data.placement import Rows
from cxrmim.data.tensors import augment_batch, load_prepared, normalise

log = logging.getLogger("cxrmim.pretrain")

PRETRAIN_PARTS = ("train", "val")  # unlabelled use of the training images; the test part is never seen


@dataclass
class PretrainData:
    """The pretraining images (memory-mapped rows of the cache) with their lung masks and per-patch validity."""

    images: Rows  # uint8 (N, S, S) rows of prepared/images.npy
    masks: Rows | None  # uint8 (N, S, S) rows of validity.npz's masks; None when the method reads no masks
    valid: torch.Tensor  # bool (N, n_patches), from validity.npz
    has_mask: torch.Tensor  # bool (N,)
    image_size: int
    patch_size: int
    threshold: float
    indices: torch.Tensor | None = None  # long (N,): each image's row in the prepared cache (aligns its report)

    def loader_tensors(self, augment: dict[str, Any] | None, lung: bool = True) -> dict[str, Rows | torch.Tensor]:
        """What a batch needs: the masks when validity is recomputed after augmentation, else the validity;
        the images alone for a method whose masking reads no lung validity (`lung` False)."""
        if not lung:
            return {"images": self.images}
        if augment:
            if self.masks is None:
                raise ValueError("augmented lung-guided pretraining needs the lung masks: load them (lung_masks=True)")
            return {"images": self.images, "masks": self.masks, "has_mask": self.has_mask}
        return {"images": self.images, "valid": self.valid}


def load_pretrain_data(
    prepared_dir: str | Path, split_csv: str | Path, validity_npz: str | Path, lung_masks: bool = True
) -> PretrainData:
    """Select the train+val images of the prepared cache and their patch validity.

    Images and masks stay memory-mapped (only their rows are listed): the loader copies what the job uses to the
    device, or gathers batches from the map. `lung_masks` False: the masks are not opened at all.
    """
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
        names = set(validity.files)
    valid, has_mask = npz_member(validity_npz, "valid"), npz_member(validity_npz, "has_mask")
    include = npz_member(validity_npz, "include") if "include" in names else np.ones(len(valid), dtype=bool)
    image_size, patch_size = int(npz_member(validity_npz, "image_size")), int(npz_member(validity_npz, "patch_size"))
    threshold = float(npz_member(validity_npz, "threshold"))
    masks = npz_member(validity_npz, "masks") if lung_masks else None
    if image_size != prepared.image_size or len(valid) != len(prepared.images):
        raise ValueError(f"{validity_npz} does not match the prepared cache; re-run the patch_validity rule")
    # Images whose predicted lung mask failed QC under lung_masks.qc_policy: skip take no part in pretraining.
    indices = ids[include[ids]]
    if len(indices) < len(ids):
        log.info("%d image(s) excluded by the lung-mask QC policy", len(ids) - len(indices))
    return PretrainData(
        images=Rows(prepared.images, indices),
        masks=None if masks is None else Rows(masks, indices),
        valid=torch.from_numpy(np.ascontiguousarray(valid[indices])).bool(),
        has_mask=torch.from_numpy(np.ascontiguousarray(has_mask[indices])).bool(),
        image_size=image_size,
        patch_size=patch_size,
        threshold=threshold,
        indices=torch.from_numpy(indices.astype(np.int64)),
    )


def batch_inputs(
    batch: dict[str, torch.Tensor], data: PretrainData, augment: dict[str, Any] | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised (augmented) images and the patch validity that matches them (None when the batch has none)."""
    images = normalise(batch["images"])
    if not augment:
        return images, batch.get("valid")
    if "masks" not in batch:  # a method that reads no lung validity: the same draws, images only
        return augment_batch(images, None, augment.get("crop_scale", (1.0, 1.0)), bool(augment.get("hflip")), generator)
    images, masks = augment_batch(
        images,
        batch["masks"].unsqueeze(1),
        augment.get("crop_scale", (1.0, 1.0)),
        bool(augment.get("hflip")),
        generator,
    )
    valid = valid_patches(patch_coverage(masks, data.patch_size), data.threshold)
    # Images without a lung mask follow the prepare stage's all-valid policy.
    return images, valid | ~batch["has_mask"].unsqueeze(1)
