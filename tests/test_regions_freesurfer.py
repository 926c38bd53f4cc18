"""The FreeSurfer/SynthSeg path: finding, reading, checking and resampling label files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mednet_pvs.errors import InputImageError
from mednet_pvs.preproc.conform import conform
from mednet_pvs.regions.freesurfer import (
    find_label_file,
    label_regions_qc,
    pvs_regions_from_freesurfer,
    pvs_regions_on_grid,
    read_label_file,
    regions_from_labels_file,
)
from mednet_pvs.regions.lut import REGIONS
from tests.test_regions_rules import AFFINE, INDEX, synthetic_aseg


def _save_as_freesurfer(labels: np.ndarray, path: Path) -> Path:
    """Save RAS ``labels`` (grid ``AFFINE``) the way FreeSurfer stores them: LIA voxel order, MGH."""
    ras = nib.Nifti1Image(labels.astype(np.int32), AFFINE)
    to_lia = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(AFFINE), nib.orientations.axcodes2ornt(("L", "I", "A"))
    )
    lia = ras.as_reoriented(to_lia)
    img = nib.MGHImage(np.asarray(lia.dataobj).astype(np.int32), lia.affine)
    nib.save(img, path)
    return path


@pytest.fixture()
def aseg_file(tmp_path: Path) -> Path:
    return _save_as_freesurfer(synthetic_aseg(), tmp_path / "aseg.mgz")


def test_regions_follow_scanner_coordinates_onto_another_grid(aseg_file: Path) -> None:
    # Reference: 2 mm voxels, shifted origin, axes flipped (LPS voxel order).
    affine = np.array([[-2.0, 0, 0, 30], [0, -2.0, 0, 28], [0, 0, 2.0, -18], [0, 0, 0, 1]])
    reference = nib.Nifti1Image(np.zeros((30, 30, 34), np.float32), affine)
    out = regions_from_labels_file(aseg_file, reference)
    assert out.shape == reference.shape and out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(out.affine, affine)
    expected = pvs_regions_from_freesurfer(synthetic_aseg(), AFFINE)
    data = np.asarray(out.dataobj)
    for ijk in np.argwhere(data > 0)[::37]:
        xyz = affine @ [*ijk, 1]
        source = np.rint(np.linalg.solve(AFFINE, xyz)[:3]).astype(int)
        assert data[tuple(ijk)] == expected[tuple(source)]


def test_regions_on_a_non_ras_grid_match_the_ras_mapping(aseg_file: Path) -> None:
    lia = nib.load(aseg_file)
    regions = pvs_regions_on_grid(np.asarray(lia.dataobj), lia.affine)
    assert regions.shape == lia.shape and regions.dtype == np.uint8
    back_to_ras = nib.as_closest_canonical(nib.Nifti1Image(regions, lia.affine))
    np.testing.assert_allclose(back_to_ras.affine, AFFINE)
    expected = pvs_regions_from_freesurfer(synthetic_aseg(), AFFINE)
    np.testing.assert_array_equal(np.asarray(back_to_ras.dataobj), expected)


def test_brain_mask_clips_and_fills_regions(aseg_file: Path) -> None:
    reference = nib.Nifti1Image(np.zeros(synthetic_aseg().shape, np.float32), AFFINE)
    mask = np.zeros(reference.shape, np.uint8)
    mask[5:60, 5:60, 5:70] = 1
    out = np.asarray(regions_from_labels_file(aseg_file, reference, nib.Nifti1Image(mask, AFFINE)).dataobj)
    assert not out[mask == 0].any()
    assert out[mask == 1].all()
    assert out[6, 6, 6] == INDEX["other"]  # outside the labels, inside the mask


def test_label_regions_qc_flags_labels_from_another_scan(aseg_file: Path, caplog) -> None:
    reference = nib.Nifti1Image(np.zeros(synthetic_aseg().shape, np.float32), AFFINE)
    regions = np.asarray(regions_from_labels_file(aseg_file, reference).dataobj)
    own = regions > 0
    assert label_regions_qc(regions, own) == {"brain_mask_dice": 1.0, "label_coverage": 1.0, "passed": True}
    shifted = np.roll(own, 12, axis=1)  # a brain mask 12 mm away: labels of another scan
    qc = label_regions_qc(regions, shifted)
    assert qc["brain_mask_dice"] < 0.8 and not qc["passed"]
    with caplog.at_level("WARNING"):
        regions_from_labels_file(aseg_file, reference, nib.Nifti1Image(shifted.astype(np.uint8), AFFINE))
    assert "overlap the brain mask poorly" in caplog.text


def test_read_label_file_returns_integer_labels(aseg_file: Path) -> None:
    img = read_label_file(aseg_file)
    assert img.get_data_dtype() == np.int32
    assert nib.aff2axcodes(img.affine) == ("L", "I", "A")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.astype(np.float32) + 0.5, "non-integer values"),
        (lambda d: np.where(d > 0, d + 20000, 0), "does not hold FreeSurfer/SynthSeg label ids"),
        (
            lambda d: np.where(np.isin(d, (4, 43)), 0, d),
            "lacks left lateral_ventricle, right lateral_ventricle",
        ),
        (lambda d: np.where(d == 2, 41, np.where(d == 41, 2, d)), "is not left of the right"),
        (lambda d: np.where(np.isin(d, (2, 41)), 3, d), "lacks left white_matter, right white_matter;"),
        (lambda d: np.zeros_like(d), "contains no labels"),
        (lambda d: np.stack([d, d], axis=-1), "is not a 3-D label volume"),
    ],
)
def test_label_sets_that_are_not_freesurfer_are_refused(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(make(synthetic_aseg()), AFFINE), path)
    with pytest.raises(InputImageError, match=message) as info:
        read_label_file(path)
    assert str(path) in str(info.value)


def test_little_white_matter_is_refused(tmp_path: Path) -> None:
    labels = synthetic_aseg()
    below_cap = np.isin(labels, (2, 41)) & (np.indices(labels.shape)[2] < 60)
    labels[below_cap] = 24  # white matter left only in a thin cap
    path = tmp_path / "csf.nii.gz"
    nib.save(nib.Nifti1Image(labels, AFFINE), path)
    with pytest.raises(InputImageError, match=r"white matter \(ids 2/41\) covers only"):
        read_label_file(path)


def test_unreadable_and_missing_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "aseg.mgz"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(InputImageError, match="not a readable NIfTI/MGH label file"):
        read_label_file(garbage)
    with pytest.raises(InputImageError, match="label file does not exist"):
        read_label_file(tmp_path / "missing.mgz")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_find_label_file_in_a_freesurfer_subjects_dir(tmp_path: Path) -> None:
    aseg = _touch(tmp_path / "sub-01" / "mri" / "aseg.mgz")
    assert find_label_file(tmp_path, "sub-01") == aseg
    aparc = _touch(tmp_path / "sub-01" / "mri" / "aparc+aseg.mgz")
    assert find_label_file(tmp_path, "01") == aparc
    session = _touch(tmp_path / "sub-01_ses-2" / "mri" / "aseg.mgz")
    assert find_label_file(tmp_path, "01", "ses-2") == session
    assert find_label_file(tmp_path, "01", "3") == aparc  # no session folder: the subject's own
    assert find_label_file(aparc, "anyone") == aparc


def test_find_label_file_in_bids_derivatives(tmp_path: Path) -> None:
    anat = tmp_path / "sub-02" / "ses-1" / "anat"
    synthseg = _touch(anat / "sub-02_ses-1_T1w_synthseg.nii.gz")
    _touch(anat / "sub-02_ses-1_space-MNI152NLin2009cAsym_desc-aseg_dseg.nii.gz")  # not native: ignored
    assert find_label_file(tmp_path, "02", "1") == synthseg
    aseg = _touch(anat / "sub-02_ses-1_desc-aseg_dseg.nii.gz")
    assert find_label_file(tmp_path, "02", "1") == aseg
    _touch(anat / "sub-02_ses-1_run-2_desc-aseg_dseg.nii.gz")
    with pytest.raises(InputImageError, match="several label files match"):
        find_label_file(tmp_path, "02", "1")


def test_find_label_file_names_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(
        InputImageError, match=r"no FreeSurfer/SynthSeg labels for sub-03; looked for .*aparc\+aseg"
    ):
        find_label_file(tmp_path, "03")
    with pytest.raises(InputImageError, match="neither a label file nor a folder"):
        find_label_file(tmp_path / "nowhere", "03")


@pytest.mark.shared
def test_real_freesurfer_regions_have_plausible_volumes(shared_dir: Path) -> None:
    norm = nib.load(shared_dir / "data" / "real" / "fs_norm.mgz")
    reference = conform(nib.Nifti1Image(np.asarray(norm.dataobj, np.float32), norm.affine))
    out = regions_from_labels_file(shared_dir / "data" / "real" / "fs_aparc.a2009s+aseg.mgz", reference)
    data = np.asarray(out.dataobj)
    volume_cm3 = {r.name: float((data == r.index).sum()) / 1000.0 for r in REGIONS}  # 1 mm voxels
    # Adult ranges (cm3): thalamus 5-10, hippocampus 2.5-5.5, BG with capsule 8-25, midbrain 2-10.
    for side in ("left", "right"):
        assert 5.0 < volume_cm3[f"thalamus_{side}"] < 10.0
        assert 2.5 < volume_cm3[f"hippocampus_{side}"] < 5.5
        assert 8.0 < volume_cm3[f"basal_ganglia_{side}"] < 25.0
        assert 30.0 < volume_cm3[f"centrum_semiovale_{side}"] < volume_cm3[f"deep_white_matter_{side}"]
    white_matter = sum(v for k, v in volume_cm3.items() if "white_matter" in k or "centrum" in k)
    assert 350.0 < white_matter < 650.0
    assert 2.0 < volume_cm3["midbrain"] < 10.0
