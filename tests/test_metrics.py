"""Evaluation metrics: exact values on constructed cases, cross-checked against MONAI and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    compute_confusion_matrix_metric,
    get_confusion_matrix,
)
from scipy import stats

from mednet_pvs.metrics import (
    DetectionCounts,
    hd95,
    lin_ccc,
    match_any_overlap,
    match_iou,
    overlaps,
    spearman,
    voxel_counts,
)


def _cube(shape, corner, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=True))] = True
    return mask


def _tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32))[None, None]


def test_identical_masks_score_perfectly():
    mask = _cube((20, 20, 20), (5, 5, 5), (4, 3, 6))
    counts = voxel_counts(mask, mask)
    assert (counts.tp, counts.fp, counts.fn) == (72, 0, 0)
    assert counts.dice == counts.sensitivity == counts.precision == 1.0
    assert hd95(mask, mask, (1.0, 1.0, 1.0)) == 0.0


def test_one_voxel_shift_gives_hand_computed_dice_and_matches_monai():
    reference = _cube((24, 24, 24), (8, 8, 8), (4, 4, 4))
    prediction = np.roll(reference, 1, axis=0)
    counts = voxel_counts(prediction, reference)
    # overlap 3x4x4 = 48 of 64 voxels each: Dice = 2 * 48 / 128
    assert (counts.tp, counts.fp, counts.fn) == (48, 16, 16)
    assert counts.dice == pytest.approx(0.75)
    metric = DiceMetric(include_background=True)
    metric(_tensor(prediction), _tensor(reference))
    assert counts.dice == pytest.approx(float(metric.aggregate().item()))


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 2.0)])
def test_hd95_equals_monai_on_the_full_grid(spacing):
    rng = np.random.default_rng(4)
    reference = _cube((30, 28, 26), (6, 7, 5), (10, 6, 9))
    prediction = np.roll(reference, (2, -1, 1), axis=(0, 1, 2))
    prediction[rng.integers(0, 30), rng.integers(0, 28), rng.integers(0, 26)] = True
    metric = HausdorffDistanceMetric(include_background=True, percentile=95)
    metric(_tensor(prediction), _tensor(reference), spacing=list(spacing))
    expected = float(metric.aggregate().item())
    assert hd95(prediction, reference, spacing) == pytest.approx(expected, rel=1e-6)
    assert expected > 0


def test_hd95_of_a_shift_along_a_thick_slice_axis_is_the_slice_thickness():
    reference = _cube((20, 20, 20), (5, 5, 5), (6, 6, 6))
    prediction = np.roll(reference, 1, axis=2)
    assert hd95(prediction, reference, (0.5, 0.5, 2.0)) == pytest.approx(2.0)


def test_sensitivity_and_precision_equal_monai_confusion_matrix_metrics():
    rng = np.random.default_rng(0)
    reference = rng.uniform(size=(16, 16, 16)) > 0.7
    prediction = rng.uniform(size=(16, 16, 16)) > 0.6
    counts = voxel_counts(prediction, reference)
    matrix = get_confusion_matrix(_tensor(prediction), _tensor(reference), include_background=True)
    for name, ours in (("sensitivity", counts.sensitivity), ("precision", counts.precision)):
        assert ours == pytest.approx(float(compute_confusion_matrix_metric(name, matrix).item()))


def test_empty_set_conventions():
    empty = np.zeros((8, 8, 8), bool)
    blob = _cube((8, 8, 8), (2, 2, 2), (2, 2, 2))
    both_empty = voxel_counts(empty, empty)
    assert both_empty.dice == both_empty.sensitivity == both_empty.precision == 1.0
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    missed = voxel_counts(empty, blob)
    assert missed.dice == 0.0 and missed.sensitivity == 0.0 and np.isnan(missed.precision)
    assert np.isnan(hd95(empty, blob, (1, 1, 1)))
    spurious = voxel_counts(blob, empty)
    assert spurious.dice == 0.0 and np.isnan(spurious.sensitivity) and spurious.precision == 0.0


def _separate_objects(n: int, shape=(40, 40, 12)) -> np.ndarray:
    """n 2x2x2 objects on a regular lattice, labelled 1..n."""
    labels = np.zeros(shape, np.int32)
    for i in range(n):
        x, y = 2 + 5 * (i % 7), 2 + 5 * (i // 7)
        labels[x : x + 2, y : y + 2, 4:6] = i + 1
    return labels


@pytest.mark.parametrize("n", [3, 10])
def test_one_missed_pvs_of_n_gives_the_exact_detection_f1(n):
    reference = _separate_objects(n)
    prediction = np.where(reference == n, 0, reference)
    pairs = overlaps(reference, prediction)
    ref_hit, pred_hit = match_any_overlap(pairs)
    ref_match, pred_match = match_iou(pairs)
    any_rule = DetectionCounts(n, n - 1, int(ref_hit.sum()), int(pred_hit.sum()))
    iou_rule = DetectionCounts(n, n - 1, int((ref_match > 0).sum()), int((pred_match > 0).sum()))
    # sensitivity (n-1)/n, precision 1: F1 = 2(n-1) / (2n-1) under both rules
    for rule in (any_rule, iou_rule):
        assert rule.sensitivity == pytest.approx((n - 1) / n)
        assert rule.precision == 1.0
        assert rule.f1 == pytest.approx(2 * (n - 1) / (2 * n - 1))


def test_iou_rule_and_any_overlap_rule_differ_on_a_constructed_case():
    reference = np.zeros((30, 30, 30), np.int32)
    reference[5:7, 5:7, 5:7] = 1  # small PVS (8 voxels)...
    reference[20:22, 5:7, 5:7] = 2
    reference[20:22, 10:12, 5:7] = 3
    prediction = np.zeros_like(reference)
    prediction[2:12, 2:12, 2:12] = 1  # ...inside a large blob: IoU 8/1000 = 0.008
    prediction[19:23, 4:13, 4:8] = 2  # one cluster over PVS 2 and 3 (IoU 8/144 each... below 0.1)
    prediction[20:22, 5:7, 20:22] = 3  # false positive
    pairs = overlaps(reference, prediction)
    np.testing.assert_allclose(np.sort(pairs.iou), np.sort([8 / 1000, 8 / 144, 8 / 144]))
    ref_hit, pred_hit = match_any_overlap(pairs)
    assert ref_hit[1:].tolist() == [True, True, True]
    assert pred_hit[1:].tolist() == [True, True, False]
    ref_match, pred_match = match_iou(pairs)
    assert ref_match[1:].tolist() == [0, 0, 0] and pred_match[1:].tolist() == [0, 0, 0]
    any_rule = DetectionCounts(3, 3, 3, 2)
    assert any_rule.f1 == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert DetectionCounts(3, 3, 0, 0).f1 == 0.0


def test_iou_matching_is_one_to_one_and_prefers_more_pairs():
    reference = np.zeros((20, 20, 20), np.int32)
    reference[2:6, 2:6, 2:6] = 1
    reference[6:8, 2:6, 2:6] = 2
    prediction = np.zeros_like(reference)
    prediction[2:7, 2:6, 2:6] = 1  # overlaps 1 (IoU 64/80) and 2 (IoU 16/96)
    prediction[7:8, 2:6, 2:6] = 2  # overlaps 2 only (IoU 16/32)
    pairs = overlaps(reference, prediction)
    ref_match, pred_match = match_iou(pairs)
    assert ref_match[1:].tolist() == [1, 2]
    assert pred_match[1:].tolist() == [1, 2]


def test_lin_ccc_on_known_numbers():
    x = np.array([1, 2, 3, 4, 5.0])
    # y = x + 1: population variances 2 and 2, covariance 2, mean difference 1 -> 4 / 5
    assert lin_ccc(x, x + 1) == pytest.approx(0.8)
    assert lin_ccc(x, x) == pytest.approx(1.0)
    # y = 2x: var_x 2, var_y 8, cov 4, mean difference 3 -> 8 / (2 + 8 + 9)
    assert lin_ccc(x, 2 * x) == pytest.approx(8 / 19)
    assert np.isnan(lin_ccc([1.0], [1.0]))


def test_spearman_matches_scipy_and_handles_degenerate_input():
    x = np.array([3, 1, 4, 1, 5, 9, 2, 6.0])
    y = np.array([2, 7, 1, 8, 2, 8, 1, 8.0])
    rho, p = spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert rho == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert all(np.isnan(v) for v in spearman([1, 2, 3], [4, 4, 4]))
