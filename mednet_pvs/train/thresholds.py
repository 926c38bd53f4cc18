"""Validation scores over a grid of probability thresholds, and the threshold that maximises one of them.

Each threshold is scored on the mask the app writes (:func:`mednet_pvs.stats.clusters.pvs_mask`): a
voxel is PVS when its probability is strictly above the threshold, and 26-connected clusters smaller
than the minimum cluster size are dropped. Scores are those of ``mednet-pvs-eval``
(:mod:`mednet_pvs.metrics`): voxel Dice, sensitivity and precision (:class:`VoxelCounts`), and the
detection F1 of 26-connected clusters under the any-overlap rule (:class:`DetectionCounts`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mednet_pvs.metrics.detection import DetectionCounts, match_any_overlap, overlaps
from mednet_pvs.metrics.voxel import VoxelCounts, voxel_counts
from mednet_pvs.stats.clusters import label_clusters, pvs_mask

__all__ = ["CRITERIA", "DEFAULT_THRESHOLDS", "ThresholdScores", "choose_threshold", "threshold_scores"]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: Scores a threshold can be chosen by (means over validation cases).
CRITERIA = ("dice", "cluster_f1")


@dataclass
class ThresholdScores:
    """One case's voxel and cluster counts at every threshold."""

    thresholds: np.ndarray
    voxels: list[VoxelCounts]
    clusters: list[DetectionCounts]

    def series(self, metric: str) -> np.ndarray:
        """Voxel ``dice``/``sensitivity``/``precision`` or ``cluster_f1`` per threshold (NaN: undefined)."""
        if metric == "cluster_f1":
            return np.array([c.f1 for c in self.clusters])
        return np.array([getattr(v, metric) for v in self.voxels])

    def at(self, threshold: float) -> dict[str, float]:
        """Every score at one of the scored thresholds."""
        index = int(np.argmin(np.abs(self.thresholds - threshold)))
        if abs(self.thresholds[index] - threshold) > 1e-9:
            raise ValueError(f"threshold {threshold} was not scored ({self.thresholds.tolist()})")
        voxels, clusters = self.voxels[index], self.clusters[index]
        return {
            "dice": voxels.dice,
            "sensitivity": voxels.sensitivity,
            "precision": voxels.precision,
            "cluster_f1": clusters.f1,
            "cluster_sensitivity": clusters.sensitivity,
            "cluster_precision": clusters.precision,
        }


def threshold_scores(
    probability: np.ndarray,
    label: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_cluster_mm3: float = 0.0,
    voxel_volume_mm3: float = 1.0,
) -> ThresholdScores:
    """Scores of the app's mask of ``probability`` at every threshold against the binary ``label``.

    ``min_cluster_mm3`` and ``voxel_volume_mm3`` drop small clusters as the app does (0: keep all).
    """
    probability = np.asarray(probability, np.float32)
    truth = np.asarray(label) > 0
    if probability.shape != truth.shape:
        raise ValueError(f"probability shape {probability.shape} differs from label shape {truth.shape}")
    grid = np.asarray(sorted(thresholds), float)
    reference, _ = label_clusters(truth)
    voxels, clusters = [], []
    for cut in grid:
        mask = pvs_mask(probability, float(cut), min_cluster_mm3, voxel_volume_mm3)
        voxels.append(voxel_counts(mask, truth))
        predicted, n_predicted = label_clusters(mask)
        pairs = overlaps(reference, predicted)
        ref_hit, pred_hit = match_any_overlap(pairs)
        clusters.append(
            DetectionCounts(pairs.n_ref, n_predicted, int(ref_hit[1:].sum()), int(pred_hit[1:].sum()))
        )
    return ThresholdScores(grid, voxels, clusters)


def choose_threshold(cases: Sequence[ThresholdScores], criterion: str = "dice") -> tuple[float, np.ndarray]:
    """(threshold with the best mean ``criterion`` over cases, the means); ties go to the one nearest 0.5."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose from {CRITERIA}")
    if not cases:
        raise ValueError("no validation cases to choose a threshold on")
    grid = cases[0].thresholds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a threshold undefined for every case stays NaN
        mean = np.nanmean([case.series(criterion) for case in cases], axis=0)
    scored = np.where(np.isnan(mean), -np.inf, mean)
    best = np.flatnonzero(scored >= scored.max() - 1e-12)
    chosen = best[np.argmin(np.abs(grid[best] - 0.5))]
    return float(grid[chosen]), mean
