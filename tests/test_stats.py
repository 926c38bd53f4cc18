"""Statistics on synthetic masks whose clusters, volumes, lengths and regions are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mednet_pvs.stats import (
    compute_statistics,
    derivative_path,
    label_clusters,
    min_cluster_voxels,
    pvs_mask,
    region_rows,
    voxel_volume,
    write_statistics,
)
from mednet_pvs.stats.clusters import cluster_census
from mednet_pvs.stats.columns import CENSUS_COLUMNS, GROUP_ID_COLUMNS, REGION_COLUMNS, ROBUST_Z_COLUMNS

BG_LEFT, BG_RIGHT, THALAMUS_LEFT = 5, 6, 7


def census_of(
    mask: np.ndarray, affine: np.ndarray | None = None, regions: np.ndarray | None = None
) -> pd.DataFrame:
    labels, n = label_clusters(mask)
    return cluster_census(labels, n, np.eye(4) if affine is None else affine, regions)


# ----------------------------------------------------------------------------- mask and clusters
@pytest.mark.parametrize(
    ("min_mm3", "voxel_mm3", "expected"),
    [
        (3.0, 1.0, 3),
        (3.0, 0.125, 24),
        (2.0, 0.343, 6),
        (0.0, 1.0, 1),
        (1.0, 8.0, 1),
        (6.0, 2.0, 3),
        (2.0, 0.9999997, 2),  # float32 noise in the affine must not add a voxel
        (2.0, 0.99, 3),
    ],
)
def test_min_cluster_voxels_is_the_ceiling_of_the_volume_ratio(min_mm3, voxel_mm3, expected):
    assert min_cluster_voxels(min_mm3, voxel_mm3) == expected


def test_voxel_volume_ignores_float32_noise_and_handles_oblique_grids():
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = (rotation @ np.diag([0.5, 0.5, 2.0])).astype(np.float32)
    assert abs(np.linalg.det(affine[:3, :3]) - 0.5) > 0  # float32 rounding
    assert voxel_volume(affine) == 0.5


def test_pvs_mask_thresholds_strictly_masks_brain_and_drops_small_clusters():
    prob = np.zeros((12, 12, 12), np.float32)
    prob[1:4, 1, 1] = 0.9  # 3 voxels = 6 mm^3 at 2 mm^3: kept with min 5 mm^3
    prob[6:8, 6, 6] = 0.9  # 2 voxels = 4 mm^3: dropped
    prob[10, 10, 10] = 0.5  # not above the threshold
    prob[1:4, 9, 9] = 0.9  # outside the brain mask
    brain = np.ones(prob.shape, bool)
    brain[:, 9, 9] = False
    mask = pvs_mask(prob, 0.5, min_cluster_mm3=5.0, voxel_volume_mm3=2.0, brain_mask=brain)
    assert mask.dtype == bool
    assert np.argwhere(mask).tolist() == [[1, 1, 1], [2, 1, 1], [3, 1, 1]]
    # Without a minimum size every supra-threshold voxel in the brain stays.
    assert pvs_mask(prob, 0.5, 0.0, 2.0, brain).sum() == 5


def test_diagonal_neighbours_are_one_cluster_with_26_connectivity():
    mask = np.zeros((8, 8, 8), bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # corner contact
    mask[5, 5, 1] = mask[6, 6, 1] = True  # edge contact
    mask[1, 6, 6] = mask[1, 6, 4] = True  # one voxel apart: two clusters
    labels, n = label_clusters(mask)
    assert n == 4
    assert labels[1, 1, 1] == labels[2, 2, 2] and labels[5, 5, 1] == labels[6, 6, 1]
    assert labels[1, 6, 6] != labels[1, 6, 4]
    # Diagonal pairs count as 2-voxel clusters and survive a 2 mm^3 minimum; the separated singles do not.
    kept = pvs_mask(mask.astype(np.float32), 0.5, min_cluster_mm3=2.0, voxel_volume_mm3=1.0)
    assert np.argwhere(kept).tolist() == [[1, 1, 1], [2, 2, 2], [5, 5, 1], [6, 6, 1]]


# ----------------------------------------------------------------------------- lengths, volumes
@pytest.mark.parametrize(
    ("step", "spacing", "n", "expected_length"),
    [
        ((1, 0, 0), (1.0, 1.0, 1.0), 12, 12.0),
        ((0, 0, 1), (0.5, 0.5, 2.0), 7, 14.0),
        ((1, 1, 0), (1.0, 1.0, 1.0), 10, 10 * np.sqrt(2)),
        ((1, 1, 1), (1.0, 1.0, 1.0), 9, 9 * np.sqrt(3)),
        ((1, 0, 1), (1.0, 1.0, 2.0), 8, 8 * np.sqrt(5)),
    ],
)
def test_tube_length_volume_and_diameter(step, spacing, n, expected_length):
    mask = np.zeros((32, 32, 32), bool)
    for t in range(n):
        mask[2 + step[0] * t, 3 + step[1] * t, 4 + step[2] * t] = True
    affine = np.diag([*spacing, 1.0])
    row = census_of(mask, affine).iloc[0]
    volume = n * np.prod(spacing)
    assert row["voxels"] == n
    assert row["volume_mm3"] == pytest.approx(volume)
    assert row["length_mm"] == pytest.approx(expected_length)
    assert row["mean_diameter_mm"] == pytest.approx(2 * np.sqrt(volume / (np.pi * expected_length)))
    direction = np.asarray(step, float) * spacing
    assert np.abs([row["axis_x"], row["axis_y"], row["axis_z"]]) == pytest.approx(
        np.abs(direction / np.linalg.norm(direction))
    )


def test_thick_tube_length_and_cylinder_diameter():
    mask = np.zeros((30, 10, 10), bool)
    mask[3:23, 4:7, 4:7] = True  # 20 mm long, 3x3 mm cross-section
    row = census_of(mask).iloc[0]
    assert row["length_mm"] == pytest.approx(20.0)
    assert row["volume_mm3"] == pytest.approx(180.0)
    assert row["mean_diameter_mm"] == pytest.approx(2 * np.sqrt(9 / np.pi))  # circle of the square's area
    assert row["inclination_deg"] == pytest.approx(90.0)
    assert (row["axis_x"], row["axis_y"], row["axis_z"]) == pytest.approx((1.0, 0.0, 0.0))


def test_vertical_tube_points_superior_and_has_zero_inclination():
    mask = np.zeros((10, 10, 20), bool)
    mask[5, 5, 2:15] = True
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    row = census_of(mask, lps).iloc[0]
    assert (row["axis_x"], row["axis_y"], row["axis_z"]) == pytest.approx((0.0, 0.0, 1.0))
    assert row["inclination_deg"] == pytest.approx(0.0)
    flipped = census_of(mask, np.diag([1.0, 1.0, -1.0, 1.0])).iloc[0]
    assert flipped["axis_z"] == pytest.approx(1.0)  # same sign convention on an inferior-pointing axis


def test_centroids_and_length_in_scanner_mm_on_an_lps_oblique_grid():
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([1.2, 0.8, 2.5])
    affine[:3, 3] = [90.0, 120.0, -60.0]
    mask = np.zeros((20, 20, 10), bool)
    mask[4:14, 6, 3] = True  # 10 voxels along i (1.2 mm steps in a rotated direction)
    mask[15, 15:17, 8] = True
    table = census_of(mask, affine)
    assert len(table) == 2
    tube = table.iloc[0]
    expected = affine @ np.array([8.5, 6.0, 3.0, 1.0])
    assert (tube["centroid_x"], tube["centroid_y"], tube["centroid_z"]) == pytest.approx(tuple(expected[:3]))
    assert tube["length_mm"] == pytest.approx(12.0)
    assert tube["volume_mm3"] == pytest.approx(10 * 1.2 * 0.8 * 2.5)
    axis_world = affine[:3, 0] / np.linalg.norm(affine[:3, 0])
    assert abs(np.dot([tube["axis_x"], tube["axis_y"], tube["axis_z"]], axis_world)) == pytest.approx(1.0)
    pair = table.iloc[1]
    assert pair["centroid_z"] == pytest.approx((affine @ [15, 15.5, 8, 1])[2])
    assert pair["length_mm"] == pytest.approx(1.6)


# ----------------------------------------------------------------------------- region assignment
def test_clusters_straddling_regions_go_to_the_majority_then_the_lowest_label():
    mask = np.zeros((20, 20, 20), bool)
    regions = np.zeros(mask.shape, np.uint8)
    mask[1:7, 2, 2] = True  # 4 voxels in BG right, 2 in BG left
    regions[1:5, 2, 2] = BG_RIGHT
    regions[5:7, 2, 2] = BG_LEFT
    mask[1:7, 10, 10] = True  # 3 / 3 tie between thalamus left and BG right
    regions[1:4, 10, 10] = THALAMUS_LEFT
    regions[4:7, 10, 10] = BG_RIGHT
    mask[1:7, 16, 16] = True  # 5 unlabelled voxels and 1 thalamus voxel
    regions[6, 16, 16] = THALAMUS_LEFT
    mask[15:18, 2, 2] = True  # no labelled voxel
    table = census_of(mask, regions=regions).set_index("cluster_id")
    assert table.loc[1, ["region", "hemisphere", "region_index"]].tolist() == [
        "basal_ganglia",
        "right",
        BG_RIGHT,
    ]
    assert table.loc[1, "region_fraction"] == pytest.approx(4 / 6)
    assert table.loc[2, "region_index"] == BG_RIGHT  # tie: lowest label index (6 < 7)
    assert table.loc[2, "region_fraction"] == pytest.approx(0.5)
    assert table.loc[3, ["region", "region_index"]].tolist() == ["thalamus", THALAMUS_LEFT]
    assert table.loc[3, "region_fraction"] == pytest.approx(1 / 6)
    assert table.loc[4, ["region", "hemisphere", "region_index"]].tolist() == ["unassigned", "n/a", 0]


def test_probability_summaries_per_cluster():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:5, 2, 2] = True
    prob = np.zeros(mask.shape, np.float32)
    prob[2:5, 2, 2] = [0.6, 0.8, 1.0]
    labels, n = label_clusters(mask)
    row = cluster_census(labels, n, np.eye(4), probability=prob).iloc[0]
    assert row["mean_probability"] == pytest.approx(0.8)
    assert row["max_probability"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- region table
def _toy_subject() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regions: CSO/deep WM/BG per hemisphere; PVS with known sizes (1 x 1 x 2 mm voxels)."""
    shape = (20, 10, 10)
    regions = np.zeros(shape, np.uint8)
    regions[:10, :, 6:] = 1  # CSO left (x < 10 is left on this RAS grid)
    regions[10:, :, 6:] = 2
    regions[:10, :, 3:6] = 3  # deep WM
    regions[10:, :, 3:6] = 4
    regions[:10, :, :3] = BG_LEFT
    regions[10:, :, :3] = BG_RIGHT
    mask = np.zeros(shape, bool)
    mask[2, 2, 6:9] = True  # CSO left, 3 voxels
    mask[4, 6, 7:10] = True  # CSO left, 3 voxels
    mask[14, 4, 3:5] = True  # deep WM right, 2 voxels
    mask[3, 3, 0:2] = True  # BG left, 2 voxels
    mask[12, 8, 1] = True  # BG right, 1 voxel
    return mask, regions, np.diag([1.0, 1.0, 2.0, 1.0])


