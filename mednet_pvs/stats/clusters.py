"""PVS mask, 26-connected clusters and the per-cluster census (one row per PVS).

All arrays are in the input's native voxel grid; coordinates are scanner mm (the affine applied),
so volumes, lengths and centroids are right for anisotropic, LPS and oblique grids alike.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from mednet_pvs.regions.lut import region_by_index
from mednet_pvs.stats.columns import CENSUS_COLUMNS

__all__ = [
    "CONNECTIVITY_26",
    "cluster_census",
    "label_clusters",
    "min_cluster_voxels",
    "pvs_mask",
    "voxel_volume",
]

#: Full 3x3x3 neighbourhood: voxels sharing a face, an edge or a corner are one cluster.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)

UNASSIGNED = "unassigned"


def voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel in mm^3: |det| of the affine's linear part (right for oblique grids).

    Rounded to 6 significant digits: NIfTI stores the affine in float32, whose rounding would
    otherwise turn 1 mm^3 into 0.99999994 and every volume into 1378.99992-style numbers.
    """
    return float(f"{abs(np.linalg.det(np.asarray(affine, float)[:3, :3])):.6g}")


def min_cluster_voxels(min_cluster_mm3: float, voxel_volume_mm3: float) -> int:
    """Smallest cluster size (voxels) whose volume reaches ``min_cluster_mm3``.

    A cluster is kept when ``voxels * voxel_volume >= min_cluster_mm3``, i.e. ``voxels >=
    ceil(min / voxel_volume)``. The relative slack of 1e-6 keeps exact multiples from rounding up
    by float32 noise (a voxel volume of 0.9999997 mm^3 must not turn 2 mm^3 into 3 voxels).
    At least one voxel.
    """
    if min_cluster_mm3 < 0 or voxel_volume_mm3 <= 0:
        raise ValueError(f"min_cluster_mm3 ({min_cluster_mm3}) must be >= 0 and voxel volume > 0")
    return max(1, math.ceil(min_cluster_mm3 / voxel_volume_mm3 * (1 - 1e-6)))


def label_clusters(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 26-connected clusters of ``mask``: (int32 labels, number of clusters).

    Ids run 1..n in raster order of each cluster's first voxel (scipy's order), so they are
    reproducible for a given mask and grid.
    """
    labels, n_clusters = ndimage.label(np.asarray(mask, bool), structure=CONNECTIVITY_26)
    return labels.astype(np.int32, copy=False), int(n_clusters)


def pvs_mask(
    probability: np.ndarray,
    threshold: float,
    min_cluster_mm3: float,
    voxel_volume_mm3: float,
    brain_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Binary PVS mask: ``probability > threshold`` inside the brain, without clusters below the minimum size.

    Clusters are 26-connected; a cluster survives when its volume is at least ``min_cluster_mm3``
    (see :func:`min_cluster_voxels`), which keeps the option invariant to the voxel size.
    """
    mask = np.asarray(probability) > threshold
    if brain_mask is not None:
        if brain_mask.shape != mask.shape:
            raise ValueError(
                f"brain mask shape {brain_mask.shape} differs from probability shape {mask.shape}"
            )
        mask &= np.asarray(brain_mask, bool)
    min_voxels = min_cluster_voxels(min_cluster_mm3, voxel_volume_mm3)
    if min_voxels <= 1:
        return mask
    labels, _ = label_clusters(mask)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels]


