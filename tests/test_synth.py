"""Synthetic PVS phantoms: determinism, anatomy, ground-truth rule, contrasts, distractors, grids."""

from __future__ import annotations

import numpy as np
import pytest

from mednet_pvs.errors import UsageError
from mednet_pvs.regions.freesurfer import pvs_regions_from_freesurfer
from mednet_pvs.regions.lut import region_by_index
from mednet_pvs.stats.clusters import label_clusters
from mednet_pvs.synth import SynthConfig, generate_subject
from mednet_pvs.synth.anatomy import TISSUE_CLASSES, available_anatomies, load_anatomy
from mednet_pvs.synth.generator import ground_truth_mask
from mednet_pvs.synth.placement import LOCATIONS

#: A small crop keeps the unit tests fast; the anatomy, placement and GT rule are the full ones.
SMALL = SynthConfig(crop_mm=(32.0, 32.0, 32.0), pvs_grade=3)


def _data(img) -> np.ndarray:
    return np.asarray(img.dataobj)


@pytest.fixture(scope="module")
def full():
    """One whole-brain, 1 mm, three-contrast subject with moderate-severe burden and distractors."""
    return generate_subject(21, ("T2w", "T1w", "FLAIR"), SynthConfig(pvs_grade=3))


def _region_at(phantom, points: np.ndarray) -> np.ndarray:
    index = np.rint(phantom.grid.index(points)).astype(int)
    return _data(phantom.regions)[tuple(index.T)]


def test_pvs_stay_inside_the_regions_they_were_drawn_in(full):
    table = full.pvs_table
    assert len(full.tubes) == len(table) == full.participant["n_pvs"]
    assert set(table.location) == {"white_matter", "basal_ganglia", "hippocampus", "midbrain"}
    for tube, row in zip(full.tubes, table.itertuples(), strict=True):
        assert np.isin(_region_at(full, tube.points), LOCATIONS[row.location]).all(), row.pvs_id
        assert region_by_index(int(_region_at(full, tube.centre[None])[0])).name == row.region


def test_pvs_sizes_lie_in_the_configured_ranges(full):
    diameters = np.array([t.diameter for t in full.tubes])
    lengths = np.array([t.length for t in full.tubes])
    assert diameters.min() >= 0.5 and diameters.max() <= 3.0
    assert lengths.min() >= 1.0 and lengths.max() <= 20.0 + 1e-9
    np.testing.assert_allclose(full.pvs_table.diameter_mm, diameters.round(3))
    np.testing.assert_allclose(full.pvs_table.length_mm, lengths.round(3))
    # white-matter PVS are longer than basal-ganglia PVS on average
    location = full.pvs_table.location.to_numpy()
    assert lengths[location == "white_matter"].mean() > lengths[location == "basal_ganglia"].mean()


def _rule(fraction: np.ndarray, tubes, grid, fraction_threshold=0.5, centreline_threshold=0.25) -> np.ndarray:
    """The documented ground-truth rule written out (voxel traversal: test_synth_shapes.py)."""
    mask = fraction >= fraction_threshold
    flat = fraction.reshape(-1)
    for tube in tubes:
        crossed = tube.centreline_voxels(grid)
        if len(crossed) and flat[crossed].mean() >= centreline_threshold:
            mask.reshape(-1)[crossed] = True
    return mask


def test_ground_truth_is_the_documented_partial_volume_rule(full):
    fraction = _data(full.pvs_fraction)
    mask = _data(full.pvs_mask).astype(bool)
    instances = _data(full.pvs_instances)
    np.testing.assert_array_equal(mask, _rule(fraction, full.tubes, full.grid))
    np.testing.assert_array_equal(mask, ground_truth_mask(fraction, full.tubes, full.grid, full.config))
    assert 0 < (mask & (fraction < 0.5)).sum() < mask.sum()  # the centreline clause adds thin PVS
    np.testing.assert_array_equal(instances > 0, mask)
    counts = np.bincount(instances.ravel(), minlength=len(full.tubes) + 1)[1:]
    np.testing.assert_array_equal(counts, full.pvs_table.mask_voxels)
    assert full.participant["pvs_volume_mm3"] == pytest.approx(mask.sum() * 1.0)


def test_every_output_shares_the_image_grid(full):
    for img in (
        full.pvs_mask,
        full.pvs_fraction,
        full.pvs_instances,
        full.regions,
        full.aseg,
        full.distractors,
    ):
        assert img.shape == full.images["T2w"].shape
        np.testing.assert_allclose(img.affine, full.images["T2w"].affine)
    np.testing.assert_allclose(full.images["T2w"].header.get_zooms(), (1.0, 1.0, 1.0))


