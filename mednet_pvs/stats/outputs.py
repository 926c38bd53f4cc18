"""Compute all statistics of one image and write them as BIDS-Derivatives files.

Derivative names carry the source image's entities without its suffix (``prefix``), e.g. the
prefix ``sub-01/ses-1/anat/sub-01_ses-1_acq-hr`` gives ``..._desc-pvs_morph.tsv``. The suffix table
below is the single place where this module, the reports and the group level learn those names.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from mednet_pvs.regions.lut import REGION_SET
from mednet_pvs.stats.clusters import cluster_census, label_clusters
from mednet_pvs.stats.columns import CENSUS_COLUMNS, REGION_COLUMNS, column_sidecar
from mednet_pvs.stats.ratings import epvs_slice_counts
from mednet_pvs.stats.tables import region_table
from mednet_pvs.utils.atomic import save_nifti, write_json, write_tsv

__all__ = [
    "DERIVATIVE_SUFFIXES",
    "PVSStatistics",
    "compute_statistics",
    "derivative_path",
    "write_statistics",
    "write_table",
]

LOGGER = logging.getLogger(__name__)

#: What follows the entity prefix in each derivative file of one image.
DERIVATIVE_SUFFIXES: dict[str, str] = {
    "mask": "_desc-pvs_mask.nii.gz",
    "probseg": "_label-PVS_probseg.nii.gz",
    "brain_mask": "_desc-brain_mask.nii.gz",
    "regions": f"_seg-{REGION_SET}_dseg.nii.gz",
    "clusters": "_desc-pvsclusters_dseg.nii.gz",
    "morph": "_desc-pvs_morph.tsv",
    "census": "_desc-pvsclusters_morph.tsv",
}


def derivative_path(prefix: str | Path, kind: str) -> Path:
    """Path of derivative ``kind`` (a key of ``DERIVATIVE_SUFFIXES``) for an image's ``prefix``."""
    return Path(f"{prefix}{DERIVATIVE_SUFFIXES[kind]}")


@dataclass
class PVSStatistics:
    """Everything measured on one image (native grid)."""

    clusters: np.ndarray  # int32 labelled PVS image, voxel value = census cluster_id
    census: pd.DataFrame  # one row per PVS (CENSUS_COLUMNS)
    regions: pd.DataFrame  # one row per region and hemisphere (REGION_COLUMNS)
    affine: np.ndarray


def compute_statistics(
    mask: np.ndarray,
    affine: np.ndarray,
    region_map: np.ndarray | None = None,
    probability: np.ndarray | None = None,
    brain_mask: np.ndarray | None = None,
    ac_position_mm: Sequence[float] | None = None,
) -> PVSStatistics:
    """Clusters, census, region table and slice-level counts of a PVS ``mask`` on its native grid.

    ``region_map`` (PVS region labels, same grid) may be None: everything is then 'unassigned' and
    only the whole-brain row counts. ``ac_position_mm`` is the anterior commissure in scanner mm
    (from the atlas registration); without it the basal-ganglia rating slice falls back to the
    slice with the largest basal-ganglia area.
    """
    for name, array in (("region map", region_map), ("probability", probability), ("brain mask", brain_mask)):
        if array is not None and array.shape != mask.shape:
            raise ValueError(f"{name} shape {array.shape} differs from the PVS mask shape {mask.shape}")
    clusters, n_clusters = label_clusters(mask)
    census = cluster_census(clusters, n_clusters, affine, region_map, probability)
    slices = None
    if region_map is not None:
        slices = epvs_slice_counts(clusters, region_map, affine, ac_position_mm)
    regions = region_table(census, clusters, region_map, affine, brain_mask, slices)
    LOGGER.info("%d PVS, %.1f mm^3 in total", n_clusters, census["volume_mm3"].sum())
    return PVSStatistics(clusters=clusters, census=census, regions=regions, affine=np.asarray(affine, float))


def write_table(path: str | Path, table: pd.DataFrame, sidecar: dict[str, Any]) -> list[Path]:
    """Write a BIDS TSV and its JSON sidecar atomically; returns both paths."""
    path = Path(path)
    return [write_tsv(path, table), write_json(path.with_name(path.name[: -len(".tsv")] + ".json"), sidecar)]


def write_statistics(
    prefix: str | Path,
    stats: PVSStatistics,
    reference: nib.spatialimages.SpatialImage,
    sources: Sequence[str] | None = None,
    parameters: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the cluster image, the region table and the census (each TSV with its sidecar).

    ``reference`` is the native input image (grid and affine of every output); ``sources`` are BIDS
    URIs of the inputs (``Sources`` in the sidecars); ``parameters`` (e.g. threshold, minimum
    cluster size, AC position) are recorded in the region table's sidecar under ``Parameters``.
    Returns the written paths.
    """
    if tuple(reference.shape[:3]) != stats.clusters.shape or not np.allclose(reference.affine, stats.affine):
        raise ValueError("the reference image's grid differs from the grid the statistics were computed on")
    dtype = np.uint16 if stats.clusters.max(initial=0) <= np.iinfo(np.uint16).max else np.int32
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm", "sec")
    image = nib.Nifti1Image(stats.clusters.astype(dtype), reference.affine, header)
    image.set_qform(reference.affine, code=1)
    image.set_sform(reference.affine, code=1)
    image.header.set_slope_inter(1, 0)
    written = [save_nifti(image, derivative_path(prefix, "clusters"))]

    source_list = list(sources) if sources else None
    region_sidecar = column_sidecar(
        stats.regions.columns, REGION_COLUMNS, Sources=source_list, Parameters=parameters or None
    )
    written += write_table(derivative_path(prefix, "morph"), stats.regions, region_sidecar)
    census_sidecar = column_sidecar(stats.census.columns, CENSUS_COLUMNS, Sources=source_list)
    written += write_table(derivative_path(prefix, "census"), stats.census, census_sidecar)
    return written
