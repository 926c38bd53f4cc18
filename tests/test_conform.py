"""Validated loading, conforming and the exact way back to the native grid."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from mednet_pvs.errors import InputImageError
from mednet_pvs.preproc.conform import conform, load_anatomical, native_image, to_native
from tests.bids_factory import lps_affine, oblique_affine
from tests.conftest import make_phantom

AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": lps_affine(),
    "oblique": oblique_affine(),
    "anisotropic": lps_affine((0.5, 0.5, 2.0)),
    "permuted": np.array([[0, 0, 1.2, 0], [-0.9, 0, 0, 0], [0, 1.1, 0, 0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_is_exact(tmp_path, name):
    img = make_phantom(affine=AFFINES[name])
    path = tmp_path / "in.nii.gz"
    nib.save(img, path)
    loaded = load_anatomical(path)
    conformed = conform(loaded)
    assert nib.aff2axcodes(conformed.affine) == ("R", "A", "S")
    # the same world position holds the same value
    back = to_native(np.asarray(conformed.dataobj), loaded.affine)
    np.testing.assert_array_equal(back, img.get_fdata(dtype=np.float32))
    out = native_image(back > 200, nib.load(path), np.uint8)
    np.testing.assert_allclose(out.affine, nib.load(path).affine, atol=1e-6)
    assert out.shape == img.shape
    assert out.get_data_dtype() == np.uint8


def test_conformed_world_coordinates_match(tmp_path):
    img = make_phantom(affine=AFFINES["oblique"])
    conformed = conform(img)
    ijk = np.array([5, 7, 9])
    world = img.affine @ [*ijk, 1]
    ijk_conformed = np.round(np.linalg.inv(conformed.affine) @ world).astype(int)[:3]
    assert conformed.get_fdata()[tuple(ijk_conformed)] == img.get_fdata()[tuple(ijk)]


def _save(tmp_path, data, affine=None, name="img.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputImageError, match="does not exist"):
        load_anatomical(tmp_path / "nope.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(InputImageError, match=r"empty.nii.gz: file is empty \(0 bytes\)"):
        load_anatomical(empty)


def test_not_a_nifti_and_truncated(tmp_path):
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(gzip.compress(b"this is not an image" * 20))
    with pytest.raises(InputImageError, match=r"fake\.nii\.gz: is not a readable NIfTI"):
        load_anatomical(fake)
    good = _save(tmp_path, np.random.default_rng(0).random((20, 20, 20)).astype(np.float32), name="t.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expected = r"truncated\.nii\.gz: is (truncated or corrupt|not a readable)"
    with pytest.raises(InputImageError, match=expected):
        load_anatomical(truncated)


def test_dimensionality_is_checked(tmp_path):
    with pytest.raises(InputImageError, match="is 4-D with 3 volumes"):
        load_anatomical(_save(tmp_path, np.ones((8, 8, 8, 3), np.float32), name="four.nii.gz"))
    with pytest.raises(InputImageError, match="not a 3-D volume"):
        load_anatomical(_save(tmp_path, np.ones((16, 16, 1), np.float32), name="flat.nii.gz"))
    single = np.random.default_rng(1).random((8, 9, 10, 1)).astype(np.float32)
    assert load_anatomical(_save(tmp_path, single, name="single.nii.gz")).shape == (8, 9, 10)


def test_non_finite_and_constant(tmp_path, caplog):
    data = np.random.default_rng(2).random((10, 10, 10)).astype(np.float32)
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    loaded = load_anatomical(_save(tmp_path, data, name="nan.nii.gz"))
    assert np.isfinite(loaded.get_fdata()).all()
    assert "3 non-finite" in caplog.text
    with pytest.raises(InputImageError, match="no finite voxel"):
        load_anatomical(_save(tmp_path, np.full((6, 6, 6), np.nan, np.float32), name="allnan.nii.gz"))
    with pytest.raises(InputImageError, match="constant intensity"):
        load_anatomical(_save(tmp_path, np.full((6, 6, 6), 7.0, np.float32), name="const.nii.gz"))


def test_integer_scaling_is_applied(tmp_path):
    img = nib.Nifti1Image(np.arange(1000, dtype=np.int16).reshape(10, 10, 10), np.eye(4))
    img.header.set_slope_inter(0.5, 10)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, path)
    data = load_anatomical(path).get_fdata()
    assert data[0, 0, 1] == pytest.approx(10.5)


def test_sform_qform_disagreement_warns(tmp_path, caplog):
    img = make_phantom()
    qform = np.eye(4)
    qform[:3, 3] = [5, 0, 0]
    img.set_qform(qform, code=1)
    img.set_sform(np.eye(4), code=1)
    path = tmp_path / "sq.nii.gz"
    nib.save(img, path)
    loaded = load_anatomical(path)
    assert "sform and qform disagree" in caplog.text
    np.testing.assert_allclose(loaded.affine, np.eye(4))


def test_singular_affine_refused(tmp_path):
    img = nib.Nifti1Image(np.random.default_rng(3).random((6, 6, 6)).astype(np.float32), np.eye(4))
    path = tmp_path / "singular.nii"
    nib.save(img, path)
    header = nib.load(path).header.copy()
    header["srow_z"] = [0, 0, 0, 0]
    header["qform_code"] = 0
    nib.save(nib.Nifti1Image(img.get_fdata(), None, header), path)
    with pytest.raises(InputImageError, match=r"invalid .*affine"):
        load_anatomical(path)
