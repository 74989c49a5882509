"""Classification metrics of one run and a bootstrap comparing two inits' runs on the same test images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# numpy only (no sklearn): every fine-tuning job imports this module, and sklearn's import (scipy.stats and all)
# costs ~2 s of a ~15 s CPU job; tests/test_metrics.py checks each function against sklearn's.

PROB_FLOOR = 1e-12  # keeps the log-loss finite when a model is certain and wrong
UNCERTAIN = 255  # multilabel label value: uncertain, ignored in the loss and in that finding's AUC


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of 0/1 `labels` under `scores` (Mann-Whitney U, ties counted half); NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    n_positive = int(labels.sum())
    n_negative = len(labels) - n_positive
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative))


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at each distinct score as threshold (score >= t), from +inf down."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_value = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), len(scores) - 1]
    true_positives = np.r_[0, np.cumsum(sorted_labels)[last_of_value]]
    false_positives = np.r_[0, (last_of_value + 1) - true_positives[1:]]
    thresholds = np.r_[np.inf, sorted_scores[last_of_value]]
    return false_positives / max(1, (~labels).sum()), true_positives / max(1, labels.sum()), thresholds


def precision_recall_f1(labels: np.ndarray, preds: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(3, n_classes): precision, recall and F1 of each class in `classes` (0 where undefined)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    hits = np.array([np.sum((preds == c) & (labels == c)) for c in classes], dtype=np.float64)
    predicted = np.array([np.sum(preds == c) for c in classes], dtype=np.float64)
    actual = np.array([np.sum(labels == c) for c in classes], dtype=np.float64)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(hits), where=total > 0)
    return np.stack([precision, recall, f1])


def macro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC; NaN when a class is missing from `labels` (AUC undefined).

    With two classes the softmax scores satisfy p0 = 1 - p1, so the AUC of either class is the same
    number: no "positive" class has to be chosen.
    """
    n_classes = probs.shape[1]
    if len(np.unique(labels)) < n_classes or n_classes < 2:
        return float("nan")
    if n_classes == 2:
        return roc_auc(labels == 1, probs[:, 1])
    return float(np.mean([roc_auc(labels == c, probs[:, c]) for c in range(n_classes)]))


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
    per_class = precision_recall_f1(labels, preds, class_ids)
    precision, recall, f1 = per_class.mean(axis=1)
    per_class_recall = per_class[1]
    true_prob = np.clip(probs[np.arange(len(labels)), labels], PROB_FLOOR, 1.0)
    metrics = {
        "n": len(labels),
        "accuracy": float(np.mean(preds == labels)),
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
    fpr, tpr, thresholds = roc_points(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))  # the first threshold is +inf: no image positive


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 of the positive class at `threshold`, AUC and cross-entropy.

    `labels` are 0/1, `scores` the positive-class probabilities; AUC is NaN when one class is absent.
    """
    labels = np.asarray(labels, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(labels) == 0:
        return {"n": 0}
    preds = (scores >= threshold).astype(int)
    precision, recall, f1 = precision_recall_f1(labels, preds, np.array([1]))[:, 0]
    auc = roc_auc(labels, scores)
    return {
        "n": len(labels),
        "accuracy": float(np.mean(preds == labels)),
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
        auc = roc_auc(truth, probs[rows, column])
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
