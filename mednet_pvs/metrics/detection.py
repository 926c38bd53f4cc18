"""Object-level detection: matching predicted PVS clusters to reference PVS.

Two rules are reported side by side:

- **any overlap** (SHiVAi / PINGU-style counting): a reference PVS is detected when at least one
  predicted cluster overlaps it; a predicted cluster is a false positive when it overlaps no
  reference PVS. Sensitivity counts references, precision counts predicted clusters, and F1 is
  their harmonic mean (one cluster may detect several PVS).
- **one-to-one IoU > 0.1** (the matching described for VALDO): a reference and a predicted
  cluster may be paired when their intersection over union exceeds 0.1; every object is paired
  at most once, choosing the pairing with the most pairs and, among those, the largest total IoU
  (Hungarian algorithm, scipy). TP = pairs, FP = unpaired predictions, FN = unpaired references,
  F1 = 2TP / (2TP + FP + FN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["IOU_THRESHOLD", "DetectionCounts", "Overlaps", "match_any_overlap", "match_iou", "overlaps"]

#: IoU a pair must exceed to be matched under the one-to-one rule.
IOU_THRESHOLD = 0.1


@dataclass(frozen=True)
class Overlaps:
    """Voxel overlaps between reference objects (ids 1..n_ref) and predicted objects (1..n_pred)."""

    n_ref: int
    n_pred: int
    ref_sizes: np.ndarray  # (n_ref + 1,) voxels per id, index 0 unused
    pred_sizes: np.ndarray
    ref_ids: np.ndarray  # (P,) pairs with a non-empty intersection
    pred_ids: np.ndarray
    intersections: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        union = self.ref_sizes[self.ref_ids] + self.pred_sizes[self.pred_ids] - self.intersections
        return self.intersections / union


def overlaps(reference: np.ndarray, prediction: np.ndarray) -> Overlaps:
    """All overlapping (reference id, predicted id) pairs of two label images (0 = background)."""
    reference = np.asarray(reference).ravel().astype(np.int64)
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    n_ref = int(reference.max(initial=0))
    n_pred = int(prediction.max(initial=0))
    both = (reference > 0) & (prediction > 0)
    pair_keys, counts = np.unique(reference[both] * (n_pred + 1) + prediction[both], return_counts=True)
    return Overlaps(
        n_ref=n_ref,
        n_pred=n_pred,
        ref_sizes=np.bincount(reference, minlength=n_ref + 1),
        pred_sizes=np.bincount(prediction, minlength=n_pred + 1),
        ref_ids=pair_keys // (n_pred + 1),
        pred_ids=pair_keys % (n_pred + 1),
        intersections=counts,
    )


def match_any_overlap(pairs: Overlaps) -> tuple[np.ndarray, np.ndarray]:
    """(reference detected (n_ref + 1,), prediction overlaps a reference (n_pred + 1,)); index 0 unused."""
    ref_hit = np.zeros(pairs.n_ref + 1, bool)
    pred_hit = np.zeros(pairs.n_pred + 1, bool)
    ref_hit[pairs.ref_ids] = True
    pred_hit[pairs.pred_ids] = True
    return ref_hit, pred_hit


def match_iou(pairs: Overlaps, threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching on IoU > ``threshold``: (matched prediction per reference, matched reference
    per prediction), 0 where unmatched; arrays of length n + 1, index 0 unused.

    Solved per connected block of the bipartite candidate graph, so large images stay fast.
    """
    ref_match = np.zeros(pairs.n_ref + 1, np.int64)
    pred_match = np.zeros(pairs.n_pred + 1, np.int64)
    iou = pairs.iou
    eligible = iou > threshold
    refs, preds, iou = pairs.ref_ids[eligible], pairs.pred_ids[eligible], iou[eligible]
    if not len(refs):
        return ref_match, pred_match
    # graph nodes: references 0..n_ref, predictions n_ref+1 .. n_ref+n_pred+1
    n_nodes = pairs.n_ref + pairs.n_pred + 2
    graph = coo_matrix((np.ones(len(refs)), (refs, pairs.n_ref + 1 + preds)), shape=(n_nodes, n_nodes))
    _, block = connected_components(graph, directed=False)
    pair_block = block[refs]
    for b in np.unique(pair_block):
        members = pair_block == b
        r, p, w = refs[members], preds[members], iou[members]
        rows, r_index = np.unique(r, return_inverse=True)
        cols, p_index = np.unique(p, return_inverse=True)
        # One more pair always outweighs any gain in total IoU (each IoU <= 1), so the solution has
        # the most pairs first and the largest total IoU among those.
        weight = np.zeros((len(rows), len(cols)))
        weight[r_index, p_index] = (min(len(rows), len(cols)) + 1) + w
        row_ind, col_ind = linear_sum_assignment(weight, maximize=True)
        chosen = weight[row_ind, col_ind] > 0
        ref_match[rows[row_ind[chosen]]] = cols[col_ind[chosen]]
        pred_match[cols[col_ind[chosen]]] = rows[row_ind[chosen]]
    return ref_match, pred_match


@dataclass(frozen=True)
class DetectionCounts:
    """Object counts of one comparison under one matching rule.

    ``ref_detected`` references are detected (any overlap) or matched (IoU rule); ``pred_true``
    predicted clusters overlap or are matched to a reference. With both sets empty every score is
    1; with only one empty, F1 is 0 and the ratio without objects is undefined (NaN).
    """

    n_ref: int
    n_pred: int
    ref_detected: int
    pred_true: int

    @property
    def sensitivity(self) -> float:
        if self.n_ref == 0:
            return 1.0 if self.n_pred == 0 else float("nan")
        return self.ref_detected / self.n_ref

    @property
    def precision(self) -> float:
        if self.n_pred == 0:
            return 1.0 if self.n_ref == 0 else float("nan")
        return self.pred_true / self.n_pred

    @property
    def f1(self) -> float:
        """Harmonic mean of sensitivity and precision (2TP / (2TP + FP + FN) for one-to-one matching)."""
        if self.n_ref == 0 and self.n_pred == 0:
            return 1.0
        if self.n_ref == 0 or self.n_pred == 0:
            return 0.0
        s, p = self.sensitivity, self.precision
        return 0.0 if s + p == 0 else 2 * s * p / (s + p)
