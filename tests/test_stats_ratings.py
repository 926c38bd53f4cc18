"""Slice-level counts (BG at the anterior commissure, CSO 1 cm above the ventricles) and Potter categories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mednet_pvs.stats import (
    axial_axis,
    compute_statistics,
    epvs_slice_counts,
    label_clusters,
    potter_category,
)

CSO_L, CSO_R, DWM_L, DWM_R, BG_L, BG_R = 1, 2, 3, 4, 5, 6


@pytest.mark.parametrize(
    ("count", "category"),
    [(0, 0), (1, 1), (10, 1), (11, 2), (20, 2), (21, 3), (40, 3), (41, 4), (500, 4)],
)
def test_potter_categories(count, category):
    assert potter_category(count) == category


def test_potter_category_rejects_negative_counts():
    with pytest.raises(ValueError, match="negative"):
        potter_category(-1)


def test_axial_axis_follows_the_image_orientation():
    assert axial_axis(np.diag([1.0, 1.0, 1.0, 1.0])) == 2
    sagittal_stack = np.array([[0, 0, -1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])  # PIR-like
    assert axial_axis(sagittal_stack) == 1


def _phantom(z_spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS grid, 1 x 1 x z_spacing mm; BG on slices 2-6 (largest on slice 5), CSO from slice 10 up."""
    shape = (40, 20, 30)
    regions = np.zeros(shape, np.uint8)
    regions[5:15, 5:15, 2:7] = BG_L
    regions[25:35, 5:15, 2:7] = BG_R
    regions[2:18, 2:18, 5] = BG_L  # slice 5 has the largest BG area
    regions[22:38, 2:18, 5] = BG_R
    regions[:20, :, 7:10] = DWM_L
    regions[20:, :, 7:10] = DWM_R
    regions[:20, :, 10:] = CSO_L
    regions[20:, :, 10:] = CSO_R
    affine = np.diag([1.0, 1.0, z_spacing, 1.0])
    affine[:3, 3] = [-20.0, -10.0, -40.0]
    return np.zeros(shape, bool), regions, affine


def test_bg_slice_at_the_anterior_commissure_counts_per_hemisphere():
    mask, regions, affine = _phantom()
    for x in (6, 8, 10):  # three left BG PVS crossing slices 3-4
        mask[x, 8, 3:5] = True
    mask[30, 8, 3] = True  # one right BG PVS on slice 3
    mask[12, 12, 5] = True  # left BG PVS on slice 5 only
    labels, _ = label_clusters(mask)
    ac = (affine @ [20, 10, 3, 1])[:3]
    rows = epvs_slice_counts(labels, regions, affine, ac_position_mm=ac).set_index(["region", "hemisphere"])
    bg_left, bg_right = rows.loc[("basal_ganglia", "left")], rows.loc[("basal_ganglia", "right")]
    assert bg_left["epvs_slice_method"] == "anterior_commissure"
    assert bg_left["epvs_slice_index"] == 3 and bg_right["epvs_slice_index"] == 3
    assert bg_left["epvs_slice_count_auto"] == 3 and bg_right["epvs_slice_count_auto"] == 1
    assert bg_left["epvs_slice_rating_auto"] == 1
    bilateral = rows.loc[("basal_ganglia", "bilateral")]
    assert bilateral["epvs_slice_count_auto"] == 3  # the hemisphere with more PVS


def test_bg_fallback_is_the_slice_with_the_largest_bg_area():
    mask, regions, affine = _phantom()
    mask[12, 12, 5] = True
    labels, _ = label_clusters(mask)
    rows = epvs_slice_counts(labels, regions, affine).set_index(["region", "hemisphere"])
    left = rows.loc[("basal_ganglia", "left")]
    assert left["epvs_slice_method"] == "largest_basal_ganglia_area"
    assert left["epvs_slice_index"] == 5 and left["epvs_slice_count_auto"] == 1
    # An AC outside the field of view also falls back.
    rows = epvs_slice_counts(labels, regions, affine, ac_position_mm=(0.0, 0.0, 500.0))
    assert rows["epvs_slice_method"].iloc[0] == "largest_basal_ganglia_area"


@pytest.mark.parametrize("z_spacing", [1.0, 2.0, 2.5])
def test_cso_slice_is_10mm_above_the_ventricles(z_spacing):
    mask, regions, affine = _phantom(z_spacing)
    target = 10 + int(np.floor(10.0 / z_spacing + 0.5))  # lowest CSO slice + 1 cm
    for y in range(2, 18, 2):  # 8 right CSO PVS crossing the target slice
        mask[30, y, target - 1 : target + 2] = True
    mask[5, 5, target + 3 : target + 5] = True  # a left PVS above the rating slice only
    labels, _ = label_clusters(mask)
    rows = epvs_slice_counts(labels, regions, affine).set_index(["region", "hemisphere"])
    right = rows.loc[("centrum_semiovale", "right")]
    assert right["epvs_slice_method"] == "ventricles_plus_10mm"
    assert right["epvs_slice_index"] == target
    assert right["epvs_slice_count_auto"] == 8 and right["epvs_slice_rating_auto"] == 1
    left = rows.loc[("centrum_semiovale", "left")]
    assert left["epvs_slice_count_auto"] == 0 and left["epvs_slice_rating_auto"] == 0
    assert left["epvs_maxslice_count_auto"] == 1 and left["epvs_maxslice_index"] == target + 3


def test_maxslice_counts_each_pvs_once_per_slice_and_implies_the_category():
    mask, regions, affine = _phantom(1.0)
    # 25 separate left CSO PVS on slice 20, each 2 voxels tall (slices 20-21), 2 voxels apart.
    for i, (x, y) in enumerate((x, y) for x in range(1, 19, 3) for y in range(1, 19, 3)):
        if i < 25:
            mask[x, y, 20:22] = True
    labels, n = label_clusters(mask)
    assert n == 25
    row = (
        epvs_slice_counts(labels, regions, affine)
        .set_index(["region", "hemisphere"])
        .loc[("centrum_semiovale", "left")]
    )
    assert row["epvs_maxslice_count_auto"] == 25 and row["epvs_maxslice_index"] == 20
    assert row["epvs_maxslice_rating_auto"] == 3


def test_slice_counts_land_in_the_region_table_only_for_rated_regions():
    mask, regions, affine = _phantom()
    mask[12, 12, 5] = True
    table = compute_statistics(mask, affine, regions).regions.set_index(["region", "hemisphere"])
    assert table.loc[("basal_ganglia", "left"), "epvs_slice_count_auto"] == 1
    assert pd.isna(table.loc[("thalamus", "left"), "epvs_slice_count_auto"])
    assert pd.isna(table.loc[("whole_brain", "bilateral"), "epvs_slice_method"])


def test_oblique_grid_uses_the_voxel_slice_through_the_landmark():
    mask, regions, _ = _phantom()
    angle = np.deg2rad(15)  # 15 degrees of pitch: still closest to scanner z along axis 2
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine[:3, :3] = affine[:3, :3] @ np.diag([1.0, 1.0, 2.0])
    mask[8, 8, 4] = True
    labels, _ = label_clusters(mask)
    ac = (affine @ [20, 10, 4, 1])[:3]
    row = (
        epvs_slice_counts(labels, regions, affine, ac)
        .set_index(["region", "hemisphere"])
        .loc[("basal_ganglia", "left")]
    )
    assert row["epvs_slice_index"] == 4 and row["epvs_slice_count_auto"] == 1
