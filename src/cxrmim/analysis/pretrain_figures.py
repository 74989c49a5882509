"""Pretraining figures: random vs region-guided masking (the paper's Fig. 1), reconstructions, loss curves."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from cxrmim.data.npz import npz_member  # noqa: E402
from cxrmim.data.tensors import PIXEL_MEAN, PIXEL_STD, load_prepared, normalise  # noqa: E402
from cxrmim.inits import PRETRAIN_METHODS  # noqa: E402
from cxrmim.models.mae import MaskedAutoencoder  # noqa: E402
from cxrmim.models.masking import MASKING, METHOD_MASKING, MaskPlan  # noqa: E402

log = logging.getLogger(__name__)

MASKED_GREY = 0.5  # display value of a masked patch, on the 0..1 image scale
FIGURE_SEED = 0


@dataclass
class Examples:
    """A few test images with their masks and patch validity."""

    images: np.ndarray  # uint8 (k, S, S)
    masks: np.ndarray  # uint8 (k, S, S)
    valid: np.ndarray  # bool (k, n_patches)
    labels: list[str]
    patch_size: int


def load_examples(prepared_dir: str | Path, split_csv: str | Path, validity_npz: str | Path, n: int) -> Examples:
    """n test images, one per class first so every class appears when possible."""
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    test = split[split["part"] == "test"].sort_values("index")
    if test.empty:
        raise ValueError(f"{split_csv}: no test images to illustrate")
    first = test.groupby("label").head(1)
    picks = pd.concat([first, test.drop(first.index)]).head(n)
    indices = picks["index"].to_numpy(dtype=np.int64)
    # Memory-mapped: only the n pictured masks are read.
    valid, masks = npz_member(validity_npz, "valid")[indices], npz_member(validity_npz, "masks")[indices]
    patch_size = int(npz_member(validity_npz, "patch_size"))
    return Examples(
        np.asarray(prepared.images[indices]), masks, valid,
        picks["label"].astype(str).tolist(), patch_size,
    )  # fmt: skip


def patch_mask_to_pixels(mask: np.ndarray, image_size: int, patch_size: int) -> np.ndarray:
    """(n_patches,) 0/1 in row-major patch order -> (S, S) boolean pixel mask."""
    grid = image_size // patch_size
    return np.kron(mask.reshape(grid, grid), np.ones((patch_size, patch_size))).astype(bool)


def grey_out(image: np.ndarray, patch_mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Image on a 0..1 scale with masked patches replaced by flat grey."""
    shown = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    pixels = patch_mask_to_pixels(patch_mask, image.shape[-1], patch_size)
    return np.where(pixels, MASKED_GREY, shown)


def draw_masks(valid: np.ndarray, mask_ratio: float, seed: int = FIGURE_SEED) -> dict[str, MaskPlan]:
    """Both strategies at the same ratio on the same images."""
    valid_t = torch.from_numpy(valid)
    batch, n_patches = valid_t.shape
    return {
        name: fn(batch, n_patches, mask_ratio, valid_t, torch.Generator().manual_seed(seed))
        for name, fn in MASKING.items()
    }


def masking_title(name: str) -> str:
    """'region masking (RGMIM)': a MASKING strategy and the method label(s) that pretrain with it."""
    methods = [PRETRAIN_METHODS.get(m, m) for m, masking in METHOD_MASKING.items() if masking == name]
    return f"{name.replace('_', ' ')} masking" + (f" ({', '.join(methods)})" if methods else "")


