"""Voxel-level agreement of a predicted PVS mask with the reference: Dice, sensitivity, precision, HD95.

Empty sets: when both masks are empty the agreement is perfect (Dice, sensitivity and precision 1,
HD95 0). Otherwise a ratio whose denominator is 0 is undefined (NaN: sensitivity without reference
voxels, precision without predicted voxels) and HD95 is NaN when exactly one mask is empty.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

__all__ = ["VoxelCounts", "hd95", "voxel_counts"]


@dataclass(frozen=True)
class VoxelCounts:
    """True positives, false positives and false negatives of a binary comparison (voxels)."""

    tp: int
    fp: int
    fn: int

    @property
    def empty(self) -> bool:
        return self.tp + self.fp + self.fn == 0

    @property
    def dice(self) -> float:
        return 1.0 if self.empty else 2 * self.tp / (2 * self.tp + self.fp + self.fn)

    @property
    def sensitivity(self) -> float:
        if self.empty:
            return 1.0
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def precision(self) -> float:
        if self.empty:
            return 1.0
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


def voxel_counts(prediction: np.ndarray, reference: np.ndarray) -> VoxelCounts:
    """Confusion counts of two boolean masks of the same shape."""
    prediction = np.asarray(prediction, bool)
    reference = np.asarray(reference, bool)
    tp = int(np.count_nonzero(prediction & reference))
    return VoxelCounts(
        tp=tp, fp=int(np.count_nonzero(prediction)) - tp, fn=int(np.count_nonzero(reference)) - tp
    )


def hd95(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the mask surfaces (MONAI).

    ``spacing`` is the voxel size per axis, so anisotropic grids are measured in mm. The masks are
    cropped to the bounding box of their union (plus a margin) first, which does not change the
    distances and keeps whole-brain grids fast. 0 when both masks are empty, NaN when one is.
    """
    prediction = np.asarray(prediction, bool)
    reference = np.asarray(reference, bool)
    has_prediction, has_reference = prediction.any(), reference.any()
    if not has_prediction and not has_reference:
        return 0.0
    if not has_prediction or not has_reference:
        return float("nan")
    union = np.argwhere(prediction | reference)
    box = tuple(
        slice(max(int(lo) - 2, 0), int(hi) + 3) for lo, hi in zip(union.min(0), union.max(0), strict=True)
    )
    pad = [(2, 2)] * prediction.ndim
    y_pred = torch.from_numpy(np.pad(prediction[box], pad))[None, None]
    y_true = torch.from_numpy(np.pad(reference[box], pad))[None, None]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(
            y_pred, y_true, include_background=True, percentile=95, spacing=[float(s) for s in spacing]
        )
    return float(distance.item())