def test_region_table_rows_counts_volumes_and_fractions():
    mask, regions, affine = _toy_subject()
    brain = regions > 0
    table = compute_statistics(mask, affine, regions, brain_mask=brain).regions
    assert list(table.columns) == list(REGION_COLUMNS)
    assert [(r.region, r.hemisphere) for r in region_rows()] == list(
        zip(table["region"], table["hemisphere"], strict=True)
    )
    rows = table.set_index(["region", "hemisphere"])
    assert len(table) == 21
    assert rows.loc[("centrum_semiovale", "left"), "count"] == 2
    assert rows.loc[("centrum_semiovale", "left"), "volume_mm3"] == pytest.approx(12.0)
    assert rows.loc[("centrum_semiovale", "left"), "region_volume_mm3"] == pytest.approx(10 * 10 * 4 * 2.0)
    assert rows.loc[("centrum_semiovale", "left"), "volume_fraction"] == pytest.approx(12.0 / 800.0)
    assert rows.loc[("centrum_semiovale", "left"), "median_cluster_volume_mm3"] == pytest.approx(6.0)
    assert rows.loc[("centrum_semiovale", "left"), "density_per_cm3"] == pytest.approx(2 / 0.8)
    assert rows.loc[("white_matter", "right"), "count"] == 1
    assert rows.loc[("white_matter", "bilateral"), "count"] == 3
    assert rows.loc[("white_matter", "bilateral"), "volume_mm3"] == pytest.approx(16.0)
    assert rows.loc[("basal_ganglia", "bilateral"), "max_cluster_volume_mm3"] == pytest.approx(4.0)
    assert rows.loc[("whole_brain", "bilateral"), "count"] == 5
    assert rows.loc[("whole_brain", "bilateral"), "volume_mm3"] == pytest.approx(22.0)
    assert rows.loc[("whole_brain", "bilateral"), "region_volume_mm3"] == pytest.approx(2000 * 2.0)
    # A region without PVS still has its row, with zero counts and n/a for undefined statistics.
    thalamus = rows.loc[("thalamus", "left")]
    assert thalamus["count"] == 0 and thalamus["volume_mm3"] == 0
    assert np.isnan(thalamus["mean_cluster_volume_mm3"]) and np.isnan(thalamus["volume_fraction"])