def _principal_axes(
    centred: np.ndarray, cluster: np.ndarray, n_clusters: int, voxels: np.ndarray
) -> np.ndarray:
    """Unit principal axis (largest covariance eigenvector) per cluster, pointing superior."""
    covariance = np.empty((n_clusters, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            moment = (
                np.bincount(cluster, weights=centred[:, a] * centred[:, b], minlength=n_clusters) / voxels
            )
            covariance[:, a, b] = covariance[:, b, a] = moment
    _, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, :, -1]  # eigh sorts eigenvalues ascending
    # Sign convention: z >= 0, then y >= 0, then x >= 0 (first non-negligible component decides).
    sign = np.ones(n_clusters)
    undecided = np.ones(n_clusters, bool)
    for component in (2, 1, 0):
        value = axes[:, component]
        decided = undecided & (np.abs(value) > 1e-9)
        sign[decided & (value < 0)] = -1.0
        undecided &= ~decided
    return axes * sign[:, None]


def cluster_census(
    labels: np.ndarray,
    n_clusters: int,
    affine: np.ndarray,
    region_map: np.ndarray | None = None,
    probability: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per cluster of ``labels`` (ids 1..n_clusters), with the columns of ``CENSUS_COLUMNS``.

    ``region_map`` holds PVS region labels (see :mod:`mednet_pvs.regions.lut`) on the same grid;
    a cluster is assigned to the region holding most of its voxels, ties going to the lowest label
    index (deterministic and independent of voxel order); voxels outside every region do not vote.
    Vectorised over clusters (bincount), so 10^4 clusters cost about as much as one.
    """
    affine = np.asarray(affine, float)
    for name, array in (("region map", region_map), ("probability", probability)):
        if array is not None and array.shape != labels.shape:
            raise ValueError(
                f"{name} shape {array.shape} differs from the cluster image shape {labels.shape}"
            )
    if n_clusters == 0:
        return pd.DataFrame({name: pd.Series(dtype=_census_dtype(name)) for name in CENSUS_COLUMNS})

    flat = np.flatnonzero(labels)
    cluster = labels.ravel()[flat].astype(np.intp) - 1
    ijk = np.stack(np.unravel_index(flat, labels.shape), axis=1).astype(float)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]

    voxels = np.bincount(cluster, minlength=n_clusters).astype(float)
    centroid = np.stack(
        [np.bincount(cluster, weights=world[:, a], minlength=n_clusters) / voxels for a in range(3)], axis=1
    )
    centred = world - centroid[cluster]
    axes = _principal_axes(centred, cluster, n_clusters, voxels)
    projection = np.einsum("ij,ij->i", centred, axes[cluster])
    index = np.arange(1, n_clusters + 1)
    span = np.asarray(ndimage.maximum(projection, cluster + 1, index)) - np.asarray(
        ndimage.minimum(projection, cluster + 1, index)
    )
    # Width of one voxel (a parallelepiped with the affine's columns as edges) along each axis.
    voxel_width = np.abs(axes @ affine[:3, :3]).sum(axis=1)
    length = span + voxel_width
    volume = voxels * voxel_volume(affine)

    table = {
        "cluster_id": index,
        **_assign_regions(cluster, flat, region_map, n_clusters, voxels),
        "voxels": voxels.astype(np.int64),
        "volume_mm3": volume,
        "centroid_x": centroid[:, 0],
        "centroid_y": centroid[:, 1],
        "centroid_z": centroid[:, 2],
        "length_mm": length,
        "mean_diameter_mm": 2.0 * np.sqrt(volume / (np.pi * length)),
        "axis_x": axes[:, 0],
        "axis_y": axes[:, 1],
        "axis_z": axes[:, 2],
        "inclination_deg": np.degrees(np.arccos(np.clip(axes[:, 2], -1.0, 1.0))),
    }
    if probability is None:
        table["mean_probability"] = table["max_probability"] = np.full(n_clusters, np.nan)
    else:
        values = np.asarray(probability, float).ravel()[flat]
        table["mean_probability"] = np.bincount(cluster, weights=values, minlength=n_clusters) / voxels
        table["max_probability"] = np.asarray(ndimage.maximum(values, cluster + 1, index), float)
    return pd.DataFrame(table, columns=list(CENSUS_COLUMNS))


def _census_dtype(name: str) -> str:
    if name in ("region", "hemisphere"):
        return "object"
    return "int64" if name in ("cluster_id", "region_index", "voxels") else "float64"


def _assign_regions(
    cluster: np.ndarray, flat: np.ndarray, region_map: np.ndarray | None, n_clusters: int, voxels: np.ndarray
) -> dict[str, np.ndarray]:
    """Majority region per cluster (ties: lowest label; 0 = unassigned) and the fraction it holds."""
    if region_map is None:
        votes = np.zeros((n_clusters, 1), np.int64)
    else:
        region = np.asarray(region_map).ravel()[flat].astype(np.intp)
        if region.min() < 0:
            raise ValueError("region map holds negative labels")
        n_labels = int(region.max()) + 1
        votes = np.bincount(cluster * n_labels + region, minlength=n_clusters * n_labels).reshape(
            n_clusters, n_labels
        )
        known = np.array([region_by_index(label) is not None for label in range(n_labels)])
        votes[:, ~known] = 0  # background and labels outside the look-up table do not vote
    labelled = votes[:, 1:]
    if labelled.shape[1]:
        winner = np.where(labelled.max(axis=1) > 0, labelled.argmax(axis=1) + 1, 0)  # argmax: first = lowest
    else:
        winner = np.zeros(n_clusters, np.intp)
    regions = [region_by_index(int(w)) for w in winner]
    return {
        "region": np.array([r.structure if r else UNASSIGNED for r in regions], dtype=object),
        "hemisphere": np.array([r.hemisphere if r else "n/a" for r in regions], dtype=object),
        "region_index": np.array([r.index if r else 0 for r in regions], dtype=np.int64),
        "region_fraction": np.where(winner > 0, votes[np.arange(n_clusters), winner] / voxels, 0.0),
    }
