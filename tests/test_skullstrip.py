"""Skull stripping: exact output grid, the already-brain-extracted rule, deepbet on a real head, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mednet_pvs.preproc import skullstrip
from mednet_pvs.preproc.conform import load_anatomical
from mednet_pvs.preproc.skullstrip import (
    BrainExtraction,
    SkullStripError,
    extract_brain,
    nonzero_brain_region,
    skull_strip,
)
from tests.bids_factory import lps_affine, oblique_affine
from tests.conftest import make_phantom

DATA = Path(__file__).parent / "data"
#: 3.5 mm voxels make the phantom's ellipsoid a brain-sized 1.2 L.
ZOOMS = (3.5, 3.5, 3.5)
SHAPE = (40, 48, 40)
AFFINES = {
    "ras": np.diag([*ZOOMS, 1.0]),
    "lps": lps_affine(ZOOMS),
    "oblique": oblique_affine(ZOOMS),
}


def stripped_phantom(affine: np.ndarray) -> tuple[nib.Nifti1Image, np.ndarray]:
    """A brain-extracted-looking phantom with an enclosed zero cavity, and its filled region."""
    data = make_phantom(SHAPE).get_fdata(dtype=np.float32)
    region = data != 0
    cavity = np.zeros(SHAPE, bool)
    cavity[18:22, 20:24, 14:18] = True
    data[cavity] = 0.0
    return nib.Nifti1Image(data, affine), region


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_nonzero_method_returns_the_filled_region_on_the_exact_grid(name):
    img, region = stripped_phantom(AFFINES[name])
    result = extract_brain(img, "T2w", method="nonzero")
    assert isinstance(result, BrainExtraction)
    assert result.mask.shape == img.shape
    assert result.mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(result.mask.affine, img.affine, atol=1e-6)
    # the enclosed cavity is filled; nothing outside the non-zero region is added
    np.testing.assert_array_equal(np.asarray(result.mask.dataobj), region.astype(np.uint8))
    assert result.method == "nonzero"
    assert result.volume_ml == pytest.approx(region.sum() * np.prod(ZOOMS) / 1000.0)
    assert result.summary() == {
        "method": "nonzero",
        "volume_ml": round(result.volume_ml, 1),
        "already_extracted": False,
        "deepbet_coverage": None,
    }


def test_nonzero_region_is_refused_for_noise_background_or_several_pieces():
    img, region = stripped_phantom(AFFINES["ras"])
    data = img.get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(nonzero_brain_region(data), region)
    noisy = data + np.random.default_rng(1).uniform(1, 5, SHAPE).astype(np.float32)
    assert nonzero_brain_region(noisy) is None
    two_pieces = np.zeros(SHAPE, np.float32)
    two_pieces[2:15, 2:20, 2:15] = 100.0
    two_pieces[25:38, 25:45, 25:38] = 100.0
    assert nonzero_brain_region(two_pieces) is None


@pytest.mark.parametrize(
    ("model_mask", "expected_method"),
    [
        # deepbet's brain covers the non-zero region (a brain-extracted scan): keep the user's brain
        (lambda region: ndimage.binary_erosion(region, iterations=1), "nonzero"),
        # deepbet finds a brain much smaller than the non-zero region (a whole head): use deepbet
        (lambda region: ndimage.binary_erosion(region, iterations=4), "deepbet"),
    ],
)
def test_auto_keeps_the_nonzero_region_only_when_deepbet_confirms_it(
    monkeypatch, caplog, model_mask, expected_method
):
    img, region = stripped_phantom(AFFINES["lps"])
    canonical_region = (
        np.asarray(nib.as_closest_canonical(nib.Nifti1Image(region.astype(np.uint8), img.affine)).dataobj) > 0
    )
    fake = model_mask(canonical_region)
    coverage = (fake & canonical_region).sum() / canonical_region.sum()
    assert (coverage >= skullstrip.MIN_DEEPBET_COVERAGE) == (expected_method == "nonzero")
    monkeypatch.setattr(skullstrip, "deepbet_brain_mask", lambda data, **kwargs: fake)
    result = extract_brain(img, "T1w")
    assert result.method == expected_method
    assert result.already_extracted == (expected_method == "nonzero")
    assert result.deepbet_coverage == pytest.approx(coverage)
    warned = "looks brain-extracted, but deepbet's brain covers only" in caplog.text
    assert warned == (expected_method == "deepbet")
    expected = region if expected_method == "nonzero" else fake[::-1, ::-1, :]  # back to LPS voxel order
    np.testing.assert_array_equal(np.asarray(result.mask.dataobj) > 0, expected)


@pytest.fixture(scope="module")
def small_head(tmp_path_factory: pytest.TempPathFactory) -> nib.Nifti1Image:
    """The real whole-head T1w (skull, neck) at 3.2 mm, stored in LPS voxel order and loaded back."""
    img = nib.load(DATA / "head_T1w_3.2mm.nii.gz")
    lps = nib.orientations.axcodes2ornt(("L", "P", "S"))
    path = tmp_path_factory.mktemp("head") / "head_LPS.nii.gz"
    nib.save(
        img.as_reoriented(nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine), lps)),
        path,
    )
    loaded = load_anatomical(path)
    assert nib.aff2axcodes(loaded.affine) == ("L", "P", "S")
    return loaded


@pytest.fixture(scope="module")
def head_extraction(small_head) -> BrainExtraction:
    return extract_brain(small_head, "T1w", threads=2, source="head_T1w_3.2mm.nii.gz")


def test_auto_strips_a_real_whole_head_with_deepbet(small_head, head_extraction):
    mask = np.asarray(head_extraction.mask.dataobj) > 0
    head = np.asarray(small_head.dataobj) > 0
    assert head_extraction.method == "deepbet"
    assert not head_extraction.already_extracted
    # half of the head's voxels are exactly zero around one component, but deepbet's brain covers
    # only about a third of it (35 % on the 1.6 mm original)
    assert head_extraction.deepbet_coverage < 0.45
    assert head_extraction.mask.shape == small_head.shape
    np.testing.assert_array_equal(head_extraction.mask.affine, small_head.affine)
    # deepbet on the 1.6 mm original: 1480 mL; an adult brain, not the 4.2 L head with its neck
    assert 1250 < head_extraction.volume_ml < 1700
    assert (mask & ~head).sum() < 0.01 * mask.sum()
    head_volume = head.sum() * np.prod(small_head.header.get_zooms()) / 1000
    assert head_extraction.volume_ml < 0.45 * head_volume
    # the brain sits above the neck: its lowest slice is well above the image's bottom (S is axis 2)
    assert np.argwhere(mask)[:, 2].min() > np.argwhere(head)[:, 2].min() + 20 / 3.2


def test_skull_strip_returns_the_mask_image():
    img, region = stripped_phantom(AFFINES["oblique"])
    mask = skull_strip(img, "FLAIR", method="nonzero")
    np.testing.assert_array_equal(np.asarray(mask.dataobj), region.astype(np.uint8))


def test_bad_inputs_raise_clear_errors(caplog):
    img, _ = stripped_phantom(AFFINES["ras"])
    with pytest.raises(SkullStripError, match=r"scan\.nii\.gz: unknown skull-strip method 'bet'"):
        skull_strip(img, "T1w", method="bet", source="scan.nii.gz")
    with pytest.raises(SkullStripError, match="supports T1w, T2w, FLAIR, not 'PD'"):
        skull_strip(img, "PD")
    with pytest.raises(SkullStripError, match="needs a 3-D image"):
        skull_strip(nib.Nifti1Image(np.ones((*SHAPE, 2), np.float32), np.eye(4)), "T1w")
    with pytest.raises(SkullStripError, match="constant"):
        skull_strip(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), "T1w")
    noisy = nib.Nifti1Image(img.get_fdata(dtype=np.float32) + 1.0, img.affine)
    with pytest.raises(SkullStripError, match="does not look brain-extracted"):
        skull_strip(noisy, "T1w", method="nonzero")
    # the same phantom on a 1 mm grid is a 20 mL 'brain': kept (the user's own extraction), with a warning
    small = nib.Nifti1Image(img.get_fdata(dtype=np.float32), np.eye(4))
    assert skull_strip(small, "T1w", method="nonzero").get_fdata().sum() > 0
    assert "given brain has only 2" in caplog.text
    # ... but a 'brain' bigger than any brain is a head: refused
    huge = nib.Nifti1Image(img.get_fdata(dtype=np.float32), np.diag([8.0, 8.0, 8.0, 1.0]))
    with pytest.raises(
        SkullStripError, match=r"nonzero brain mask has \d+ mL, outside the plausible 300-2500 mL"
    ):
        skull_strip(huge, "T1w", method="nonzero")
