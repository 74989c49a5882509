"""Segmentation metrics against values computed by hand: Dice and IoU on positive images, SIIM's Kaggle rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrmim.segment.metrics import binarise, dice_iou, kaggle_dice, segmentation_metrics


def masks() -> tuple[np.ndarray, np.ndarray]:
    """Four 4x4 images: partial overlap, a missed lesion, a false alarm on a negative, a correct negative."""
    truth, pred = np.zeros((4, 4, 4), dtype=bool), np.zeros((4, 4, 4), dtype=bool)
    truth[0, 0, :4] = True  # 4 true pixels
    pred[0, 0, 2:4] = True  # 2 of them found ...
    pred[0, 1, 0] = True  # ... and 1 false pixel: Dice 2*2/(3+4) = 4/7, IoU 2/5
    truth[1, 2:4, 2:4] = True  # a lesion, nothing predicted: Dice 0, IoU 0
    pred[2, 3, 3] = True  # a negative image with a false alarm
    return pred, truth


def test_per_image_dice_and_iou():
    pred, truth = masks()
    dice, iou = dice_iou(pred, truth)
    assert dice[:3] == pytest.approx([4 / 7, 0.0, 0.0]) and math.isnan(dice[3])
    assert iou[:3] == pytest.approx([2 / 5, 0.0, 0.0]) and math.isnan(iou[3])
    one, _ = dice_iou(pred[0], truth[0])  # one (H, W) mask
    assert one == pytest.approx([4 / 7])


def test_kaggle_rule_scores_negatives_by_emptiness():
    pred, truth = masks()
    assert kaggle_dice(pred, truth).tolist() == pytest.approx([4 / 7, 0.0, 0.0, 1.0])


def test_means_over_positive_images_and_over_all_for_kaggle():
    pred, truth = masks()
    result = segmentation_metrics(pred, truth)
    assert result["n_images"] == 4 and result["n_positive"] == 2
    assert result["dice"] == pytest.approx((4 / 7 + 0) / 2)
    assert result["iou"] == pytest.approx((2 / 5 + 0) / 2)
    assert result["kaggle_dice"] == pytest.approx((4 / 7 + 0 + 0 + 1) / 4)
    assert result["per_image"]["positive"].tolist() == [True, True, False, False]
    perfect = segmentation_metrics(truth, truth)
    assert perfect["dice"] == perfect["iou"] == perfect["kaggle_dice"] == 1.0


def test_no_positive_image_gives_nan_dice_but_a_kaggle_score():
    truth = np.zeros((2, 3, 3), dtype=bool)
    pred = truth.copy()
    pred[1, 0, 0] = True
    result = segmentation_metrics(pred, truth)
    assert math.isnan(result["dice"]) and math.isnan(result["iou"]) and result["n_positive"] == 0
    assert result["kaggle_dice"] == pytest.approx(0.5)


def test_probabilities_must_be_binarised_and_shapes_agree():
    truth = np.zeros((1, 2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="binarise probabilities first"):
        segmentation_metrics(np.full((1, 2, 2), 0.7), truth)
    assert binarise(np.array([0.2, 0.5, 0.51])).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="same"):
        dice_iou(np.zeros((2, 2, 2)), np.zeros((1, 2, 2)))
