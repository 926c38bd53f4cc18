"""Per-region PVS statistics: leaf structures per hemisphere and bilateral, aggregates, whole brain.

Row order is fixed (leaf structures in label order, then ``GROUPS``, then ``whole_brain``) and
every row is present even when it holds no PVS, so tables of different images line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mednet_pvs.regions.lut import GROUPS, REGIONS, structures
from mednet_pvs.stats.clusters import voxel_volume
from mednet_pvs.stats.columns import REGION_COLUMNS

__all__ = ["WHOLE_BRAIN", "RegionRow", "region_rows", "region_table"]

WHOLE_BRAIN = "whole_brain"


@dataclass(frozen=True)
class RegionRow:
    """One row of the region table: a name, a hemisphere and the leaf labels it gathers."""

    region: str
    hemisphere: str
    indices: tuple[int, ...]  # empty for whole_brain, which gathers everything


def _rows_for(name: str, members: tuple[str, ...]) -> list[RegionRow]:
    leaves = [r for r in REGIONS if r.structure in members]
    lateral = all(r.hemisphere in ("left", "right") for r in leaves)
    rows = []
    if lateral:
        for side in ("left", "right"):
            rows.append(RegionRow(name, side, tuple(r.index for r in leaves if r.hemisphere == side)))
    rows.append(RegionRow(name, "bilateral", tuple(r.index for r in leaves)))
    return rows


def region_rows() -> list[RegionRow]:
    """All rows in table order: leaves (left, right, bilateral), then ``GROUPS``, then the whole brain."""
    rows = [row for structure in structures() for row in _rows_for(structure, (structure,))]
    rows += [row for name, members in GROUPS.items() for row in _rows_for(name, members)]
    rows.append(RegionRow(WHOLE_BRAIN, "bilateral", ()))
    return rows


def region_table(
    census: pd.DataFrame,
    clusters: np.ndarray,
    region_map: np.ndarray | None,
    affine: np.ndarray,
    brain_mask: np.ndarray | None = None,
    slice_counts: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Region statistics (columns of ``REGION_COLUMNS``) from the census and the images.

    ``clusters`` is the labelled PVS image (0 = background) and ``region_map`` the PVS region labels
    on the same grid; ``slice_counts`` is :func:`mednet_pvs.stats.ratings.epvs_slice_counts`.
    """
    voxel_mm3 = voxel_volume(affine)
    n_labels = max(r.index for r in REGIONS) + 1
    if region_map is None:
        region_voxels = pvs_voxels = np.zeros(n_labels, np.int64)
    else:
        labels = np.asarray(region_map).ravel()
        labels = np.where(labels < n_labels, labels, 0).astype(np.intp)  # labels outside the table: no region
        region_voxels = np.bincount(labels, minlength=n_labels)
        pvs_voxels = np.bincount(labels[np.asarray(clusters).ravel() > 0], minlength=n_labels)
    if brain_mask is not None:
        brain_voxels = int(np.count_nonzero(brain_mask))
    else:
        brain_voxels = int(region_voxels[1:].sum())

    rows = []
    for row in region_rows():
        if row.region == WHOLE_BRAIN:
            members = census
            region_mm3 = brain_voxels * voxel_mm3
            inside_mm3 = float(np.count_nonzero(clusters)) * voxel_mm3
        else:
            members = census[census["region_index"].isin(row.indices)]
            region_mm3 = float(region_voxels[list(row.indices)].sum()) * voxel_mm3
            inside_mm3 = float(pvs_voxels[list(row.indices)].sum()) * voxel_mm3
        volumes = members["volume_mm3"].to_numpy(float)
        count = len(members)
        rows.append(
            {
                "region": row.region,
                "hemisphere": row.hemisphere,
                "count": count,
                "volume_mm3": float(volumes.sum()),
                "volume_in_region_mm3": inside_mm3,
                "region_volume_mm3": region_mm3,
                "volume_fraction": inside_mm3 / region_mm3 if region_mm3 > 0 else np.nan,
                "density_per_cm3": count / (region_mm3 / 1000.0) if region_mm3 > 0 else np.nan,
                "mean_cluster_volume_mm3": volumes.mean() if count else np.nan,
                "median_cluster_volume_mm3": float(np.median(volumes)) if count else np.nan,
                "max_cluster_volume_mm3": volumes.max() if count else np.nan,
                "mean_length_mm": float(members["length_mm"].mean()) if count else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    if slice_counts is not None:
        table = table.merge(slice_counts, on=["region", "hemisphere"], how="left")
    return table.reindex(columns=list(REGION_COLUMNS))
