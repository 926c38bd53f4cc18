"""nnU-Net v1-equivalent preprocessing and export resampling.

Reproduces ``GenericPreprocessor.preprocess_test_case`` and ``save_segmentation_nifti_from_softmax``
of nnU-Net v1 (Isensee et al. 2021) so that imported models see exactly the inputs they were
trained on: crop to the non-zero region, resample to the model spacing (cubic, with the
"separate z" rule for anisotropic data), z-score normalisation inside or outside the mask, and the
linear resampling of probabilities back to the input spacing. These rules are hand-written because
no maintained library exposes them apart from nnU-Net itself (which pulls in its training stack).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_fill_holes
from skimage.transform import resize

__all__ = [
    "SEPARATE_Z_ANISOTROPY_THRESHOLD",
    "CroppedCase",
    "anisotropic_axis",
    "crop_to_nonzero",
    "normalize_zscore",
    "preprocess_case",
    "resample_to_shape",
    "target_shape",
]

#: nnU-Net v1's RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD.
SEPARATE_Z_ANISOTROPY_THRESHOLD = 3.0


@dataclass
class CroppedCase:
    """A case after preprocessing, with what is needed to map predictions back."""

    data: np.ndarray  # (C, *resampled_shape) float32, normalised
    mask: np.ndarray  # (*resampled_shape) bool, the resampled non-zero (brain) mask
    bbox: tuple[slice, slice, slice]  # crop box in the (network-ordered) input array
    cropped_shape: tuple[int, int, int]
    original_spacing: np.ndarray
    target_spacing: np.ndarray


def crop_to_nonzero(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice, slice]]:
    """Crop (C, X, Y, Z) data to the bounding box of its hole-filled non-zero mask.

    Returns the cropped data, the cropped non-zero mask (bool) and the box.
    """
    nonzero = binary_fill_holes(np.any(data != 0, axis=0))
    coords = np.nonzero(nonzero)
    if coords[0].size == 0:
        bbox = tuple(slice(0, s) for s in data.shape[1:])
    else:
        bbox = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    return data[(slice(None), *bbox)], nonzero[bbox], bbox  # type: ignore[return-value]


def anisotropic_axis(original: np.ndarray, target: np.ndarray) -> int | None:
    """The low-resolution axis to resample separately, or None (nnU-Net's rule)."""
    for spacing in (original, target):
        if spacing.max() / spacing.min() > SEPARATE_Z_ANISOTROPY_THRESHOLD:
            axes = np.where(spacing.max() / spacing == 1)[0]
            return int(axes[0]) if len(axes) == 1 else None
    return None


def target_shape(shape: tuple[int, ...], spacing: np.ndarray, target_spacing: np.ndarray) -> np.ndarray:
    """nnU-Net's resampled shape: round(spacing / target * shape)."""
    return np.round(
        (np.asarray(spacing, float) / np.asarray(target_spacing, float)) * np.asarray(shape)
    ).astype(int)


def _resize_mask_labels(mask: np.ndarray, new_shape: np.ndarray, order: int) -> np.ndarray:
    """batchgenerators' ``resize_segmentation``: per-label linear resize, >= 0.5, later label wins."""
    out = np.zeros(tuple(new_shape), dtype=mask.dtype)
    for label in np.unique(mask):
        resized = resize(
            (mask == label).astype(float), tuple(new_shape), order, mode="edge", anti_aliasing=False
        )
        out[resized >= 0.5] = label
    return out


def _nearest_along_axis(data: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Nearest-neighbour resampling of one axis to ``size`` samples.

    The samples of nnU-Net's order-0 ``map_coordinates`` over a full coordinate grid (pixel
    centres aligned, edges clamped), taken by index: hand-written because that grid and its scaled
    copy hold six float64 numbers per output voxel (0.8 GB for a clinical 2 mm scan read at 0.6 mm).
    """
    length = data.shape[axis]
    positions = (length / size) * (np.arange(size) + 0.5) - 0.5
    index = np.clip(np.floor(positions + 0.5), 0, length - 1).astype(np.intp)
    return np.take(data, index, axis=axis)


def resample_to_shape(
    data: np.ndarray,
    new_shape: np.ndarray,
    *,
    is_labels: bool,
    order: int,
    separate_z_axis: int | None,
) -> np.ndarray:
    """Resample (C, X, Y, Z) data to ``new_shape`` as nnU-Net v1's ``resample_data_or_seg`` does.

    With ``separate_z_axis`` the slices across that axis are resized in plane (order ``order``),
    then the axis itself is resampled by nearest neighbour (nnU-Net's default ``order_z=0``).
    """
    new_shape = np.asarray(new_shape, int)
    shape = np.array(data.shape[1:])
    if np.all(shape == new_shape):
        return data
    dtype = data.dtype
    data = data.astype(float)

    def resize_fn(array: np.ndarray, shape_out: np.ndarray) -> np.ndarray:
        if is_labels:
            return _resize_mask_labels(array, shape_out, order)
        return resize(array, tuple(shape_out), order, mode="edge", anti_aliasing=False)

    channels = []
    for channel in data:
        if separate_z_axis is None:
            channels.append(resize_fn(channel, new_shape))
            continue
        axis = separate_z_axis
        in_plane = np.delete(new_shape, axis)
        stacked = np.stack(
            [resize_fn(np.take(channel, i, axis=axis), in_plane) for i in range(shape[axis])], axis
        )
        channels.append(_nearest_along_axis(stacked, axis, int(new_shape[axis])))
    return np.stack(channels).astype(dtype)


def normalize_zscore(data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """nnU-Net's 'nonCT' z-score per channel, inside ``mask`` (zero outside) or over everything."""
    data = data.copy()
    for c in range(data.shape[0]):
        if mask is not None:
            values = data[c][mask]
            data[c][mask] = (values - values.mean()) / (values.std() + 1e-8)
            data[c][~mask] = 0
        else:
            data[c] = (data[c] - data[c].mean()) / (data[c].std() + 1e-8)
    return data


def preprocess_case(
    data: np.ndarray,
    spacing: np.ndarray,
    target_spacing: np.ndarray,
    use_mask_for_norm: bool,
    *,
    normalize_first: bool = False,
) -> CroppedCase:
    """Crop, resample and normalise (C, X, Y, Z) float32 data given in network axis order.

    nnU-Net v1 normalises the resampled crop; v2 normalises first (``normalize_first``).
    """
    data = np.where(np.isnan(data), np.float32(0), data).astype(np.float32)
    spacing = np.asarray(spacing, float)
    target_spacing = np.asarray(target_spacing, float)
    cropped, nonzero, bbox = crop_to_nonzero(data)
    if normalize_first:
        cropped = normalize_zscore(cropped, nonzero if use_mask_for_norm else None)
    seg = np.where(nonzero, 0, -1)[None].astype(np.int64)
    new_shape = target_shape(cropped.shape[1:], spacing, target_spacing)
    axis = anisotropic_axis(spacing, target_spacing)
    resampled = resample_to_shape(cropped, new_shape, is_labels=False, order=3, separate_z_axis=axis)
    seg = resample_to_shape(seg, new_shape, is_labels=True, order=1, separate_z_axis=axis)
    mask = seg[-1] >= 0
    if not normalize_first:
        resampled = normalize_zscore(resampled, mask if use_mask_for_norm else None)
    return CroppedCase(resampled, mask, bbox, tuple(cropped.shape[1:]), spacing, target_spacing)


def export_probabilities(probabilities: np.ndarray, case: CroppedCase) -> np.ndarray:
    """Resample (C, ...) probabilities back to the cropped box at the input spacing (linear, as nnU-Net)."""
    axis = anisotropic_axis(case.original_spacing, case.target_spacing)
    return resample_to_shape(
        probabilities, np.array(case.cropped_shape), is_labels=False, order=1, separate_z_axis=axis
    )