def plot_masking_illustration(examples: Examples, mask_ratio: float, path: Path, dpi: int) -> None:
    """Rows of: original, lung mask, then every masking strategy at the same ratio (masked patches grey)."""
    plans = draw_masks(examples.valid, mask_ratio)
    columns = ["original", "lung mask", *(masking_title(name) for name in plans)]
    n = len(examples.images)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.4 * len(columns), 2.5 * n), squeeze=False)
    for row in range(n):
        image, valid = examples.images[row], examples.valid[row]
        panels = [image / 255.0, examples.masks[row] > 0]
        titles = [examples.labels[row], f"{int(valid.sum())}/{valid.size} lung patches"]
        for plan in plans.values():
            mask = plan.mask[row].numpy()
            panels.append(grey_out(image, mask, examples.patch_size))
            titles.append(f"{int((mask.astype(bool) & valid).sum())}/{int(mask.sum())} masked in lung")
        for col, (panel, title) in enumerate(zip(panels, titles)):
            ax = axes[row, col]
            ax.imshow(panel, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{columns[col]}\n{title}" if row == 0 else title, fontsize=8)
            ax.axis("off")
    fig.suptitle(f"Masking ratio {mask_ratio:.2f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def is_mae_file(path: str | Path) -> bool:
    """True for a masked method's autoencoder file (MRM and MedIM files carry their own metadata key)."""
    with safe_open(str(path), framework="pt") as handle:
        return "mae" in (handle.metadata() or {})


def load_autoencoder(path: str | Path) -> MaskedAutoencoder:
    """Rebuild a pretrained autoencoder from autoencoder.safetensors and its metadata."""
    with safe_open(str(path), framework="pt") as handle:
        meta = (handle.metadata() or {}).get("mae")
    if meta is None:
        raise ValueError(f"{path}: no 'mae' metadata; re-run the pretrain rule")
    recipe: dict[str, Any] = json.loads(meta)
    encoder_cfg = recipe.pop("encoder_cfg")
    model = MaskedAutoencoder(encoder_cfg, **recipe)
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, images: np.ndarray, valid: np.ndarray, seed: int = FIGURE_SEED):
    """(masked input, reconstruction with visible patches pasted back), both on a 0..1 scale."""
    x = normalise(torch.from_numpy(images))
    plan = model.plan_masking(len(images), torch.from_numpy(valid), torch.Generator().manual_seed(seed), x.device)
    _, pred, plan = model(x, plan=plan)
    if model.norm_pix_loss:
        # Predictions are per-patch normalised; undo with the true patch statistics (as MAE's demo does).
        target = model.patchify(x)
        pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
    mask = plan.mask.unsqueeze(-1)
    pasted = model.patchify(x) * (1 - mask) + pred * mask
    to_unit = lambda t: (t * PIXEL_STD + PIXEL_MEAN).clamp(0, 1)[:, 0].numpy()  # noqa: E731
    reconstruction, originals = to_unit(model.unpatchify(pasted)), to_unit(x)
    masked = np.stack([grey_out(originals[i], plan.mask[i].numpy(), model.patch_size) for i in range(len(images))])
    return masked, reconstruction


def plot_reconstructions(examples: Examples, run_dirs: list[Path], path: Path, dpi: int) -> None:
    """Rows = test images; columns = original, then masked input and reconstruction for every run."""
    results = []
    for run_dir in run_dirs:
        model = load_autoencoder(run_dir / "autoencoder.safetensors")
        results.append((run_dir.name, *reconstruct(model, examples.images, examples.valid)))
    n, n_cols = len(examples.images), 1 + 2 * len(results)
    fig, axes = plt.subplots(n, n_cols, figsize=(2.2 * n_cols, 2.3 * n), squeeze=False)
    for row in range(n):
        panels = [(examples.images[row] / 255.0, f"original\n{examples.labels[row]}")]
        for name, masked, reconstruction in results:
            panels += [(masked[row], f"{name}\nmasked input"), (reconstruction[row], f"{name}\nreconstruction")]
        for col, (panel, title) in enumerate(panels):
            axes[row, col].imshow(panel, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(title if row == 0 else "", fontsize=7)
            axes[row, col].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


SHARE_COLUMNS = {"fallback_fraction": "fallback images", "visible_lung_fraction": "lung patches visible"}


def plot_loss_curves(run_dirs: list[Path], path: Path, dpi: int) -> None:
    """Pretraining loss per epoch of every run and, where the histories have them, the share of fallback
    images and of visible lung patches per epoch."""
    frames = []
    for run_dir in run_dirs:
        history = pd.read_csv(run_dir / "history.csv")
        frames.append(history.assign(run=run_dir.name))
    data = pd.concat(frames, ignore_index=True)
    shares = [c for c in SHARE_COLUMNS if c in data and data[c].notna().any()]
    fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(12.0 if shares else 6.4, 4.0), squeeze=False)
    sns.lineplot(data=data, x="epoch", y="loss", hue="run", marker="o", ax=axes[0, 0])
    axes[0, 0].set_ylabel("reconstruction loss (masked patches)")
    axes[0, 0].set_title("Pretraining loss")
    if shares:
        long = data.melt(id_vars=["run", "epoch"], value_vars=shares, var_name="share", value_name="value")
        long["share"] = long["share"].map(SHARE_COLUMNS)
        sns.lineplot(data=long, x="epoch", y="value", hue="run", style="share", marker="o", ax=axes[0, 1])
        axes[0, 1].set_ylabel("share")
        axes[0, 1].set_ylim(-0.02, 1.02)
        axes[0, 1].set_title("Masking: fallback images, visible lung patches")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def make_pretrain_figures(
    prepared_dir: str | Path,
    split_csv: str | Path,
    validity_npz: str | Path,
    run_dirs: list[str | Path],
    mask_ratio: float,
    out_dir: str | Path,
    plots: dict[str, Any],
) -> list[Path]:
    """Write masking_illustration.png, reconstructions.png and pretrain_loss.png into out_dir."""
    sns.set_theme(style=plots.get("style", "whitegrid"))
    dpi = int(plots.get("dpi", 110))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in run_dirs]
    examples = load_examples(prepared_dir, split_csv, validity_npz, int(plots.get("n_examples", 4)))
    outputs = [out_dir / "masking_illustration.png", out_dir / "reconstructions.png", out_dir / "pretrain_loss.png"]
    plot_masking_illustration(examples, mask_ratio, outputs[0], dpi)
    # MRM and MedIM reconstructions have their own figures (report_figures); this one compares the MAE family.
    plot_reconstructions(examples, [r for r in runs if is_mae_file(r / "autoencoder.safetensors")], outputs[1], dpi)
    plot_loss_curves(runs, outputs[2], dpi)
    log.info("wrote %s", ", ".join(str(p) for p in outputs))
    return outputs
