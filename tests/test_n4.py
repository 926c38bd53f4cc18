"""N4 bias-field correction: flattens a known multiplicative field, keeps the grid, refuses bad input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mednet_pvs.errors import MednetPVSError
from mednet_pvs.preproc.conform import conform
from mednet_pvs.preproc.n4 import BiasCorrectionError, default_shrink_factor, n4_bias_correct
from tests.bids_factory import lps_affine
from tests.conftest import make_phantom

SHAPE = (48, 56, 40)


def smooth_bias(shape: tuple[int, int, int]) -> np.ndarray:
    """A smooth multiplicative field (0.71 to 1.41 inside the phantom), like a strong coil bias."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    return np.exp(0.35 * x + 0.2 * y**2 - 0.15 * z).astype(np.float32)


def coefficient_of_variation(data: np.ndarray, region: np.ndarray) -> float:
    return float(data[region].std() / data[region].mean())


@pytest.fixture(scope="module")
def biased() -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """A phantom with a known bias, its uniform 'tissue' region, and the clean data."""
    clean = conform(make_phantom(SHAPE, affine=lps_affine((1.2, 1.0, 1.4))))  # as the pipeline calls it
    data = clean.get_fdata(dtype=np.float32)
    tissue = (data > 50) & (data < 200)  # the ellipsoid without the bright tubes
    return nib.Nifti1Image(data * smooth_bias(data.shape), clean.affine), tissue, data


def test_n4_flattens_a_multiplicative_bias_and_keeps_the_grid(biased):
    img, tissue, clean = biased
    before = coefficient_of_variation(img.get_fdata(), tissue)
    corrected = n4_bias_correct(img)
    after = coefficient_of_variation(corrected.get_fdata(), tissue)
    # the phantom's own noise gives a CV of 0.03; the bias raises it to about 0.16
    assert coefficient_of_variation(clean, tissue) < 0.035
    assert before > 0.15
    assert after < before / 2.5
    assert corrected.shape == img.shape
    assert corrected.get_data_dtype() == np.float32
    np.testing.assert_array_equal(corrected.affine, img.affine)
    out = corrected.get_fdata()
    assert np.all(out[clean == 0] == 0), "zero background must stay zero"
    # intensities are rescaled to the input's range inside the fitted region
    assert out[tissue].max() <= img.get_fdata()[clean > 0].max() * 1.001


def test_n4_with_an_explicit_mask_fits_inside_it(biased):
    img, tissue, clean = biased
    mask = nib.Nifti1Image((clean > 0).astype(np.uint8), img.affine)
    corrected = n4_bias_correct(img, mask)
    assert (
        coefficient_of_variation(corrected.get_fdata(), tissue)
        < coefficient_of_variation(img.get_fdata(), tissue) / 2.5
    )


def test_n4_refuses_a_mask_on_another_grid(biased):
    img, tissue, _ = biased
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    with pytest.raises(BiasCorrectionError, match=r"scan\.nii\.gz: the N4 mask .* is not on the image grid"):
        n4_bias_correct(img, nib.Nifti1Image(tissue.astype(np.uint8), shifted), source="scan.nii.gz")
    with pytest.raises(BiasCorrectionError, match="not on the image grid"):
        n4_bias_correct(img, nib.Nifti1Image(tissue[:-1].astype(np.uint8), img.affine))


def test_n4_refuses_an_image_without_positive_voxels():
    img = nib.Nifti1Image(-make_phantom(SHAPE).get_fdata(dtype=np.float32), np.eye(4))
    with pytest.raises(MednetPVSError, match="no voxel with positive intensity"):
        n4_bias_correct(img, nib.Nifti1Image(np.ones(SHAPE, np.uint8), np.eye(4)))


def test_n4_refuses_a_bad_shrink_factor(biased):
    with pytest.raises(BiasCorrectionError, match="shrink_factor must be at least 1"):
        n4_bias_correct(biased[0], shrink_factor=0)


@pytest.mark.parametrize(
    ("voxel_sizes", "expected"),
    [
        ((0.5, 0.5, 0.5), 8),
        ((0.7, 0.7, 0.7), 6),
        ((0.8, 0.8, 2.0), 5),
        ((1.0, 1.0, 1.0), 4),
        ((1.6, 1.6, 1.6), 4),
    ],
)
def test_default_shrink_factor_fits_on_about_4_mm_voxels_on_fine_grids(voxel_sizes, expected):
    assert default_shrink_factor(voxel_sizes) == expected
