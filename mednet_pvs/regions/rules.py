"""Anatomical rules that turn tissue/structure masks into PVS regions.

Shared by the FreeSurfer/SynthSeg mapping and the atlas builder so that both give the same
definitions. Arrays are expected on a conformed (closest RAS+) grid: axis 2 runs inferior to
superior, so axial slices are ``[:, :, k]``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from mednet_pvs.regions.lut import REGIONS

__all__ = [
    "assign_hemisphere",
    "basal_ganglia_with_internal_capsule",
    "bounding_box",
    "centrum_semiovale",
    "fit_to_brain_mask",
    "world_coordinate",
]


def world_coordinate(shape: tuple[int, ...], affine: np.ndarray, axis: int) -> np.ndarray:
    """Scanner coordinate (mm) ``axis`` (0=x, 1=y, 2=z) of every voxel centre."""
    i, j, k = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape[:3]), indexing="ij", copy=False)
    row = affine[axis]
    return (row[0] * i + row[1] * j + row[2] * k + row[3]).astype(np.float32)


def assign_hemisphere(
    target: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``target`` into left and right parts by the nearest voxel of ``left`` or ``right``.

    Used for structures that FreeSurfer does not lateralise (corpus callosum, WM hypointensities).
    """
    if not left.any() or not right.any():
        return target & left.any(), target & right.any()
    dist_left = ndimage.distance_transform_edt(~left)
    dist_right = ndimage.distance_transform_edt(~right)
    to_left = target & (dist_left <= dist_right)
    return to_left, target & ~to_left


def centrum_semiovale(
    white_matter: np.ndarray, lateral_ventricles: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """White matter above the highest point of the lateral ventricles (scanner z).

    The centrum semiovale is the white matter superior to the bodies of the lateral ventricles
    (Potter et al. 2015 rate CSO PVS on slices above the ventricles). Returns an empty mask when no
    ventricle voxel is present.
    """
    if not lateral_ventricles.any():
        return np.zeros_like(white_matter, dtype=bool)
    z = world_coordinate(white_matter.shape, affine, 2)
    top = float(z[lateral_ventricles].max())
    return white_matter & (z > top)


def basal_ganglia_with_internal_capsule(
    nuclei: np.ndarray, fillable: np.ndarray, exclude: np.ndarray
) -> np.ndarray:
    """Basal ganglia region: the nuclei plus the tissue between them (internal capsule).

    Per axial slice, the convex hull of the nuclei (caudate, putamen, pallidum, accumbens) of one
    hemisphere is taken; its ``fillable`` voxels (white matter, and the grey matter of the basal
    forebrain that label sets call cortex) join the region, minus ``exclude`` (thalamus,
    ventricles). Call once per hemisphere.
    """
    region = nuclei.copy()
    for k in np.nonzero(nuclei.any(axis=(0, 1)))[0]:
        hull = convex_hull_image(nuclei[:, :, k])
        region[:, :, k] |= hull & fillable[:, :, k]
    return region & ~exclude | nuclei


def fit_to_brain_mask(regions: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Clear region labels outside ``brain``; brain voxels without a region become 'other'.

    Statistics are reported inside the analysed brain mask, so every mask voxel needs a region and
    no region may extend beyond the mask.
    """
    other = next(r.index for r in REGIONS if r.structure == "other")
    out = np.where(brain, regions, 0).astype(np.uint8)
    out[brain & (out == 0)] = other
    return out


def bounding_box(mask: np.ndarray, margin: int | np.ndarray = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` widened by ``margin`` voxels (per axis), within the array."""
    idx = np.argwhere(mask)
    if not len(idx):
        raise ValueError("empty mask has no bounding box")
    low = np.maximum(idx.min(0) - margin, 0)
    high = np.minimum(idx.max(0) + 1 + np.asarray(margin), mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
