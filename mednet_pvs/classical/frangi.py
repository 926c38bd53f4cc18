"""Multiscale Frangi vesselness for PVS: the weight-free baseline and fallback (``--method frangi``).

Follows the published approach of Ballerini et al. (2018, Sci Rep 8:2132): the Frangi et al. (1998)
multiscale Hessian filter with scales matched to PVS widths, bright ridges on T2w and dark ridges on
T1w/FLAIR, restricted to the brain away from its border, then thresholded with a minimum cluster
size (done by the statistics step). Sepehrband et al. (2019, Sci Rep 9:12351) use the same filter
family. The filter itself is scikit-image's; this module adds the intensity normalisation, the
handling of anisotropic voxels and the brain restriction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import frangi
from skimage.transform import resize

__all__ = ["FrangiParameters", "frangi_vesselness"]

LOGGER = logging.getLogger(__name__)

#: Contrasts in which PVS are brighter than the surrounding tissue.
BRIGHT_PVS_CONTRASTS = ("T2w",)
#: Voxel sizes differing by more than this ratio are resampled to isotropic before filtering.
ANISOTROPY_TOLERANCE = 1.2


@dataclass(frozen=True)
class FrangiParameters:
    """Filter parameters; defaults follow Ballerini et al. (2018) with scales in mm."""

    sigmas_mm: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5)
    alpha: float = 0.5
    beta: float = 0.5
    gamma: float = 0.15
    border_mm: float = 3.0
    threshold: float = 0.15


def _normalise(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Contrast relative to the brain's median intensity; the background is set to that median.

    Relative contrast makes ``gamma`` comparable across scanners and contrasts; filling the
    background avoids the brain border acting as a huge edge for the Hessian.
    """
    values = image[brain]
    median = float(np.median(values))
    scale = abs(median) or float(values.std()) or 1.0
    normalised = (image - median) / scale
    normalised[~brain] = 0.0
    return normalised.astype(np.float32)


def frangi_vesselness(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    brain_mask: np.ndarray,
    contrast: str,
    parameters: FrangiParameters | None = None,
    restrict_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Vesselness in [0, 1) on the image grid (0 outside the eroded brain / ``restrict_mask``).

    ``restrict_mask`` (optional) limits the response to the regions where PVS are rated (e.g. white
    matter and deep grey matter), excluding sulcal CSF and the ventricles.
    """
    parameters = parameters or FrangiParameters()
    brain = np.asarray(brain_mask, bool)
    out = np.zeros(image.shape, dtype=np.float32)
    if not brain.any():
        return out
    spacing_arr = np.asarray(spacing, float)
    bbox = ndimage.find_objects(brain.astype(np.uint8))[0]
    crop = _normalise(np.asarray(image, np.float32)[bbox], brain[bbox])

    isotropic = spacing_arr.max() / spacing_arr.min() <= ANISOTROPY_TOLERANCE
    voxel = float(spacing_arr.mean()) if isotropic else float(spacing_arr.min())
    work = crop
    if not isotropic:
        shape = np.maximum(np.round(np.array(crop.shape) * spacing_arr / voxel).astype(int), 1)
        work = resize(crop, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    vesselness = frangi(
        work,
        sigmas=[s / voxel for s in parameters.sigmas_mm],
        alpha=parameters.alpha,
        beta=parameters.beta,
        gamma=parameters.gamma,
        black_ridges=contrast not in BRIGHT_PVS_CONTRASTS,
        mode="reflect",
    ).astype(np.float32)
    if not isotropic:
        vesselness = resize(
            vesselness, crop.shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True
        )

    keep = brain[bbox]
    if parameters.border_mm > 0:
        # pad so that the crop's faces count as outside the brain
        distance = ndimage.distance_transform_edt(np.pad(keep, 1), sampling=spacing_arr)[1:-1, 1:-1, 1:-1]
        keep = distance > parameters.border_mm
    if restrict_mask is not None:
        keep &= np.asarray(restrict_mask, bool)[bbox]
    out[bbox] = np.where(keep, np.clip(vesselness, 0.0, 1.0), 0.0)
    return out
