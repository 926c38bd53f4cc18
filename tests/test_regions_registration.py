"""Atlas registration: transforms, caching, determinism, landmarks, QC, and agreement with FreeSurfer."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to

from mednet_pvs.errors import InputImageError
from mednet_pvs.regions.atlas import load_region_atlas
from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.regions.registration import (
    AFFINE,
    RegistrationSettings,
    antsregistration_arguments,
    register_atlas,
)

#: Small, fast settings for the 4 mm test grid.
FAST_AFFINE = RegistrationSettings(
    linear_iterations=(100, 50), syn_iterations=(), shrink_factors=(2, 1), smoothing_sigmas=(1, 0)
)
FAST_SYN = RegistrationSettings(
    linear_iterations=(50, 20), syn_iterations=(10, 5), shrink_factors=(2, 1), smoothing_sigmas=(1, 0)
)


def _rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


#: Known scanner-from-MNI transform of the synthetic subject: 6 degrees of yaw, 5 % smaller, shifted.
SUBJECT_FROM_MNI = np.array([[1, 0, 0, 4.0], [0, 1, 0, -7.0], [0, 0, 1, 12.0], [0, 0, 0, 1]]) @ (
    _rotation_z(6.0) @ np.diag([0.95, 0.95, 0.95, 1.0])
)


@pytest.fixture(scope="module")
def synthetic_subject() -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The atlas template moved by ``SUBJECT_FROM_MNI`` onto a 4 mm LPS grid, with its brain mask."""
    atlas = load_region_atlas()
    shape = (48, 54, 48)
    affine = np.array([[-4.0, 0, 0, 96], [0, -4.0, 0, 96], [0, 0, 4.0, -80], [0, 0, 0, 1]])
    # An image whose voxel-to-world map is SUBJECT_FROM_MNI @ atlas.affine shows the atlas there.
    moved = nib.Nifti1Image(
        np.asarray(atlas.template.dataobj, np.float32), SUBJECT_FROM_MNI @ atlas.template.affine
    )
    moved_mask = nib.Nifti1Image(np.asarray(atlas.brain_mask.dataobj, np.float32), moved.affine)
    subject = resample_from_to(moved, (shape, affine), order=1)
    mask = resample_from_to(moved_mask, (shape, affine), order=1)
    brain = (np.asarray(mask.dataobj) > 0.5).astype(np.uint8)
    return nib.Nifti1Image(np.asarray(subject.dataobj, np.float32), affine), nib.Nifti1Image(brain, affine)


def test_antsregistration_arguments_set_seed_metric_and_stages() -> None:
    args = antsregistration_arguments("fixed.nii.gz", "moving.nii.gz", "out_", FAST_SYN)
    text = " ".join(args)
    assert "--random-seed 20180401" in text
    assert "--transform SyN[0.1,3,0] --metric MI[fixed.nii.gz,moving.nii.gz,1,32]" in text
    assert "--convergence [10x5,1e-6,10]" in text and "--shrink-factors 2x1" in text
    assert "--smoothing-sigmas 1x0vox" in text
    assert "SyN" not in " ".join(antsregistration_arguments("f", "m", "o_", AFFINE))
    with pytest.raises(ValueError, match="one entry per level"):
        RegistrationSettings(syn_iterations=(1, 2))
    with pytest.raises(ValueError, match="syn_metric"):
        RegistrationSettings(syn_metric="GC")


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, synthetic_subject):
    """The atlas registered (affine) to the synthetic subject, and its cache folder."""
    subject, mask = synthetic_subject
    cache = tmp_path_factory.mktemp("cache")
    return register_atlas(subject, mask, "T1w", cache, settings=FAST_AFFINE), cache


def test_register_atlas_recovers_a_known_transform(registered, synthetic_subject) -> None:
    result, _ = registered
    subject, mask = synthetic_subject
    regions = np.asarray(result.regions.dataobj)
    brain = np.asarray(mask.dataobj) > 0
    assert regions.shape == subject.shape and result.regions.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(result.regions.affine, subject.affine)
    assert not regions[~brain].any() and regions[brain].all()
    assert set(np.unique(regions[brain])) == {r.index for r in REGIONS}
    assert result.qc["brain_mask_dice"] > 0.95 and result.qc["passed"]
    assert result.qc["wm_gm_effect_size"] > 1.0  # T1w: white matter brighter than grey matter
    atlas = load_region_atlas()
    for name, mni in atlas.landmarks.items():
        expected = (SUBJECT_FROM_MNI @ [*mni, 1.0])[:3]
        assert np.linalg.norm(np.subtract(result.landmarks[name], expected)) < 3.0, name
    assert result.qc["anterior_commissure_in_brain"]
    assert result.template.shape == subject.shape


def test_cached_transforms_are_reused_and_inputs_change_the_key(registered, synthetic_subject) -> None:
    first, cache = registered
    subject, mask = synthetic_subject
    manifest = json.loads((cache / "registration.json").read_text())
    assert first.transforms.affine.parent == cache
    mtime = first.transforms.affine.stat().st_mtime_ns
    again = register_atlas(subject, mask, "T1w", cache, settings=FAST_AFFINE)
    assert not first.qc["cached"] and again.qc["cached"]
    assert again.transforms.affine.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(first.regions.dataobj), np.asarray(again.regions.dataobj))
    assert again.landmarks == first.landmarks
    brighter = nib.Nifti1Image(np.asarray(subject.dataobj) * 1.5, subject.affine)
    changed = register_atlas(brighter, mask, "T1w", cache, settings=FAST_AFFINE)
    assert not changed.qc["cached"]
    assert json.loads((cache / "registration.json").read_text())["key"] != manifest["key"]


