"""Slice-level PVS counts as in visual rating scales, and the Potter et al. 2015 categories.

Visual scales count PVS on chosen axial slices: the basal ganglia (BG) at the level of the anterior
commissure (AC), the centrum semiovale (CSO) about 1 cm above the lateral ventricles. Here those
slices are found from the region map (and the AC landmark when the registration provides it), and
the PVS of the segmentation that intersect the region on that slice are counted per hemisphere.
These are automated estimates, not visual ratings (see docs/statistics.md).

"Axial slice" means a plane of voxels perpendicular to the image axis closest to scanner z (the
slice direction of an axial acquisition). On oblique images that plane is tilted from the scanner's
axial plane by the obliquity; no resampling is done, so counts stay those of the acquired voxels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from nibabel.orientations import io_orientation

from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.stats.columns import REGION_COLUMNS

__all__ = [
    "CSO_SLICE_HEIGHT_MM",
    "RATED_STRUCTURES",
    "axial_axis",
    "epvs_slice_counts",
    "potter_category",
]

LOGGER = logging.getLogger(__name__)

RATED_STRUCTURES = ("basal_ganglia", "centrum_semiovale")
#: Height of the CSO rating slice above the top of the lateral ventricles.
CSO_SLICE_HEIGHT_MM = 10.0
#: Upper bounds (inclusive) of Potter et al. 2015 categories 1, 2 and 3; above the last is category 4.
POTTER_BOUNDS = (10, 20, 40)

EPVS_COLUMNS = [name for name in REGION_COLUMNS if name.startswith("epvs_")]


def potter_category(count: int) -> int:
    """Potter et al. 2015 category of a PVS count: 0 none, 1 = 1-10, 2 = 11-20, 3 = 21-40, 4 = >40."""
    if count < 0:
        raise ValueError(f"a PVS count cannot be negative ({count})")
    if count == 0:
        return 0
    return 1 + int(np.searchsorted(POTTER_BOUNDS, count, side="left"))


def axial_axis(affine: np.ndarray) -> int:
    """Voxel axis whose direction is closest to scanner z (the axial slice direction)."""
    ornt = io_orientation(np.asarray(affine, float))
    return int(np.nonzero(ornt[:, 0] == 2)[0][0])


def _indices(structure: str, hemisphere: str | None = None) -> list[int]:
    return [r.index for r in REGIONS if r.structure == structure and hemisphere in (None, r.hemisphere)]


def _slice_at(point_mm: np.ndarray, affine: np.ndarray, axis: int) -> int:
    """Index of the axial slice through a scanner-space point (may lie outside the image)."""
    voxel = np.linalg.solve(affine, np.append(point_mm, 1.0))[:3]
    return int(np.floor(voxel[axis] + 0.5))


def _bg_slice(
    region_map: np.ndarray, affine: np.ndarray, axis: int, ac_position_mm: Sequence[float] | None
) -> tuple[str, int | None]:
    n_slices = region_map.shape[axis]
    if ac_position_mm is not None:
        index = _slice_at(np.asarray(ac_position_mm, float), affine, axis)
        if 0 <= index < n_slices:
            return "anterior_commissure", index
        LOGGER.warning(
            "anterior commissure %s lies outside the image; using the fallback slice", ac_position_mm
        )
    bg = np.isin(region_map, _indices("basal_ganglia"))
    other_axes = tuple(a for a in range(3) if a != axis)
    area = bg.sum(axis=other_axes)
    if not area.any():
        return "unavailable", None
    return "largest_basal_ganglia_area", int(np.argmax(area))


def _cso_slice(region_map: np.ndarray, affine: np.ndarray, axis: int) -> tuple[str, int | None]:
    cso = np.argwhere(np.isin(region_map, _indices("centrum_semiovale"))).astype(float)
    if not len(cso):
        return "unavailable", None
    world = cso @ affine[:3, :3].T + affine[:3, 3]
    target = world.mean(axis=0)
    target[2] = world[:, 2].min() + CSO_SLICE_HEIGHT_MM
    # Clipped: on a field of view ending less than 1 cm above the ventricles, the last slice is used.
    index = int(np.clip(_slice_at(target, affine, axis), 0, region_map.shape[axis] - 1))
    return "ventricles_plus_10mm", index


def _count_on_slices(labels: np.ndarray, region: np.ndarray, axis: int) -> np.ndarray:
    """Number of distinct clusters intersecting ``region`` on every slice along ``axis``."""
    inside = region & (labels > 0)
    position = np.nonzero(inside)[axis]
    pairs = np.unique(np.stack([position, labels[inside]]), axis=1)
    return np.bincount(pairs[0], minlength=labels.shape[axis])


def epvs_slice_counts(
    labels: np.ndarray,
    region_map: np.ndarray,
    affine: np.ndarray,
    ac_position_mm: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Slice-level counts and categories for the BG and CSO rows (left, right, bilateral).

    Returns one row per (region, hemisphere) with the ``epvs_*`` columns of the region table. The
    bilateral row reports the hemisphere with the higher count (ties: left), so a single category
    per region can be read off; per-hemisphere values are in the left/right rows.
    """
    affine = np.asarray(affine, float)
    axis = axial_axis(affine)
    rows = []
    for structure in RATED_STRUCTURES:
        if structure == "basal_ganglia":
            method, index = _bg_slice(region_map, affine, axis, ac_position_mm)
        else:
            method, index = _cso_slice(region_map, affine, axis)
        sides = []
        for hemisphere in ("left", "right"):
            row = {"region": structure, "hemisphere": hemisphere, "epvs_slice_method": method}
            counts = _count_on_slices(labels, np.isin(region_map, _indices(structure, hemisphere)), axis)
            if index is not None:
                row["epvs_slice_index"] = index
                row["epvs_slice_count_auto"] = int(counts[index])
                row["epvs_slice_rating_auto"] = potter_category(int(counts[index]))
            if counts.any():
                row["epvs_maxslice_index"] = int(np.argmax(counts))
            row["epvs_maxslice_count_auto"] = int(counts.max())
            row["epvs_maxslice_rating_auto"] = potter_category(int(counts.max()))
            sides.append(row)
        bilateral = {"region": structure, "hemisphere": "bilateral", "epvs_slice_method": method}
        for prefix in ("epvs_slice", "epvs_maxslice"):
            worst = max(sides, key=lambda row, p=prefix: row.get(f"{p}_count_auto", -1))
            for suffix in ("index", "count_auto", "rating_auto"):
                if f"{prefix}_{suffix}" in worst:
                    bilateral[f"{prefix}_{suffix}"] = worst[f"{prefix}_{suffix}"]
        rows += [*sides, bilateral]
    table = pd.DataFrame(rows, columns=["region", "hemisphere", *EPVS_COLUMNS])
    integer_columns = [c for c in EPVS_COLUMNS if c != "epvs_slice_method"]
    return table.astype({c: "Int64" for c in integer_columns})
