"""The bundled MNI atlas: files, checksums, labels, landmarks, and agreement with the label set."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mednet_pvs.regions.atlas import (
    ATLAS_FILES,
    SPACE,
    AtlasError,
    atlas_directory,
    load_region_atlas,
    plot_regions,
)
from mednet_pvs.regions.lut import REGIONS, lookup_table

INDEX = {r.name: r.index for r in REGIONS}


@pytest.fixture(scope="module")
def atlas():
    return load_region_atlas()


def _world(img: nib.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    return nib.affines.apply_affine(img.affine, np.argwhere(mask))


def test_atlas_files_share_one_mni_grid(atlas) -> None:
    assert atlas.directory == atlas_directory()
    images = (atlas.template, atlas.brain_mask, atlas.regions, atlas.tissue)
    for img in images:
        assert img.shape == atlas.template.shape
        np.testing.assert_allclose(img.affine, atlas.template.affine)
        assert img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(np.sqrt((atlas.template.affine[:3, :3] ** 2).sum(0)), [1.0, 1.0, 1.0])
    assert nib.aff2axcodes(atlas.template.affine) == ("R", "A", "S")
    assert atlas.description["Space"] == SPACE
    total = sum((atlas.directory / name).stat().st_size for name in ATLAS_FILES.values())
    assert total < 4 * 1024**2  # a few MB at most


def test_atlas_regions_use_the_lut_and_fill_the_brain(atlas) -> None:
    regions = np.asarray(atlas.regions.dataobj)
    brain = np.asarray(atlas.brain_mask.dataobj) > 0
    assert set(np.unique(regions)) == {0, *INDEX.values()}
    assert not regions[~brain].any() and regions[brain].all()
    tissue = np.asarray(atlas.tissue.dataobj)
    assert set(np.unique(tissue[brain])) == {1, 2, 3} and not tissue[~brain].any()
    # The aseg path and the atlas path report the same region names: the LUT.
    assert set(lookup_table()["name"]) - {"background"} == {r.name for r in REGIONS}


def test_atlas_anatomy_is_where_it_belongs(atlas) -> None:
    regions = np.asarray(atlas.regions.dataobj)
    for side, sign in (("left", -1.0), ("right", 1.0)):
        for structure in ("basal_ganglia", "thalamus", "hippocampus", "centrum_semiovale"):
            x = _world(atlas.regions, regions == INDEX[f"{structure}_{side}"])[:, 0]
            assert np.sign(np.median(x)) == sign, f"{structure}_{side}"
    # MNI152 volumes are those of native adult brains scaled by ~1.2-1.5 (the template is large).
    volume_cm3 = {name: (regions == index).sum() / 1000.0 for name, index in INDEX.items()}
    for side in ("left", "right"):
        assert 7.0 < volume_cm3[f"thalamus_{side}"] < 14.0
        assert 3.5 < volume_cm3[f"hippocampus_{side}"] < 8.0
        assert 12.0 < volume_cm3[f"basal_ganglia_{side}"] < 35.0
        assert 60.0 < volume_cm3[f"centrum_semiovale_{side}"] < volume_cm3[f"deep_white_matter_{side}"]
    assert 3.0 < volume_cm3["midbrain"] < 12.0
    cso_bottom = _world(atlas.regions, np.isin(regions, (1, 2)))[:, 2].min()
    assert cso_bottom == pytest.approx(atlas.landmarks["lateral_ventricles_top"][2] + 1.0, abs=1.01)


def test_landmarks_are_in_mni_millimetres(atlas) -> None:
    ac, pc = (
        np.array(atlas.landmarks["anterior_commissure"]),
        np.array(atlas.landmarks["posterior_commissure"]),
    )
    # The MNI origin lies close to the AC; AC-PC distance is ~25-30 mm in adults.
    assert np.linalg.norm(ac) < 8.0
    assert 24.0 < np.linalg.norm(ac - pc) < 32.0
    assert abs(ac[0]) < 2.0 and abs(pc[0]) < 2.0
    regions = np.asarray(atlas.regions.dataobj)
    bg_z = _world(atlas.regions, np.isin(regions, (5, 6)))[:, 2]
    assert bg_z.min() < ac[2] < bg_z.max()  # the rating slice through the AC cuts the basal ganglia
    cso = atlas.landmarks["centrum_semiovale_level"]
    assert cso[2] == pytest.approx(atlas.landmarks["lateral_ventricles_top"][2] + 10.0)


def test_corrupt_or_missing_files_are_reported(tmp_path: Path) -> None:
    copy = tmp_path / "atlas"
    shutil.copytree(atlas_directory(), copy)
    regions = copy / ATLAS_FILES["regions"]
    regions.write_bytes(regions.read_bytes()[:-10])
    with pytest.raises(AtlasError, match=f"{regions.name}: SHA-256 differs"):
        load_region_atlas(copy)
    regions.unlink()
    with pytest.raises(AtlasError, match="atlas file missing"):
        load_region_atlas(copy)
    (copy / "atlas.json").unlink()
    with pytest.raises(AtlasError, match="atlas description not found"):
        load_region_atlas(copy)


def test_plot_regions_writes_a_png(tmp_path: Path, atlas) -> None:
    out = plot_regions(atlas.template, atlas.regions, tmp_path / "figures" / "regions.png", "atlas")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
