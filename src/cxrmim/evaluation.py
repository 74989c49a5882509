"""Classification metrics of one run and a bootstrap comparing two inits' runs on the same test images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

PROB_FLOOR = 1e-12  # keeps the log-loss finite when a model is certain and wrong
UNCERTAIN = 255  # multilabel label value: uncertain, ignored in the loss and in that finding's AUC


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC; NaN when a class is missing from `labels` (AUC undefined).

    With two classes the softmax scores satisfy p0 = 1 - p1, so the AUC of either class is the same
    number: no "positive" class has to be chosen.
    """
    n_classes = probs.shape[1]
    if len(np.unique(labels)) < n_classes or n_classes < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro F1/precision/recall, macro AUC, cross-entropy and per-class recall from class probabilities.

    `labels` are integer class indices into `classes`; `probs` is (N, n_classes).
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return {"n": 0}
    preds = probs.argmax(axis=1)
    class_ids = np.arange(len(classes))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=class_ids, average="macro", zero_division=0
    )
    _, per_class_recall, _, _ = precision_recall_fscore_support(
        labels, preds, labels=class_ids, average=None, zero_division=0
    )
    true_prob = np.clip(probs[np.arange(len(labels)), labels], PROB_FLOOR, 1.0)
    metrics = {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "auc_macro": macro_auc(labels, probs),
        "loss": float(-np.log(true_prob).mean()),
    }
    metrics.update({f"recall_{name}": float(value) for name, value in zip(classes, per_class_recall)})
    return metrics


def binary_cross_entropy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean binary cross-entropy of 0/1 labels under probabilities (same shapes)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), PROB_FLOOR, 1.0 - PROB_FLOOR)
    labels = np.asarray(labels, dtype=np.float64)
    return float(-(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean())


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """Decision threshold maximising Youden's J (sensitivity + specificity - 1) on validation; 0.5 without both
    classes, where no threshold is defined."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))  # roc_curve's first threshold is +inf: no image positive


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 of the positive class at `threshold`, AUC and cross-entropy.

    `labels` are 0/1, `scores` the positive-class probabilities; AUC is NaN when one class is absent.
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(labels) == 0:
        return {"n": 0}
    preds = (scores >= threshold).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=[1], average="binary", pos_label=1, zero_division=0
    )
    auc = float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")
    return {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, preds)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": auc,
        "loss": binary_cross_entropy(labels, scores),
        "threshold": float(threshold),
        "n_positive": int(labels.sum()),
    }


def multilabel_metrics(labels: np.ndarray, probs: np.ndarray, findings: Sequence[str]) -> dict[str, float]:
    """Per-finding ROC AUC (uncertain labels left out), their mean (the field's headline number) and the masked
    binary cross-entropy. A finding without both classes among its certain labels has AUC NaN and is left out
    of the mean; `n_auc_findings` says how many entered it.
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return {"n": 0}
    known = labels != UNCERTAIN
    metrics: dict[str, float] = {"n": len(labels)}
    aucs = []
    for column, name in enumerate(findings):
        rows = known[:, column]
        truth = labels[rows, column].astype(int)
        auc = float(roc_auc_score(truth, probs[rows, column])) if len(np.unique(truth)) == 2 else float("nan")
        metrics[f"auc_{name}"] = auc
        if not np.isnan(auc):
            aucs.append(auc)
    metrics["auc_mean"] = float(np.mean(aucs)) if aucs else float("nan")
    metrics["n_auc_findings"] = len(aucs)
    metrics["loss"] = binary_cross_entropy(labels[known], probs[known]) if known.any() else float("nan")
    return metrics


def hierarchical_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, n_samples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Bootstrap the mean-accuracy difference a - b over runs and test images together.

    Inputs are 0/1 correctness arrays of shape (n_images,) or (n_runs, n_images), one row per run (e.g. every
    pretraining seed x label-subset seed); a and b may have different numbers of runs but share the test
    images, column for column. Each replicate resamples the runs of a and of b (with replacement, each side
    on its own) and the test images (one draw shared by both sides, so the comparison stays paired on the
    images), and takes the difference of the mean accuracies. Returns the observed difference, the
    percentile interval and a two-sided bootstrap p-value (how often the resampled sign flips, doubled).
    With one run per side this is the paired bootstrap over test images.
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the runs must cover the same test images; {a.shape[1]} and {b.shape[1]} images")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("each side needs at least one run")
    n_images = a.shape[1]
    rng = np.random.default_rng(seed)
    # Counts of each image / run in a replicate: a weighted mean equals the mean over the resampled items.
    image_weights = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_samples) / n_images
    weights_a = rng.multinomial(a.shape[0], np.full(a.shape[0], 1.0 / a.shape[0]), size=n_samples) / a.shape[0]
    weights_b = rng.multinomial(b.shape[0], np.full(b.shape[0], 1.0 / b.shape[0]), size=n_samples) / b.shape[0]
    # (replicate, run) accuracy on the resampled images, then averaged over the resampled runs.
    accuracy_a = np.sum(weights_a * (image_weights @ a.T), axis=1)
    accuracy_b = np.sum(weights_b * (image_weights @ b.T), axis=1)
    diffs = accuracy_a - accuracy_b
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    p_value = min(1.0, 2.0 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))
    return {
        "accuracy_a": float(a.mean()),
        "accuracy_b": float(b.mean()),
        "difference": float(a.mean() - b.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "n_images": int(n_images),
        "n_runs_a": int(a.shape[0]),
        "n_runs_b": int(b.shape[0]),
        "n_bootstrap": int(n_samples),
    }
