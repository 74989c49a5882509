"""Classification metrics against hand-computed values; the hierarchical bootstrap on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxrmim import evaluation
from cxrmim.evaluation import classification_metrics, hierarchical_bootstrap, macro_auc


def one_hot_probs(preds: list[int], n_classes: int, confidence: float = 0.8) -> np.ndarray:
    """Probabilities that put `confidence` on the predicted class and share the rest."""
    probs = np.full((len(preds), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_metrics_match_hand_computation() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = one_hot_probs([0, 1, 1, 1, 2, 0], 3)
    metrics = classification_metrics(labels, probs, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["recall_a"] == pytest.approx(0.5)
    assert metrics["recall_b"] == pytest.approx(1.0)
    assert metrics["recall_c"] == pytest.approx(0.5)
    assert metrics["recall_macro"] == pytest.approx(2 / 3)
    assert metrics["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # 4 correct images with p(true) = 0.8, 2 wrong with p(true) = 0.1
    assert metrics["loss"] == pytest.approx(-(4 * np.log(0.8) + 2 * np.log(0.1)) / 6)
    assert metrics["n"] == 6


def test_binary_auc_is_the_same_for_either_class() -> None:
    labels = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    assert macro_auc(labels, probs) == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ranked right
    assert macro_auc(1 - labels, probs[:, ::-1]) == pytest.approx(0.75)


def test_auc_is_nan_when_a_class_is_missing() -> None:
    probs = one_hot_probs([0, 1, 1], 3)
    assert np.isnan(classification_metrics(np.array([0, 1, 1]), probs, ["a", "b", "c"])["auc_macro"])


def test_bootstrap_interval_contains_true_difference() -> None:
    rng = np.random.default_rng(1)
    n_images = 2000
    correct_b = (rng.random(n_images) < 0.6).astype(float)
    # a is right wherever b is, and on half of b's errors: population difference 0.5 * 0.4 = 0.2
    correct_a = np.maximum(correct_b, (rng.random(n_images) < 0.5).astype(float))
    result = hierarchical_bootstrap(correct_a, correct_b, n_samples=500, seed=0)
    assert result["ci_low"] < 0.2 < result["ci_high"]
    assert result["ci_low"] < result["difference"] < result["ci_high"]
    assert result["p_value"] < 0.01
    assert hierarchical_bootstrap(correct_a, correct_b, n_samples=500, seed=0) == result  # seeded


def test_bootstrap_of_identical_single_runs_is_zero() -> None:
    correct = (np.random.default_rng(0).random(50) < 0.7).astype(float)
    result = hierarchical_bootstrap(correct, correct, n_samples=100, seed=0)
    assert result["difference"] == 0 and result["ci_low"] == 0 and result["ci_high"] == 0
    assert result["p_value"] == 1.0


def test_bootstrap_resamples_runs_as_well_as_images() -> None:
    """Two runs of a that disagree (seed noise) must widen the interval beyond what the images alone give."""
    n_images = 400
    images = np.arange(n_images)
    good, bad = (images % 10 < 9).astype(float), (images % 10 < 5).astype(float)  # accuracies 0.9 and 0.5
    b = (images % 10 < 7).astype(float)  # 0.7: the mean of a's two runs
    runs = hierarchical_bootstrap(np.stack([good, bad]), b, n_samples=2000, seed=0)
    images_only = hierarchical_bootstrap(np.stack([good, bad]).mean(axis=0), b, n_samples=2000, seed=0)
    assert runs["difference"] == pytest.approx(0.0) and images_only["difference"] == pytest.approx(0.0)
    assert runs["n_runs_a"] == 2 and runs["n_runs_b"] == 1 and runs["n_images"] == n_images
    # With two runs, a replicate draws {good, good} or {bad, bad} half the time: differences near +-0.2.
    assert runs["ci_low"] < -0.15 and runs["ci_high"] > 0.15
    assert images_only["ci_high"] - images_only["ci_low"] < 0.1
    assert runs["p_value"] > 0.5


def test_bootstrap_needs_the_same_test_images() -> None:
    correct = np.ones((3, 50))
    with pytest.raises(ValueError, match="same test images"):
        hierarchical_bootstrap(correct, correct[:, :40])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_metrics_equal_sklearn(seed: int) -> None:
    """The sklearn-free metrics give sklearn's numbers, ties and missing predictions included."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, roc_curve

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 200)
    labels[:4] = [0, 1, 2, 3]
    probs = np.round(rng.dirichlet(np.ones(4), 200), 1)  # rounding makes many ties
    probs /= probs.sum(axis=1, keepdims=True)
    preds = probs.argmax(axis=1)
    preds[preds == 3] = 2  # class 3 never predicted: precision 0 (sklearn's zero_division=0)
    mixed = np.eye(4)[preds] * 0.5 + probs * 0.5
    metrics = evaluation.classification_metrics(labels, mixed, list("abcd"))
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, mixed.argmax(axis=1), labels=np.arange(4), average="macro", zero_division=0
    )
    assert metrics["precision_macro"] == pytest.approx(precision)
    assert metrics["recall_macro"] == pytest.approx(recall)
    assert metrics["f1_macro"] == pytest.approx(f1)
    expected_auc = roc_auc_score(labels, mixed, multi_class="ovr", average="macro", labels=np.arange(4))
    assert metrics["auc_macro"] == pytest.approx(expected_auc)
    binary = (labels == 1).astype(int)
    scores = probs[:, 1]
    assert evaluation.roc_auc(binary, scores) == pytest.approx(roc_auc_score(binary, scores))
    fpr, tpr, thresholds = roc_curve(binary, scores)
    assert evaluation.choose_threshold(binary, scores) == pytest.approx(min(thresholds[np.argmax(tpr - fpr)], 1.0))
    result = evaluation.binary_metrics(binary, scores, 0.3)
    p, r, f, _ = precision_recall_fscore_support(
        binary, (scores >= 0.3).astype(int), labels=[1], average="binary", pos_label=1, zero_division=0
    )
    assert (result["precision"], result["recall"], result["f1"]) == pytest.approx((p, r, f))