def test_regions_come_from_the_freesurfer_mapping_of_the_phantom_labels(full):
    regions = pvs_regions_from_freesurfer(_data(full.aseg), full.aseg.affine)
    np.testing.assert_array_equal(regions, _data(full.regions))
    assert set(np.unique(regions)) == set(range(13))


def test_pvs_are_bright_on_t2w_and_dark_on_t1w_and_flair(full):
    fraction = _data(full.pvs_fraction)
    aseg = _data(full.aseg)
    pvs = fraction >= 0.8
    white_matter = np.isin(aseg, (2, 41)) & (_data(full.distractors) == 0) & (fraction == 0)
    assert pvs.sum() > 100
    level = {name: (img.get_fdata()[pvs].mean(), np.median(img.get_fdata()[white_matter])) for name, img in
             full.images.items()}  # fmt: skip
    assert level["T2w"][0] > 1.5 * level["T2w"][1]
    assert level["T1w"][0] < 0.7 * level["T1w"][1]
    assert level["FLAIR"][0] < 0.7 * level["FLAIR"][1]


def test_distractors_are_recorded_and_kept_apart_from_pvs(full):
    from scipy import ndimage

    labels = _data(full.distractors)
    mask = _data(full.pvs_mask).astype(bool)
    present = set(np.unique(labels))
    assert {1, 2, 3, 4, 5} <= present
    near_pvs = ndimage.binary_dilation(mask, np.ones((3, 3, 3), bool))
    assert not np.isin(labels[near_pvs], (1, 2, 3, 4)).any()
    kinds = full.distractor_table.type.value_counts()
    assert kinds["lacune"] == full.participant["n_lacunes"]
    assert kinds["vessel"] == full.participant["n_vessels"]
    # thin vessels follow the PVS ground-truth rule: one object each, never dashes
    assert 0 < label_clusters(labels == 4)[1] <= full.participant["n_vessels"]
    # lacunes are CSF-like with a bright FLAIR rim; WMH are bright on FLAIR and dark-ish on T1w
    flair, t1 = full.images["FLAIR"].get_fdata(), full.images["T1w"].get_fdata()
    assert flair[labels == 2].mean() > 1.5 * flair[labels == 1].mean()
    white_matter = np.isin(_data(full.aseg), (2, 41)) & (labels == 0)
    assert flair[labels == 3].mean() > 1.3 * np.median(flair[white_matter])
    assert t1[labels == 3].mean() < np.median(t1[white_matter])


def test_same_seed_gives_identical_arrays_and_contrasts_are_independent():
    first = generate_subject(3, ("T2w",), SMALL)
    again = generate_subject(3, ("T2w", "FLAIR"), SMALL)
    other = generate_subject(4, ("T2w",), SMALL)
    for name in ("pvs_fraction", "pvs_mask", "pvs_instances", "regions", "aseg", "distractors"):
        np.testing.assert_array_equal(_data(getattr(first, name)), _data(getattr(again, name)))
    np.testing.assert_array_equal(_data(first.images["T2w"]), _data(again.images["T2w"]))
    np.testing.assert_array_equal(first.grid.affine, again.grid.affine)
    assert first.pvs_table.equals(again.pvs_table)
    assert not np.array_equal(first.grid.affine, other.grid.affine) or not np.array_equal(
        _data(first.images["T2w"]), _data(other.images["T2w"])
    )
    assert first.participant != other.participant