def test_volume_in_region_counts_voxels_where_they_lie():
    mask = np.zeros((10, 10, 10), bool)
    regions = np.zeros(mask.shape, np.uint8)
    regions[:5] = BG_LEFT
    regions[5:] = BG_RIGHT
    mask[1:8, 5, 5] = True  # 4 voxels left, 3 right: assigned left
    rows = compute_statistics(mask, np.eye(4), regions).regions.set_index(["region", "hemisphere"])
    assert rows.loc[("basal_ganglia", "left"), ["count", "volume_mm3", "volume_in_region_mm3"]].tolist() == [
        1,
        7,
        4,
    ]
    assert rows.loc[("basal_ganglia", "right"), ["count", "volume_mm3", "volume_in_region_mm3"]].tolist() == [
        0,
        0,
        3,
    ]


def test_empty_mask_and_missing_region_map():
    stats = compute_statistics(np.zeros((6, 6, 6), bool), np.eye(4))
    assert stats.census.empty and list(stats.census.columns) == list(CENSUS_COLUMNS)
    assert (stats.regions["count"] == 0).all() and len(stats.regions) == 21
    mask = np.zeros((6, 6, 6), bool)
    mask[1, 1, 1:4] = True
    stats = compute_statistics(mask, np.eye(4))
    assert stats.census["region"].tolist() == ["unassigned"]
    rows = stats.regions.set_index(["region", "hemisphere"])
    assert rows.loc[("whole_brain", "bilateral"), "count"] == 1
    assert rows.loc[("other", "bilateral"), "count"] == 0


