"""Fine-tune a classifier (pretrained, ImageNet or random init) on a label subset; select the epoch on validation."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cxrmim.data.tensors import BatchLoader, augment_batch, load_prepared, normalise
from cxrmim.device import DeviceSetup, select_device
from cxrmim.evaluation import classification_metrics
from cxrmim.inits import InitSpec
from cxrmim.models.encoders import (
    create_encoder,
    is_vit,
    load_encoder_weights,
    read_encoder_metadata,
)
from cxrmim.recipe import LR_REFERENCE_BATCH, FinetuneSettings
from cxrmim.train.common import apply_lr, cosine_lr, seed_everything

log = logging.getLogger("cxrmim.finetune")

EVAL_BATCH = 256


def architecture_label(encoder_cfg: dict[str, Any]) -> str:
    """Architecture as named in the paper's tables (ViT / ResNet-50), else the timm name."""
    if is_vit(encoder_cfg):
        return "ViT"
    return {"resnet50": "ResNet-50"}.get(encoder_cfg["timm_name"], encoder_cfg["timm_name"])


def check_weights(init: InitSpec, weights: str | None) -> None:
    """Fail early, naming the config key to set, when an init's weights file is absent."""
    if not init.needs_weights:
        return
    if init.kind == "imagenet":
        where = f"finetune.imagenet_weights.{init.encoder_key}"
        fix = (
            f"set {where} in the config to a local .safetensors/.pth file with ImageNet weights of the "
            f"encoders.{init.encoder_key} architecture (nothing is downloaded at run time), "
            f"or remove {init.name} from finetune.inits"
        )
    else:
        where = f"pretrain output of {init.name}"
        fix = "run the pretrain rule first"
    if not weights or weights in ("None", "null"):
        raise FileNotFoundError(f"init {init.name} needs weights but none were given ({where}); {fix}")
    if not Path(weights).exists():
        raise FileNotFoundError(f"init {init.name}: weights file {weights} does not exist ({where}); {fix}")


def resolve_patch_size(init: InitSpec, weights: str | None, patch_size: int | None, image_size: int) -> int:
    """Patch size of a cxrmim encoder file's metadata, else the --patch-size given (ImageNet or scratch)."""
    if weights and init.kind in ("rgmim", "mae"):
        stored = read_encoder_metadata(weights)["timm_kwargs"]
        if stored.get("img_size", image_size) != image_size:
            raise ValueError(
                f"{weights} was pretrained on {stored['img_size']}px images but the cache has {image_size}px; "
                "pretrain and fine-tune on the same prepared cache"
            )
        if "patch_size" in stored:
            return int(stored["patch_size"])
    if patch_size is None:
        raise ValueError(f"init {init.name}: no patch size in the weights' metadata; pass --patch-size")
    return int(patch_size)


def build_model(
    init: InitSpec, encoder_cfg: dict[str, Any], weights: str | None, image_size: int, patch_size: int,
    num_classes: int, drop_path: float,
) -> nn.Module:
    """Encoder plus linear classification head (mean-pooled tokens for ViT, timm's own head for CNNs)."""
    model = create_encoder(encoder_cfg, image_size, patch_size, num_classes=num_classes, drop_path=drop_path)
    if init.needs_weights:
        try:
            load_encoder_weights(model, weights)
        except RuntimeError as err:  # torch's size-mismatch message does not say which config to change
            raise ValueError(
                f"{weights} does not fit encoders.{init.encoder_key} ({encoder_cfg['timm_name']}, "
                f"image {image_size}, patch {patch_size}): {err}"
            ) from err
    return model