def test_anisotropic_acquisition_has_the_voxel_size_and_the_truth_on_its_grid():
    config = SynthConfig(voxel_size=(0.5, 0.5, 2.0), crop_mm=(32.0, 32.0, 32.0), pvs_grade=4)
    phantom = generate_subject(8, ("T2w",), config)
    img = phantom.images["T2w"]
    np.testing.assert_allclose(img.header.get_zooms(), (0.5, 0.5, 2.0))
    assert img.shape == (64, 64, 16)
    for gt in (phantom.pvs_mask, phantom.pvs_fraction, phantom.regions, phantom.distractors):
        assert gt.shape == img.shape
        np.testing.assert_allclose(gt.affine, img.affine)
    mask = _data(phantom.pvs_mask).astype(bool)
    assert mask.any()
    np.testing.assert_array_equal(mask, _rule(_data(phantom.pvs_fraction), phantom.tubes, phantom.grid))
    assert phantom.participant["voxel_size_mm"] == "0.5x0.5x2"
    # skull stripping never cuts into the brain, and the crop's edge slices are imaged like the rest
    data, aseg = img.get_fdata(), _data(phantom.aseg)
    assert (data[aseg > 0] > 0).all()
    white_matter = (
        np.isin(aseg, (2, 41)) & (_data(phantom.pvs_fraction) == 0) & (_data(phantom.distractors) == 0)
    )
    reference = np.median(data[white_matter])
    faces = [(axis, k) for axis in range(3) for k in (0, -1)]
    ratios = [
        np.median(np.take(data, k, axis)[np.take(white_matter, k, axis)]) / reference
        for axis, k in faces
        if np.take(white_matter, k, axis).sum() >= 50
    ]
    assert len(ratios) >= 2 and all(0.8 < r < 1.25 for r in ratios), ratios


def test_requested_size_ranges_and_random_voxel_sizes_are_honoured():
    config = SynthConfig(
        crop_mm=(32.0, 32.0, 32.0),
        pvs_grade=4,
        pvs_diameter_range_mm=(1.2, 2.0),
        pvs_length_range_mm=(4.0, 8.0),
        random_voxel_size=True,
    )
    phantom = generate_subject(12, ("T1w",), config)
    assert phantom.tubes
    assert all(1.2 <= t.diameter <= 2.0 and 4.0 <= t.length <= 8.0 + 1e-9 for t in phantom.tubes)
    zooms = phantom.images["T1w"].header.get_zooms()
    assert phantom.participant["voxel_size_mm"] == "x".join(f"{z:g}" for z in np.round(zooms, 6))


def test_no_burden_draws_no_pvs_and_pdw_orders_grey_above_white_matter():
    phantom = generate_subject(5, ("PDw",), SynthConfig(crop_mm=(48.0, 48.0, 48.0), pvs_grade=0))
    assert phantom.participant["n_pvs"] == 0 and not _data(phantom.pvs_mask).any()
    data, aseg = phantom.images["PDw"].get_fdata(), _data(phantom.aseg)
    assert np.median(data[np.isin(aseg, (3, 42))]) > 1.1 * np.median(data[np.isin(aseg, (2, 41))])


def test_invalid_settings_and_contrasts_are_usage_errors():
    with pytest.raises(UsageError, match="gt_fraction_threshold=0"):
        SynthConfig(gt_fraction_threshold=0)
    with pytest.raises(UsageError, match="unknown phantom settings: colour"):
        SynthConfig.from_dict({"colour": 1})
    with pytest.raises(UsageError, match="T3w"):
        generate_subject(1, ("T3w",), SMALL)
    assert SynthConfig.from_dict(SMALL.to_dict()) == SMALL


def test_bundled_anatomy_and_its_mirror():
    anatomy = load_anatomy("fs-subject")
    mirrored = load_anatomy("fs-subject-mirrored")
    assert available_anatomies() == ["fs-subject", "fs-subject-mirrored"]
    assert anatomy.labels.dtype == np.uint16 and anatomy.labels.shape == (135, 184, 141)
    known = {label for labels in TISSUE_CLASSES.values() for label in labels} | {0}
    assert set(np.unique(anatomy.labels)) <= known
    assert (mirrored.labels == 4).sum() == (anatomy.labels == 43).sum()
    np.testing.assert_array_equal(mirrored.labels[::-1] == 17, anatomy.labels == 53)
    # the anterior commissure lies between the two pallidi
    pallidum_x = [
        anatomy.affine[0, 0] * np.argwhere(anatomy.labels == label)[:, 0].mean() + anatomy.affine[0, 3]
        for label in (13, 52)
    ]
    assert min(pallidum_x) < anatomy.anterior_commissure_mm[0] < max(pallidum_x)


@pytest.mark.shared
def test_bundled_anatomy_is_derived_from_the_shared_freesurfer_subject(shared_dir):
    from mednet_pvs.synth.anatomy import derive_labels

    real = shared_dir / "data" / "real"
    labels, affine, _ = derive_labels(real / "fs_aparc.a2009s+aseg.mgz", real / "fs_norm.mgz")
    bundled = load_anatomy("fs-subject")
    np.testing.assert_array_equal(labels, bundled.labels)
    np.testing.assert_allclose(affine, bundled.affine, atol=1e-4)
