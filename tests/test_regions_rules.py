"""Anatomical region rules and the FreeSurfer mapping on synthetic label volumes."""

from __future__ import annotations

import numpy as np
import pytest

from mednet_pvs.regions.freesurfer import MIDBRAIN_HEIGHT_MM, pvs_regions_from_freesurfer
from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.regions.rules import (
    assign_hemisphere,
    basal_ganglia_with_internal_capsule,
    bounding_box,
    centrum_semiovale,
    fit_to_brain_mask,
    world_coordinate,
)

INDEX = {r.name: r.index for r in REGIONS}
SHAPE = (64, 64, 72)
#: 1 mm RAS grid centred on the origin: voxel (i, j, k) is at (i - 32, j - 32, k - 20) mm.
AFFINE = np.array([[1.0, 0, 0, -32], [0, 1.0, 0, -32], [0, 0, 1.0, -20], [0, 0, 0, 1]])


def synthetic_aseg() -> np.ndarray:
    """A crude two-hemisphere aseg: WM and cortex, lateral ventricles, caudate, putamen, pallidum,
    thalamus, hippocampus, corpus callosum and brainstem, at plausible relative positions."""
    labels = np.zeros(SHAPE, np.int32)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"))
    centre = np.array([31.5, 31.5, 36.0])[:, None, None, None]
    radius = np.array([28.0, 30.0, 34.0])[:, None, None, None]
    r = np.sqrt((((grid - centre) / radius) ** 2).sum(0))
    left = grid[0] < 32
    labels[(r < 1.0) & left] = 3
    labels[(r < 1.0) & ~left] = 42
    labels[(r < 0.85) & left] = 2
    labels[(r < 0.85) & ~left] = 41
    for lo, side in ((0, "left"), (1, "right")):

        def box(
            x: tuple[int, int], y: tuple[int, int], z: tuple[int, int], fs_id: int, side: str = side
        ) -> None:
            # x ranges are given for the left hemisphere and mirrored for the right.
            xs = slice(*x) if side == "left" else slice(63 - x[1] + 1, 63 - x[0] + 1)
            labels[xs, slice(*y), slice(*z)] = fs_id

        box((27, 31), (26, 44), (36, 46), 4 if lo == 0 else 43)  # lateral ventricle
        box((22, 27), (36, 44), (30, 42), 11 if lo == 0 else 50)  # caudate
        box((10, 16), (28, 44), (26, 38), 12 if lo == 0 else 51)  # putamen
        box((16, 19), (30, 38), (28, 34), 13 if lo == 0 else 52)  # pallidum
        box((22, 30), (18, 30), (26, 36), 10 if lo == 0 else 49)  # thalamus
        box((14, 22), (14, 24), (12, 18), 17 if lo == 0 else 53)  # hippocampus
    labels[28:36, 26:44, 47:49] = 251  # corpus callosum, across the midline
    labels[28:36, 20:28, 2:26] = 16  # brainstem
    return labels


@pytest.fixture(scope="module")
def regions() -> np.ndarray:
    return pvs_regions_from_freesurfer(synthetic_aseg(), AFFINE)


def test_centrum_semiovale_is_white_matter_above_the_ventricles_in_mm() -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[2, 3] = -10.0  # slice k lies at z = 2k - 10 mm
    wm = np.ones((4, 4, 10), bool)
    ventricles = np.zeros_like(wm)
    ventricles[1:3, 1:3, 2:5] = True  # top voxel at k=4, z=-2 mm
    cso = centrum_semiovale(wm, ventricles, affine)
    assert not cso[:, :, :5].any()
    assert cso[:, :, 5:].all()
    assert not centrum_semiovale(wm, np.zeros_like(wm), affine).any()


def test_internal_capsule_between_caudate_and_putamen_joins_basal_ganglia() -> None:
    nuclei = np.zeros((30, 30, 3), bool)
    nuclei[5:9, 10:20, :] = True  # putamen
    nuclei[20:24, 10:20, :] = True  # caudate
    wm = ~nuclei
    thalamus = np.zeros_like(nuclei)
    thalamus[12:16, 12:16, :] = True  # inside the hull, but excluded
    bg = basal_ganglia_with_internal_capsule(nuclei, wm, thalamus)
    assert bg[14, 11, 1]  # capsule between the nuclei
    assert not bg[13, 13, 1]  # thalamus stays out
    assert not bg[2, 15, 1] and not bg[14, 25, 1]  # white matter outside the hull
    assert bg[nuclei].all()