def vit_layer_id(name: str, depth: int) -> int:
    """Depth of a ViT parameter for layer-wise lr decay: embeddings 0, block i -> i + 1, norm/head depth + 1."""
    if name.startswith(("cls_token", "reg_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on norms, biases and tokens; ViT layers get lr_scale = layer_decay^(distance to head)."""
    skip_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    depth = len(model.blocks) if hasattr(model, "blocks") else None
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim > 1 and name not in skip_decay
        layer = vit_layer_id(name, depth) if depth is not None else 0
        scale = layer_decay ** (depth + 1 - layer) if depth is not None else 1.0
        group = groups.setdefault(
            (layer, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        )
        group["params"].append(param)
    return list(groups.values())


@dataclass
class Part:
    """One part of the split as tensors: uint8 images, class indices, and the rows they came from."""

    images: torch.Tensor
    labels: torch.Tensor
    rows: pd.DataFrame  # index, id, label


@dataclass
class FinetuneData:
    """Training subset, validation and test parts, and the class order shared by every run."""

    classes: list[str]
    train: Part
    val: Part
    test: Part
    image_size: int


def load_finetune_data(prepared_dir: str | Path, split_csv: str | Path, subset_csv: str | Path) -> FinetuneData:
    """Read the cache once and cut it into the labelled subset, validation and test parts."""
    prepared = load_prepared(prepared_dir)
    split = pd.read_csv(split_csv, keep_default_na=False)
    subset = pd.read_csv(subset_csv, keep_default_na=False)
    # Sorted labels of the whole split: the same class order (and prob_ columns) in every run.
    classes = sorted(split["label"].astype(str).unique())
    held_out = set(split.loc[split["part"] != "train", "index"])
    leaked = held_out.intersection(subset["index"])
    if leaked:
        raise ValueError(f"{subset_csv}: {len(leaked)} labelled images belong to val/test (e.g. {sorted(leaked)[:3]})")
    class_index = {name: i for i, name in enumerate(classes)}

    def part(rows: pd.DataFrame) -> Part:
        rows = rows[["index", "id", "label"]].reset_index(drop=True)
        images = torch.from_numpy(np.asarray(prepared.images[rows["index"].to_numpy()]))
        labels = torch.tensor([class_index[str(label)] for label in rows["label"]], dtype=torch.long)
        return Part(images, labels, rows)

    return FinetuneData(
        classes=classes,
        train=part(subset),
        val=part(split[split["part"] == "val"]),
        test=part(split[split["part"] == "test"]),
        image_size=prepared.image_size,
    )


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, setup: DeviceSetup) -> np.ndarray:
    """Class probabilities (N, C) for uint8 images; results stay on the device until the single copy back."""
    model.eval()
    outputs = []
    for start in range(0, len(images), EVAL_BATCH):
        batch = images[start : start + EVAL_BATCH].to(setup.device, non_blocking=setup.non_blocking)
        with setup.autocast():
            logits = model(normalise(batch))
        outputs.append(logits.float().softmax(dim=1))
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).cpu().numpy()


def select_epoch(history: pd.DataFrame) -> int:
    """Epoch with the best validation accuracy, ties broken by lower validation loss, then the earlier epoch.

    The test columns are never looked at. Without validation data the last epoch is taken.
    """
    if "val_accuracy" not in history or history["val_accuracy"].isna().all():
        return int(history["epoch"].iloc[-1])
    ranked = history.sort_values(["val_accuracy", "val_loss", "epoch"], ascending=[False, True, True])
    return int(ranked["epoch"].iloc[0])


@dataclass(frozen=True)
class Schedule:
    """Warmup then cosine decay, evaluated per optimiser step."""

    total_steps: int
    warmup_steps: int
    peak_lr: float

    def lr(self, step: int) -> float:
        """Learning rate at a global step."""
        return cosine_lr(step, self.total_steps, self.warmup_steps, self.peak_lr)


def train_epoch(
    model: nn.Module, loader: BatchLoader, optimizer: torch.optim.Optimizer, schedule: Schedule,
    settings: FinetuneSettings, setup: DeviceSetup, generator: torch.Generator, epoch: int,
) -> tuple[float, float]:
    """One pass over the loader; returns the mean training loss and the last learning rate used."""
    model.train()
    loss_sum = torch.zeros((), device=setup.device)  # summed on the device: no host sync per step
    steps = len(loader)  # the same every epoch (BatchLoader repeats data up to min_batches)
    lr = schedule.lr(epoch * steps)
    for index, batch in enumerate(loader.epoch(epoch)):
        lr = schedule.lr(epoch * steps + index)
        apply_lr(optimizer, lr)
        images, _ = augment_batch(normalise(batch["image"]), None, settings.crop_scale, settings.hflip, generator)
        with setup.autocast():
            logits = model(images)
        loss = F.cross_entropy(logits.float(), batch["label"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
    return float(loss_sum) / steps, lr


@dataclass
class FinetuneResult:
    """Everything a run writes: the summary, per-epoch history and the selected epoch's test predictions."""

    metrics: dict[str, Any]
    history: pd.DataFrame
    predictions: pd.DataFrame


def finetune(
    data: FinetuneData,
    init: InitSpec,
    encoder_cfg: dict[str, Any],
    settings: FinetuneSettings,
    seed: int,
    fraction: float,
    weights: str | None = None,
    patch_size: int | None = None,
) -> FinetuneResult:
    """Train one classifier and evaluate val and test after every epoch; report the best-validation epoch."""
    check_weights(init, weights)
    if len(data.train.labels) == 0:
        raise ValueError("the label subset is empty; raise the label fraction")
    setup = select_device(settings.device)
    run_seed = settings.seed_offset * 1_000_003 + seed
    seed_everything(run_seed)
    vit = is_vit(encoder_cfg)
    patch = resolve_patch_size(init, weights, patch_size, data.image_size) if vit else int(patch_size or 16)
    model = build_model(init, encoder_cfg, weights, data.image_size, patch, len(data.classes), settings.drop_path)
    model.to(setup.device)

    # Never a batch larger than the subset, and only full batches: BatchNorm and the lr rule see one size.
    batch_size = min(settings.batch_size, len(data.train.labels))
    min_batches = math.ceil(settings.min_steps / settings.epochs) if settings.min_steps else 0
    loader = BatchLoader(
        {"image": data.train.images, "label": data.train.labels}, batch_size, setup,
        shuffle=True, seed=run_seed, drop_last=True, min_batches=min_batches,
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = round(settings.warmup_epochs * steps_per_epoch)
    # The configured batch sets the lr even when the subset is smaller: a full-batch step is no noisier than a
    # configured one, and scaling by a 12-image subset left the head of 1% runs nearly untrained.
    peak_lr = settings.base_lr * settings.batch_size / LR_REFERENCE_BATCH
    layer_decay = settings.layer_decay if vit else 1.0
    optimizer = torch.optim.AdamW(
        param_groups(model, settings.weight_decay, layer_decay), lr=peak_lr, betas=settings.betas
    )
    augment_generator = torch.Generator().manual_seed(run_seed)
    log.info(
        "init %s: %d train images, batch %d, %d steps/epoch, peak lr %.3g, device %s",
        init.name, len(data.train.labels), batch_size, steps_per_epoch, peak_lr, setup.device,
    )

    history: list[dict[str, Any]] = []
    epoch_results: list[tuple[dict, dict, np.ndarray]] = []  # (val, test, test probs) per epoch, chosen later
    schedule = Schedule(total_steps, warmup_steps, peak_lr)
    for epoch in range(settings.epochs):
        train_loss, lr = train_epoch(model, loader, optimizer, schedule, settings, setup, augment_generator, epoch)
        val_probs = predict(model, data.val.images, setup)
        test_probs = predict(model, data.test.images, setup)
        val = classification_metrics(data.val.labels.numpy(), val_probs, data.classes)
        test = classification_metrics(data.test.labels.numpy(), test_probs, data.classes)
        history.append(
            {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
            | {f"val_{k}": v for k, v in val.items()}
            | {f"test_{k}": v for k, v in test.items()}
        )
        log.info(
            "epoch %d/%d train loss %.4f val acc %.4f test acc %.4f",
            epoch + 1, settings.epochs, train_loss,
            val.get("accuracy", float("nan")), test.get("accuracy", float("nan")),
        )
        epoch_results.append((val, test, test_probs))

    history_table = pd.DataFrame(history)
    best_epoch = select_epoch(history_table)
    best_val, best_test, best_probs = epoch_results[best_epoch - 1]
    metrics = {
        "init": init.name,
        "method": init.method,
        "architecture": architecture_label(encoder_cfg),
        "mask_ratio": init.mask_ratio,
        "pretrain_seed": init.pretrain_seed,
        "fraction": float(fraction),
        "seed": int(seed),
        "n_train": int(len(data.train.labels)),
        "classes": data.classes,
        "best_epoch": best_epoch,
        "selection": "val_accuracy" if len(data.val.labels) else "last_epoch",
        "peak_lr": peak_lr,
        "batch_size": batch_size,
        "steps": total_steps,
        "device": str(setup.device),
        "val": best_val,
        "test": best_test,
    }
    return FinetuneResult(metrics, history_table, prediction_table(data.test, best_probs, data.classes))


def prediction_table(part: Part, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Per-image test predictions: index, id, label, pred, prob_<class>."""
    table = part.rows.copy()
    table["pred"] = [classes[i] for i in probs.argmax(axis=1)] if len(probs) else []
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probs[:, i] if len(probs) else []
    return table


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary sibling and rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


OUTPUT_FILES = ("history.csv", "predictions.csv", "metrics.json")


def write_result(result: FinetuneResult, out_dir: str | Path) -> None:
    """Write history and predictions first and metrics.json last: metrics.json marks a finished run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "history.csv", result.history.to_csv(index=False))
    write_atomic(out_dir / "predictions.csv", result.predictions.to_csv(index=False))
    write_atomic(out_dir / "metrics.json", json.dumps(json_safe(result.metrics), indent=2) + "\n")


def json_safe(value: Any) -> Any:
    """NaN (e.g. AUC when a class is absent from a part) becomes null: strict JSON readers reject NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def remove_outputs(out_dir: str | Path) -> None:
    """Delete a previous run's files so a failure cannot leave old and new outputs mixed."""
    for name in OUTPUT_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)