# ----------------------------------------------------------------------------- outputs
def test_write_statistics_names_grid_and_sidecars(tmp_path):
    mask, regions, affine = _toy_subject()
    affine = affine.copy()
    affine[:3, 3] = [-10, 20, 30]
    stats = compute_statistics(mask, affine, regions, probability=mask * 0.75, brain_mask=regions > 0)
    reference = nib.Nifti1Image(np.zeros(mask.shape, np.float32), affine)
    prefix = tmp_path / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_acq-hr"
    sources = ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_acq-hr_T2w.nii.gz"]
    written = write_statistics(prefix, stats, reference, sources=sources, parameters={"Threshold": 0.5})
    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "sub-01_ses-1_acq-hr_desc-pvsclusters_dseg.nii.gz",
            "sub-01_ses-1_acq-hr_desc-pvs_morph.tsv",
            "sub-01_ses-1_acq-hr_desc-pvs_morph.json",
            "sub-01_ses-1_acq-hr_desc-pvsclusters_morph.tsv",
            "sub-01_ses-1_acq-hr_desc-pvsclusters_morph.json",
        ]
    )
    image = nib.load(derivative_path(prefix, "clusters"))
    assert image.get_data_dtype() == np.uint16
    np.testing.assert_allclose(image.affine, affine)
    data = np.asarray(image.dataobj)
    census = pd.read_csv(derivative_path(prefix, "census"), sep="\t", na_values="n/a")
    for row in census.itertuples():
        assert (data == row.cluster_id).sum() == row.voxels
    assert census["mean_probability"].tolist() == pytest.approx([0.75] * 5)

    morph_path = derivative_path(prefix, "morph")
    sidecar = json.loads(morph_path.with_suffix(".json").read_text())
    table = pd.read_csv(morph_path, sep="\t", na_values="n/a", keep_default_na=False)
    assert set(table.columns) <= set(sidecar) and sidecar["Sources"] == sources
    assert sidecar["Parameters"] == {"Threshold": 0.5}
    assert all({"LongName", "Description"} <= set(sidecar[c]) for c in table.columns)
    assert sidecar["volume_mm3"]["Units"] == "mm^3"
    lines = morph_path.read_text().splitlines()
    assert "e+" not in morph_path.read_text()
    assert lines[1].split("\t")[:3] == ["centrum_semiovale", "left", "2"]
    assert "n/a" in lines[10]  # thalamus left: undefined means are n/a


def test_write_statistics_refuses_another_grid(tmp_path):
    stats = compute_statistics(np.zeros((6, 6, 6), bool), np.eye(4))
    with pytest.raises(ValueError, match="grid"):
        write_statistics(
            tmp_path / "sub-01", stats, nib.Nifti1Image(np.zeros((6, 6, 6)), np.diag([2, 2, 2, 1]))
        )


def test_large_volumes_keep_their_digits(tmp_path):
    regions = np.full((120, 120, 100), 12, np.uint8)  # 1,440,000 mm^3 of 'other'
    stats = compute_statistics(np.zeros(regions.shape, bool), np.eye(4), regions)
    write_statistics(
        tmp_path / "sub-01", stats, nib.Nifti1Image(np.zeros(regions.shape, np.uint8), np.eye(4))
    )
    text = (tmp_path / "sub-01_desc-pvs_morph.tsv").read_text()
    assert "\t1440000\t" in text


def test_every_column_is_documented():
    docs = Path(__file__).resolve().parents[1] / "docs"
    statistics = (docs / "statistics.md").read_text(encoding="utf-8")
    for column in [*CENSUS_COLUMNS, *REGION_COLUMNS]:
        assert f"`{column}`" in statistics, column
    reports = (docs / "reports.md").read_text(encoding="utf-8")
    for column in [*GROUP_ID_COLUMNS, *ROBUST_Z_COLUMNS]:
        assert f"`{column}`" in reports, column