def test_assign_hemisphere_uses_the_nearest_side() -> None:
    left = np.zeros((10, 3, 3), bool)
    right = np.zeros_like(left)
    left[:3] = True
    right[7:] = True
    target = np.zeros_like(left)
    target[3:7] = True
    to_left, to_right = assign_hemisphere(target, left, right)
    assert to_left[3:5].all() and not to_left[5:].any()
    assert to_right[5:7].all() and not (to_left & to_right).any()
    only_left = assign_hemisphere(target, left, np.zeros_like(left))
    assert only_left[0].sum() == target.sum() and not only_left[1].any()


def test_fit_to_brain_mask_clears_outside_and_fills_inside() -> None:
    regions = np.array([[0, 5, 7, 3]], np.uint8)
    brain = np.array([[True, True, False, True]])
    np.testing.assert_array_equal(fit_to_brain_mask(regions, brain), [[INDEX["other"], 5, 0, 3]])


def test_bounding_box_with_margin_stays_inside_the_array() -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[1, 4:6, 8] = True
    assert bounding_box(mask, 2) == (slice(0, 4), slice(2, 8), slice(6, 10))
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((3, 3, 3), bool))


def test_world_coordinate_follows_the_affine() -> None:
    z = world_coordinate((2, 2, 3), np.diag([1.0, 1.0, 2.5, 1.0]), 2)
    np.testing.assert_allclose(z[0, 0], [0.0, 2.5, 5.0])


def test_freesurfer_mapping_places_every_region(regions: np.ndarray) -> None:
    assert set(np.unique(regions)) == {0, *INDEX.values()}
    labels = synthetic_aseg()
    assert (regions[labels == 10] == INDEX["thalamus_left"]).all()
    assert (regions[labels == 49] == INDEX["thalamus_right"]).all()
    assert (regions[labels == 17] == INDEX["hippocampus_left"]).all()
    assert (regions[np.isin(labels, (3, 42))] == INDEX["other"]).all()
    assert (regions[labels == 0] == 0).all()


def test_cso_starts_above_the_lateral_ventricles(regions: np.ndarray) -> None:
    labels = synthetic_aseg()
    top_k = np.nonzero(np.isin(labels, (4, 43)).any(axis=(0, 1)))[0].max()
    cso = np.isin(regions, (INDEX["centrum_semiovale_left"], INDEX["centrum_semiovale_right"]))
    assert np.nonzero(cso.any(axis=(0, 1)))[0].min() == top_k + 1
    wm_above = np.isin(labels, (2, 41, 251))[:, :, top_k + 1 :]
    assert cso[:, :, top_k + 1 :][wm_above].all()


def test_internal_capsule_joins_basal_ganglia_on_each_side(regions: np.ndarray) -> None:
    # White matter between caudate (x 22-26) and putamen (x 10-15) at y 40, z 32: the anterior limb.
    assert regions[20, 40, 32] == INDEX["basal_ganglia_left"]
    assert regions[63 - 20, 40, 32] == INDEX["basal_ganglia_right"]
    # White matter lateral to the putamen stays deep white matter.
    assert regions[9, 36, 32] == INDEX["deep_white_matter_left"]


def test_corpus_callosum_is_split_by_hemisphere(regions: np.ndarray) -> None:
    assert regions[29, 30, 47] == INDEX["centrum_semiovale_left"]
    assert regions[34, 30, 47] == INDEX["centrum_semiovale_right"]


def test_midbrain_is_the_top_of_the_brainstem(regions: np.ndarray) -> None:
    labels = synthetic_aseg()
    brainstem = labels == 16
    top_k = np.nonzero(brainstem.any(axis=(0, 1)))[0].max()
    midbrain_k = np.nonzero((regions == INDEX["midbrain"]).any(axis=(0, 1)))[0]
    assert midbrain_k.max() == top_k
    assert midbrain_k.min() == top_k - int(MIDBRAIN_HEIGHT_MM) + 1
    assert (regions[:, :, : midbrain_k.min()][brainstem[:, :, : midbrain_k.min()]] == INDEX["other"]).all()


def test_lookup_table_and_sidecar_describe_every_extra_column(tmp_path):
    import json

    import pandas as pd

    from mednet_pvs.regions.lut import write_lookup_table

    tsv, sidecar = write_lookup_table(tmp_path)
    assert (tsv.name, sidecar.name) == ("seg-pvsregions_dseg.tsv", "seg-pvsregions_dseg.json")
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    assert list(table["index"]) == [0, *(r.index for r in REGIONS)]
    extra = set(table.columns) - {"index", "name", "color"}  # the columns BIDS defines for dseg.tsv
    assert extra and extra <= set(json.loads(sidecar.read_text()))
