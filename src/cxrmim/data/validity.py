"""The patch_validity stage: lung coverage per patch, the no-mask policy, a summary and a figure."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmim.data.patches import coverage_of_array
from cxrmim.data.tensors import load_prepared
from cxrmim.io import atomic_path

log = logging.getLogger(__name__)

CHUNK = 2048  # images read at a time from memory-mapped stacks


def compute_validity(
    masks: np.ndarray,
    has_mask: np.ndarray,
    patch_size: int,
    threshold: float,
    policy: str,
    ids: list[str],
    fallback: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Coverage and validity per (image, patch), applying the no-mask policy to mask-less images.

    `fallback` marks images whose predicted mask failed QC and were set to all-valid on purpose
    (lung_masks.qc_policy): they are all-valid whatever the no-mask policy says.
    """
    coverage = coverage_of_array(masks, patch_size).astype(np.float32)
    valid = coverage > threshold
    decided = np.zeros(len(masks), dtype=bool) if fallback is None else np.asarray(fallback, dtype=bool)
    valid[decided] = True
    has_mask = has_mask.astype(bool) & ~decided
    missing = np.flatnonzero(~has_mask & ~decided)
    if len(missing) and policy == "fail":
        examples = ", ".join(ids[i] for i in missing[:5])
        raise ValueError(
            f"{len(missing)} image(s) have no lung mask (e.g. {examples}); region-guided masking needs one. "
            "Provide masks, or set patch_validity.no_mask_policy: all_valid (those images then get MAE's "
            "random masking)"
        )
    valid[missing] = True
    empty = np.flatnonzero(has_mask & ~valid.any(axis=1))
    if len(empty):
        log.warning(
            "%d image(s) have a mask with no lung patch above the threshold; they fall back to random masking",
            len(empty),
        )
    return {"coverage": coverage, "valid": valid, "has_mask": has_mask}


def validity_summary(valid: np.ndarray, has_mask: np.ndarray, labels: pd.Series) -> pd.DataFrame:
    """Distribution of valid-patch counts per class (images without masks counted separately)."""
    frame = pd.DataFrame({"label": labels.to_numpy(), "valid_patches": valid.sum(axis=1), "has_mask": has_mask})
    rows = []
    for label, part in [("all", frame)] + list(frame.groupby("label")):
        counts = part.loc[part["has_mask"], "valid_patches"]
        rows.append(
            {
                "label": label,
                "n_images": len(part),
                "n_without_mask": int((~part["has_mask"]).sum()),
                "n_patches": valid.shape[1],
                "mean": counts.mean(),
                "std": counts.std(ddof=0),
                "min": counts.min(),
                "q25": counts.quantile(0.25),
                "median": counts.median(),
                "q75": counts.quantile(0.75),
                "max": counts.max(),
            }
        )
    return pd.DataFrame(rows)


def plot_valid_patches(
    images: np.ndarray, valid: np.ndarray, labels: list[str], patch_size: int, path: Path, dpi: int = 110
) -> None:
    """A few images with their lung-valid patches outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), squeeze=False)
    per_row = images.shape[-1] // patch_size
    for ax, image, ok, label in zip(axes[0], images, valid, labels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        for p in np.flatnonzero(ok):
            row, col = divmod(int(p), per_row)
            ax.add_patch(
                Rectangle(
                    (col * patch_size - 0.5, row * patch_size - 0.5),
                    patch_size,
                    patch_size,
                    fill=False,
                    edgecolor="tab:orange",
                    linewidth=0.6,
                )
            )
        ax.set_title(f"{label}\n{int(ok.sum())}/{ok.size} valid", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def read_mask_status(status_csv: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """The lung_masks stage's per-image decision (mask | all_valid | skip), checked against the manifest."""
    status = pd.read_csv(status_csv, keep_default_na=False)
    if len(status) != len(manifest) or (status["id"].astype(str) != manifest["id"].astype(str)).any():
        raise ValueError(f"{status_csv} does not match the prepared manifest; re-run the lung_masks rule")
    return status


