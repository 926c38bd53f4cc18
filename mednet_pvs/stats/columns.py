"""Column descriptions of every statistics table, as data for the BIDS JSON sidecars and the docs.

Each entry follows the BIDS tabular-file sidecar convention: ``LongName``, ``Description`` and
``Units`` (only for quantities with a unit). The order of each dictionary is the column order of
the table it describes, so tables and sidecars cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "CENSUS_COLUMNS",
    "GROUP_ID_COLUMNS",
    "REGION_COLUMNS",
    "ROBUST_Z_COLUMNS",
    "column_sidecar",
]

ColumnSpec = dict[str, str]

_AUTO_NOTE = (
    " AUTOMATED ESTIMATE computed from the PVS segmentation; it is not a visual rating and may differ "
    "from one made by a trained rater."
)
_POTTER = "Potter et al. 2015 category: 0 none, 1 = 1-10, 2 = 11-20, 3 = 21-40, 4 = more than 40 PVS."
_ONLY_RATED = " Defined only for basal_ganglia and centrum_semiovale rows (n/a elsewhere)."

CENSUS_COLUMNS: dict[str, ColumnSpec] = {
    "cluster_id": {
        "LongName": "Cluster identifier",
        "Description": "Identifier of the PVS (26-connected cluster); equals the voxel value of this "
        "cluster in the _desc-pvsclusters_dseg.nii.gz image.",
    },
    "region": {
        "LongName": "Assigned region",
        "Description": "Region structure holding most of the cluster's voxels (ties: the lowest region label "
        "index); 'unassigned' when no voxel of the cluster lies in a labelled region.",
    },
    "hemisphere": {
        "LongName": "Hemisphere of the assigned region",
        "Description": "left, right, bilateral (structures not split by side), or n/a (unassigned).",
    },
    "region_index": {
        "LongName": "Region label index",
        "Description": "Label of the assigned region in _seg-pvsregions_dseg.nii.gz (see "
        "seg-pvsregions_dseg.tsv); 0 when unassigned.",
    },
    "region_fraction": {
        "LongName": "Fraction of voxels in the assigned region",
        "Description": "Number of the cluster's voxels inside the assigned region divided by all its voxels; "
        "below 1 when the PVS straddles regions.",
    },
    "voxels": {
        "LongName": "Voxel count",
        "Description": "Number of voxels of the cluster in the native grid.",
    },
    "volume_mm3": {
        "LongName": "Volume",
        "Description": "Voxel count times the native grid's voxel volume.",
        "Units": "mm^3",
    },
    "centroid_x": {
        "LongName": "Centroid x",
        "Description": "Mean scanner (world) x coordinate of the cluster's voxel centres (image affine "
        "applied; NIfTI convention, x increases to the subject's right when the image is RAS).",
        "Units": "mm",
    },
    "centroid_y": {
        "LongName": "Centroid y",
        "Description": "Mean scanner (world) y coordinate of the cluster's voxel centres.",
        "Units": "mm",
    },
    "centroid_z": {
        "LongName": "Centroid z",
        "Description": "Mean scanner (world) z coordinate of the cluster's voxel centres.",
        "Units": "mm",
    },
    "length_mm": {
        "LongName": "Length along the principal axis",
        "Description": "Extent of the voxel centres along the principal axis (eigenvector of the largest "
        "eigenvalue of the covariance of the voxel-centre coordinates in mm), plus the width of one voxel "
        "along that axis. Exact for straight digital tubes; a lower bound for tortuous PVS.",
        "Units": "mm",
    },
    "mean_diameter_mm": {
        "LongName": "Mean diameter (cylinder model)",
        "Description": "Diameter of the cylinder of length length_mm with the cluster's volume: "
        "2 * sqrt(volume_mm3 / (pi * length_mm)).",
        "Units": "mm",
    },
    "axis_x": {
        "LongName": "Principal axis x component",
        "Description": "x component of the unit principal-axis vector in scanner space, signed so that the "
        "vector points superior (z >= 0; ties broken by y >= 0, then x >= 0).",
    },
    "axis_y": {"LongName": "Principal axis y component", "Description": "y component of the principal axis."},
    "axis_z": {"LongName": "Principal axis z component", "Description": "z component of the principal axis."},
    "inclination_deg": {
        "LongName": "Inclination from the scanner z axis",
        "Description": "Angle between the principal axis and the scanner z (inferior-superior) axis: 0 for a "
        "vertical PVS, 90 for one lying in an axial plane.",
        "Units": "degree",
    },
    "mean_probability": {
        "LongName": "Mean PVS probability",
        "Description": "Mean of the segmentation's PVS probability over the cluster's voxels (n/a when no "
        "probability map was given).",
    },
    "max_probability": {
        "LongName": "Maximum PVS probability",
        "Description": "Maximum of the PVS probability over the cluster's voxels (n/a when no "
        "probability map).",
    },
}

REGION_COLUMNS: dict[str, ColumnSpec] = {
    "region": {
        "LongName": "Region",
        "Description": "Leaf structure of seg-pvsregions_dseg.tsv, an aggregate of structures "
        "(white_matter = centrum_semiovale + deep_white_matter), or whole_brain (every PVS, "
        "assigned or not).",
    },
    "hemisphere": {
        "LongName": "Hemisphere",
        "Description": "left, right, or bilateral (both hemispheres together, or a structure not split "
        "by side).",
    },
    "count": {
        "LongName": "PVS count",
        "Description": "Number of PVS (26-connected clusters) assigned to this region; each PVS is counted "
        "once, in the region holding most of its voxels.",
    },
    "volume_mm3": {
        "LongName": "Total PVS volume",
        "Description": "Sum of the volumes of the PVS counted in this region (whole clusters).",
        "Units": "mm^3",
    },
    "volume_in_region_mm3": {
        "LongName": "PVS volume inside the region",
        "Description": "Volume of PVS voxels lying inside this region, whichever region their cluster is "
        "assigned to.",
        "Units": "mm^3",
    },
    "region_volume_mm3": {
        "LongName": "Region volume",
        "Description": "Volume of the region in the native grid (whole_brain: the brain mask when given, "
        "else all labelled voxels).",
        "Units": "mm^3",
    },
    "volume_fraction": {
        "LongName": "PVS volume fraction",
        "Description": "volume_in_region_mm3 / region_volume_mm3 (between 0 and 1); n/a for an empty region.",
    },
    "density_per_cm3": {
        "LongName": "PVS count density",
        "Description": "count divided by the region volume in cm^3; n/a for an empty region.",
        "Units": "1/cm^3",
    },
    "mean_cluster_volume_mm3": {
        "LongName": "Mean PVS volume",
        "Description": "Mean volume of the PVS counted in this region; n/a when count is 0.",
        "Units": "mm^3",
    },
    "median_cluster_volume_mm3": {
        "LongName": "Median PVS volume",
        "Description": "Median volume of the PVS counted in this region; n/a when count is 0.",
        "Units": "mm^3",
    },
    "max_cluster_volume_mm3": {
        "LongName": "Largest PVS volume",
        "Description": "Volume of the largest PVS counted in this region; n/a when count is 0.",
        "Units": "mm^3",
    },
    "mean_length_mm": {
        "LongName": "Mean PVS length",
        "Description": "Mean length_mm (see the cluster census) of the PVS counted here; n/a when count "
        "is 0.",
        "Units": "mm",
    },
    "epvs_slice_method": {
        "LongName": "How the rating slice was chosen",
        "Description": "anterior_commissure (basal ganglia slice through the given AC landmark), "
        "largest_basal_ganglia_area (fallback without landmark: the axial slice with the "
        "largest basal-ganglia area), ventricles_plus_10mm (centrum semiovale slice 10 mm above "
        "the top of the lateral ventricles, i.e. above the lowest centrum semiovale voxel), or "
        "unavailable (region empty)." + _ONLY_RATED,
    },
    "epvs_slice_index": {
        "LongName": "Rating slice index",
        "Description": "0-based voxel index, along the image axis closest to scanner z, of the axial slice "
        "used for epvs_slice_count_auto." + _ONLY_RATED,
    },
    "epvs_slice_count_auto": {
        "LongName": "PVS count on the rating slice (automated)",
        "Description": "Number of distinct PVS intersecting the region on the rating slice (bilateral "
        "row: the higher of the two hemispheres)." + _ONLY_RATED + _AUTO_NOTE,
    },
    "epvs_slice_rating_auto": {
        "LongName": "Rating-scale category on the rating slice (automated)",
        "Description": "Category implied by epvs_slice_count_auto. " + _POTTER + _ONLY_RATED + _AUTO_NOTE,
    },
    "epvs_maxslice_index": {
        "LongName": "Index of the axial slice with the most PVS",
        "Description": "0-based axial voxel index of the slice where the most distinct PVS intersect the "
        "region." + _ONLY_RATED,
    },
    "epvs_maxslice_count_auto": {
        "LongName": "PVS count on the axial slice with the most PVS (automated)",
        "Description": "Number of distinct PVS intersecting the region on its axial slice with the most PVS "
        "(bilateral row: the higher of the two hemispheres)." + _ONLY_RATED + _AUTO_NOTE,
    },
    "epvs_maxslice_rating_auto": {
        "LongName": "Rating-scale category on the slice with the most PVS (automated)",
        "Description": "Category implied by epvs_maxslice_count_auto. " + _POTTER + _ONLY_RATED + _AUTO_NOTE,
    },
}

GROUP_ID_COLUMNS: dict[str, ColumnSpec] = {
    "participant_id": {
        "LongName": "Participant",
        "Description": "BIDS participant label with its sub- prefix.",
    },
    "session_id": {
        "LongName": "Session",
        "Description": "BIDS session label with its ses- prefix; n/a for datasets without sessions.",
    },
    "image": {
        "LongName": "Image identifier",
        "Description": "The source image's entities (its file name without suffix and extension); the prefix "
        "of every derivative file of that image.",
    },
    "protocol": {
        "LongName": "Acquisition protocol",
        "Description": "The image's entities other than sub, ses and run (e.g. acq-hr); 'default' when none. "
        "Robust z-scores are computed within a protocol.",
    },
}

ROBUST_Z_COLUMNS: dict[str, ColumnSpec] = {
    "count_robust_z": {
        "LongName": "Robust z-score of the PVS count",
        "Description": "(count - median) / (1.4826 * MAD) across the images of the same protocol, region and "
        "hemisphere (mean absolute deviation * 1.2533 as the scale when the MAD is 0); n/a with fewer than 5 "
        "images or no spread. |z| > 3.5 flags a potential outlier (Iglewicz and Hoaglin 1993).",
    },
    "volume_mm3_robust_z": {
        "LongName": "Robust z-score of the PVS volume",
        "Description": "As count_robust_z, for volume_mm3.",
    },
}


def column_sidecar(columns: Iterable[str], specs: dict[str, ColumnSpec], **extra: Any) -> dict[str, Any]:
    """BIDS JSON sidecar for a table with ``columns``: one description per column, then ``extra`` keys.

    Columns without a description in ``specs`` get a generic one naming them (e.g. participants.tsv
    columns without a participants.json entry), so every column is described.
    """
    sidecar: dict[str, Any] = {}
    for name in columns:
        sidecar[name] = dict(specs.get(name, {"LongName": name, "Description": f"Column '{name}'."}))
    sidecar.update({key: value for key, value in extra.items() if value is not None})
    return sidecar