_DETERMINISM_SCRIPT = """
import sys, numpy as np, nibabel as nib
from mednet_pvs.regions.registration import import_ants, register_atlas, RegistrationSettings
import_ants(1)
settings = RegistrationSettings(**{settings!r})
subject, mask = nib.load(sys.argv[1]), nib.load(sys.argv[2])
for run in ("a", "b"):
    result = register_atlas(subject, mask, "T1w", sys.argv[3] + run, settings=settings)
    nib.save(result.regions, sys.argv[3] + run + "/regions.nii.gz")
"""


def test_single_threaded_syn_registration_is_bit_identical(tmp_path: Path, synthetic_subject) -> None:
    # ITK fixes its thread count when ants is imported, so the single-threaded runs need a new process.
    subject, mask = synthetic_subject
    nib.save(subject, tmp_path / "subject.nii.gz")
    nib.save(mask, tmp_path / "mask.nii.gz")
    script = _DETERMINISM_SCRIPT.format(settings=dataclasses.asdict(FAST_SYN))
    args = [str(tmp_path / "subject.nii.gz"), str(tmp_path / "mask.nii.gz"), str(tmp_path / "run_")]
    subprocess.run([sys.executable, "-c", script, *args], check=True, cwd=Path(__file__).resolve().parents[1])
    runs = [tmp_path / f"run_{run}" for run in "ab"]
    assert all((run / "atlas_to_subject_1Warp.nii.gz").is_file() for run in runs)
    for name in ("atlas_to_subject_0GenericAffine.mat", "atlas_to_subject_1Warp.nii.gz", "regions.nii.gz"):
        first, second = (nib.load(run / name) if name.endswith(".nii.gz") else None for run in runs)
        if first is None:
            assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes()
        else:
            np.testing.assert_array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))


def test_t2w_contrast_registers_through_mutual_information(tmp_path: Path, synthetic_subject) -> None:
    subject, mask = synthetic_subject
    brain = np.asarray(mask.dataobj) > 0
    data = np.asarray(subject.dataobj)
    inverted = np.where(brain, data.max() - data, 0).astype(np.float32)  # T2-like: WM dark, CSF bright
    result = register_atlas(
        nib.Nifti1Image(inverted, subject.affine), mask, "T2w", tmp_path, settings=FAST_AFFINE
    )
    assert result.qc["brain_mask_dice"] > 0.95
    assert result.qc["wm_gm_effect_size"] < -1.0 and result.qc["passed"]


def test_bad_inputs_are_refused(tmp_path: Path, synthetic_subject) -> None:
    subject, mask = synthetic_subject
    with pytest.raises(ValueError, match="contrast must be one of"):
        register_atlas(subject, mask, "FLAIR", tmp_path)
    empty = nib.Nifti1Image(np.zeros(mask.shape, np.uint8), mask.affine)
    with pytest.raises(InputImageError, match="is empty"):
        register_atlas(subject, empty, "T1w", tmp_path)
    other_grid = nib.Nifti1Image(np.asarray(mask.dataobj)[:-1], mask.affine)
    with pytest.raises(ValueError, match="does not match the subject grid"):
        register_atlas(subject, other_grid, "T1w", tmp_path)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.shared
def test_atlas_regions_agree_with_the_subjects_own_freesurfer_regions(
    tmp_path: Path, shared_dir: Path
) -> None:
    from mednet_pvs.regions.freesurfer import regions_from_labels_file

    real = shared_dir / "data" / "real"
    norm = nib.load(real / "fs_norm.mgz")
    norm = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(norm.dataobj, np.float32), norm.affine))
    grid = (tuple(int(np.ceil(s / 2)) for s in norm.shape), norm.affine @ np.diag([2.0, 2.0, 2.0, 1.0]))
    subject = resample_from_to(norm, grid, order=1)
    fs_regions = np.asarray(regions_from_labels_file(real / "fs_aparc.a2009s+aseg.mgz", subject).dataobj)
    mask = nib.Nifti1Image((fs_regions > 0).astype(np.uint8), subject.affine)
    settings = RegistrationSettings(linear_iterations=(200, 100, 50, 0), syn_iterations=(40, 20, 0, 0))
    atlas_regions = np.asarray(
        register_atlas(subject, mask, "T1w", tmp_path, settings=settings).regions.dataobj
    )
    # Measured at this resolution and these settings: basal ganglia 0.82/0.79, thalamus 0.86/0.85,
    # hippocampus 0.76/0.71, deep WM 0.69/0.68, CSO 0.65/0.64, midbrain 0.91 (see docs/regions.md).
    index = {r.name: r.index for r in REGIONS}
    minimum_dice = {
        "basal_ganglia": 0.7,
        "thalamus": 0.75,
        "hippocampus": 0.6,
        "deep_white_matter": 0.55,
        "centrum_semiovale": 0.5,
    }
    for structure, minimum in minimum_dice.items():
        for side in ("left", "right"):
            name = f"{structure}_{side}"
            score = _dice(atlas_regions == index[name], fs_regions == index[name])
            assert score > minimum, f"{name}: Dice {score:.2f}"
    assert _dice(atlas_regions == index["midbrain"], fs_regions == index["midbrain"]) > 0.75