def provided_mask_decisions(
    images: np.ndarray, masks: np.ndarray, has_mask: np.ndarray, mask_qc: dict[str, Any], chunk: int = CHUNK
) -> np.ndarray:
    """Per image 'mask' | 'all_valid' | 'skip' | 'none': the dataset's own masks checked like predicted ones.

    Read `chunk` images at a time, so memory-mapped stacks are never copied whole (QC is per image)."""
    from cxrmim.data.mask_qc import decide, qc_table

    decision = np.full(len(masks), "none", dtype=object)
    rows = np.flatnonzero(has_mask)
    if len(rows):
        thresholds = mask_qc.get("qc") or {}
        table = pd.concat(
            [
                qc_table(images[part], masks[part].astype(bool), None, thresholds)
                for part in np.array_split(rows, max(1, -(-len(rows) // chunk)))
            ],
            ignore_index=True,
        )
        decision[rows] = decide(table["plausible"].to_numpy(), mask_qc.get("qc_policy", "all_valid"))
        failed = table["flags"].to_numpy() != ""
        flags = pd.Series(table["flags"].to_numpy(), index=rows)[failed].str.split(";").explode()
        for flag, where in flags.groupby(flags).groups.items():  # name the images (prepared index) to look at
            log.warning(
                "%d provided lung mask(s) fail QC (%s): lung_masks.qc_policy=%s applies; prepared index %s",
                len(where),
                flag,
                mask_qc.get("qc_policy", "all_valid"),
                ", ".join(map(str, list(where)[:20])) + (" ..." if len(where) > 20 else ""),
            )
    return decision


def run_patch_validity(
    prepared_dir: Path,
    settings: dict[str, Any],
    out_npz: Path,
    summary_csv: Path,
    figure: Path,
    masks_npy: Path | None = None,
    mask_status_csv: Path | None = None,
    mask_qc: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run the stage end to end and write its three outputs.

    With `masks_npy` and `mask_status_csv` (the lung_masks stage) the predicted masks replace the prepared ones:
    'all_valid' images become all-valid, and 'skip' images get include=False in validity.npz. Otherwise, with
    `mask_qc` (lung_masks `qc` and `qc_policy`), the provided masks get the same checks and policy.
    """
    data = load_prepared(prepared_dir)
    patch_size = int(settings["patch_size"])
    threshold = float(settings.get("threshold", 0.0))
    masks, has_mask = np.asarray(data.masks), data.manifest["has_mask"].to_numpy().astype(bool)
    fallback, include = None, np.ones(len(has_mask), dtype=bool)
    if masks_npy is not None:
        masks = np.load(masks_npy, mmap_mode="r")
        if masks.shape != data.masks.shape:
            raise ValueError(
                f"{masks_npy} has shape {masks.shape}, the prepared cache {data.masks.shape}; "
                "re-run the lung_masks rule"
            )
        decision = read_mask_status(mask_status_csv, data.manifest)["decision"].to_numpy()
        # Skipped images also get all-valid patches, so a consumer that ignores `include` treats them like MAE.
        has_mask, fallback, include = decision == "mask", decision != "mask", decision != "skip"
    elif mask_qc is not None:
        decision = provided_mask_decisions(np.asarray(data.images), masks, has_mask, mask_qc)
        fallback, include = np.isin(decision, ["all_valid", "skip"]), decision != "skip"
        has_mask = decision == "mask"
    if (~include).any():
        log.info(
            "%d image(s) with an implausible lung mask are excluded from pretraining (include=False)",
            int((~include).sum()),
        )
    result = compute_validity(
        masks,
        has_mask,
        patch_size,
        threshold,
        settings.get("no_mask_policy", "fail"),
        data.manifest["id"].tolist(),
        fallback,
    )
    has_mask = result["has_mask"]
    # The masks travel with the validity so pretraining (which recomputes validity after augmentation) uses the
    # same masks, provided or predicted, as this stage. The temporary name keeps `.npz`, so numpy adds no suffix.
    # Stored uncompressed, so pretraining memory-maps the masks (`cxrmim.data.npz`); numpy writes a memory map
    # into the archive in 16 MB pieces, so the masks are never in memory whole here either.
    with atomic_path(out_npz) as tmp:
        np.savez(
            tmp,
            **result,
            masks=masks if masks.dtype == np.uint8 else masks.astype(np.uint8),
            include=include,
            patch_size=patch_size,
            image_size=data.image_size,
            threshold=threshold,
        )
    summary = validity_summary(result["valid"], has_mask, data.manifest["label"])
    summary.to_csv(summary_csv, index=False)
    # One example per class first, so the figure shows every class when possible.
    picks = data.manifest.groupby("label").head(1).index.tolist()
    picks = (picks + [i for i in range(len(data.manifest)) if i not in picks])[
        : int(settings.get("n_figure_images", 6))
    ]
    plot_valid_patches(
        np.asarray(data.images[picks]),
        result["valid"][picks],
        data.manifest["label"].iloc[picks].tolist(),
        patch_size,
        figure,
    )
    return summary
