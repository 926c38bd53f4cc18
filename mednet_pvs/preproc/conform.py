"""Load, validate and conform anatomical images; map results back to the input's exact grid.

Conforming only reorders and flips voxel axes (to the closest RAS+ orientation) and casts to
float32, so the way back to the native grid is exact: no interpolation, no shifted voxels.
"""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

from mednet_pvs.errors import InputImageError

__all__ = [
    "conform",
    "load_anatomical",
    "native_image",
    "to_native",
]

LOGGER = logging.getLogger(__name__)

_RAS = axcodes2ornt("RAS")
#: sform and qform are reported as disagreeing above this distance (mm) at the grid corners.
_SFORM_QFORM_TOLERANCE_MM = 1e-3
#: Larger intensities are scaled down: float32 sums of squares of ~1e7 voxels overflow above ~5e15.
_MAX_SAFE_INTENSITY = 1e12


def load_anatomical(path: str | Path) -> nib.Nifti1Image:
    """Load one 3-D anatomical image, refusing anything a segmentation cannot use.

    Returns a float32 image with the file's own affine. A trailing singleton 4th dimension is
    dropped; non-finite voxels are set to 0 and intensities beyond 1e12 scaled down by a power of
    two, each with a warning. Raises :class:`InputImageError` with the file name and the reason for
    missing (or un-fetched DataLad/git-annex), empty, truncated or non-NIfTI files, 2-D or 4-D
    images, invalid affines, and images without contrast.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise InputImageError(
            path,
            f"is a symbolic link to {os.readlink(path)}, which does not exist: in a DataLad/git-annex "
            "dataset the file content has not been fetched yet (run `datalad get` or `git annex get` on it)",
        )
    if not path.exists():
        raise InputImageError(path, "file does not exist")
    if path.is_dir():
        raise InputImageError(path, "is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputImageError(path, "file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for foreign formats
        raise InputImageError(path, f"is not a readable NIfTI/MGH image ({exc})") from exc
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise InputImageError(
            path, f"is truncated or corrupt; its voxel data cannot be read ({exc})"
        ) from exc

    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputImageError(
            path,
            f"is 4-D with {data.shape[3]} volumes (shape {data.shape}); PVS segmentation needs one 3-D "
            "volume. Extract the volume to use (e.g. the first: fslroi in out 0 1) and retry.",
        )
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputImageError(
            path, f"is not a 3-D volume (shape {data.shape}); a 3-D anatomical scan is needed"
        )
    if np.issubdtype(data.dtype, np.complexfloating) or data.dtype.fields is not None:
        raise InputImageError(path, f"has voxel type {data.dtype}; a real-valued scalar image is needed")

    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputImageError(path, "has an invalid (singular or non-finite) voxel-to-world affine")
    _warn_on_sform_qform_mismatch(img, path)

    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.any():
        raise InputImageError(path, "contains no finite voxel values (all NaN/Inf)")
    if not finite.all():
        n_bad = int((~finite).sum())
        LOGGER.warning("%s: %d non-finite (NaN/Inf) voxels set to 0", path, n_bad)
        data = np.where(finite, data, np.float32(0))
    if float(data.max()) == float(data.min()):
        raise InputImageError(
            path, f"has constant intensity ({float(data.min())}); there is nothing to segment"
        )
    data = _safe_intensity_range(data, path)

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm", "sec")
    out = nib.Nifti1Image(data, affine, header)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    return out


def _safe_intensity_range(data: np.ndarray, path: Path) -> np.ndarray:
    """Scale intensities beyond :data:`_MAX_SAFE_INTENSITY` down by a power of two (exact in floats).

    float32 statistics of such values (a sum of squares for a z-score) overflow to inf and silently
    give an empty segmentation; the models normalise intensities, so a common factor changes nothing.
    """
    peak = float(np.abs(data).max())
    if peak <= _MAX_SAFE_INTENSITY:
        return data
    exponent = int(np.ceil(np.log2(peak / _MAX_SAFE_INTENSITY)))
    LOGGER.warning(
        "%s: intensities reach %.3g; scaled by 2^-%d to stay within float32 statistics (relative "
        "intensities unchanged)",
        path,
        peak,
        exponent,
    )
    return np.ldexp(data, -exponent).astype(np.float32)


def _warn_on_sform_qform_mismatch(img: nib.spatialimages.SpatialImage, path: Path) -> None:
    header = img.header
    if not isinstance(header, nib.Nifti1Header):
        return
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    if not s_code or not q_code or sform is None or qform is None:
        return
    corners = np.array(
        [[i, j, k, 1] for i in (0, img.shape[0]) for j in (0, img.shape[1]) for k in (0, img.shape[2])], float
    ).T
    distance = np.abs((sform - qform) @ corners).max()
    if distance > _SFORM_QFORM_TOLERANCE_MM:
        LOGGER.warning(
            "%s: sform and qform disagree by up to %.3g mm; using the sform (as nibabel, FSL and "
            "FreeSurfer do). Outputs carry that affine in both.",
            path,
            distance,
        )


def conform(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient to the closest RAS+ voxel order and cast to float32 (no resampling)."""
    canonical = nib.as_closest_canonical(img)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm", "sec")
    out = nib.Nifti1Image(data, canonical.affine, header)
    out.set_qform(canonical.affine, code=1)
    out.set_sform(canonical.affine, code=1)
    return out


def to_native(data: np.ndarray, native_affine: np.ndarray) -> np.ndarray:
    """Map an array on the conformed (closest RAS+) grid back to the voxel order of ``native_affine``.

    Extra trailing dimensions (e.g. classes) are carried along.
    """
    transform = ornt_transform(_RAS, io_orientation(native_affine))
    return apply_orientation(data, transform)


def native_image(
    data: np.ndarray, native: nib.spatialimages.SpatialImage, dtype: np.dtype | type
) -> nib.Nifti1Image:
    """Build an image with ``data`` (already in native voxel order) on the exact grid of ``native``."""
    if tuple(data.shape[:3]) != tuple(native.shape[:3]):
        raise ValueError(f"data shape {data.shape} does not match the native grid {native.shape[:3]}")
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm", "sec")
    img = nib.Nifti1Image(np.asarray(data).astype(dtype, copy=False), native.affine, header)
    img.set_qform(native.affine, code=1)
    img.set_sform(native.affine, code=1)
    if np.issubdtype(np.dtype(dtype), np.integer):
        img.header.set_slope_inter(1, 0)
    return img
