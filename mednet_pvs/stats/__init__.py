"""PVS statistics: mask, 26-connected clusters, per-cluster census, region tables, slice-level ratings."""

from mednet_pvs.stats.clusters import (
    cluster_census,
    label_clusters,
    min_cluster_voxels,
    pvs_mask,
    voxel_volume,
)
from mednet_pvs.stats.outputs import (
    DERIVATIVE_SUFFIXES,
    PVSStatistics,
    compute_statistics,
    derivative_path,
    write_statistics,
    write_table,
)
from mednet_pvs.stats.ratings import axial_axis, epvs_slice_counts, potter_category
from mednet_pvs.stats.tables import region_rows, region_table

__all__ = [
    "DERIVATIVE_SUFFIXES",
    "PVSStatistics",
    "axial_axis",
    "cluster_census",
    "compute_statistics",
    "derivative_path",
    "epvs_slice_counts",
    "label_clusters",
    "min_cluster_voxels",
    "potter_category",
    "pvs_mask",
    "region_rows",
    "region_table",
    "voxel_volume",
    "write_statistics",
    "write_table",
]
