"""What differs between multiclass, binary and multilabel fine-tuning: loss, output probabilities, per-epoch
metrics and the validation column that selects the epoch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cxrmim import registry
from cxrmim.data.placement import Rows
from cxrmim.data.tensors import to_device
from cxrmim.device import DeviceSetup
from cxrmim.evaluation import (
    UNCERTAIN,
    binary_metrics,
    choose_threshold,
    classification_metrics,
    multilabel_metrics,
)
from cxrmim.models.encoders import InputNorm

# Validation column that picks the epoch: accuracy needs a threshold for binary tasks, so AUC is threshold-free
# there; mean AUC is the multilabel headline number.
SELECTION_COLUMN = {"multiclass": "val_accuracy", "binary": "val_auc", "multilabel": "val_auc_mean"}
FINETUNE_MODES = registry.names(registry.FINETUNE_MODES)  # declared in cxrmim.registry
EVAL_BATCH = 256


def task_loss(logits: torch.Tensor, targets: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Cross-entropy over classes, or binary cross-entropy per output with uncertain targets (255) left out."""
    if not sigmoid:
        return F.cross_entropy(logits, targets)
    known = targets != UNCERTAIN
    truth = torch.where(known, targets, torch.zeros_like(targets)).to(logits.dtype)
    per_output = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    return (per_output * known).sum() / known.sum().clamp(min=1)  # a division on the device: no host sync


def probabilities(logits: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Softmax over classes, or one independent sigmoid per output."""
    return logits.sigmoid() if sigmoid else logits.softmax(dim=1)


def epoch_metrics(
    task: str, classes: list[str], val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validation and test metrics of one epoch from (labels, probabilities) pairs.

    A binary task's threshold is chosen on validation (Youden's J) and applied unchanged to test.
    """
    (val_labels, val_probs), (test_labels, test_probs) = val, test
    if task == "multiclass":
        return classification_metrics(val_labels, val_probs, classes), classification_metrics(
            test_labels, test_probs, classes
        )
    if task == "binary":
        threshold = choose_threshold(val_labels[:, 0], val_probs[:, 0]) if len(val_labels) else 0.5
        return binary_metrics(val_labels[:, 0], val_probs[:, 0], threshold), binary_metrics(
            test_labels[:, 0], test_probs[:, 0], threshold
        )
    return multilabel_metrics(val_labels, val_probs, classes), multilabel_metrics(test_labels, test_probs, classes)


def select_epoch(history: pd.DataFrame, column: str = "val_accuracy") -> int:
    """Epoch with the best validation `column` (higher is better), ties broken by lower validation loss, then the
    earlier epoch. The test columns are never looked at. Without validation data the last epoch is taken."""
    if column not in history or history[column].isna().all():
        return int(history["epoch"].iloc[-1])
    ranked = history.sort_values([column, "val_loss", "epoch"], ascending=[False, True, True])
    return int(ranked["epoch"].iloc[0])


def freeze_for_probe(model: torch.nn.Module) -> None:
    """Linear probe: only the classification head trains; the encoder's weights stay as initialised."""
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor | Rows, norm: InputNorm, setup: DeviceSetup, sigmoid: bool = False
) -> np.ndarray:
    """Output probabilities (N, C) for uint8 images on the device (or host rows, sent a chunk at a time
    asynchronously); one copy back at the end."""
    model.eval()
    outputs = []
    for start in range(0, len(images), EVAL_BATCH):
        if isinstance(images, Rows):
            chunk = to_device(images.gather(np.arange(start, min(start + EVAL_BATCH, len(images)))), setup)
        else:
            chunk = images[start : start + EVAL_BATCH]
        with setup.autocast():
            logits = model(norm.apply(chunk))
        outputs.append(probabilities(logits.float(), sigmoid))
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outputs).cpu().numpy()
