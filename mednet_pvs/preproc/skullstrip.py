"""Offline brain extraction: deepbet, or the input's own brain mask when it is already brain-extracted.

Methods (``method=``):

``"deepbet"``
    The deepbet network (Fisch et al. 2024), whose TorchScript weights ship inside the deepbet
    wheel (MIT), so nothing is downloaded. Trained on T1w; measured on T2w and FLAIR too.
``"nonzero"``
    For images that are already brain-extracted: the largest connected non-zero region, holes
    filled. Refused for images without an exactly-zero background.
``"auto"`` (default)
    ``"nonzero"`` when the image looks already brain-extracted, ``"deepbet"`` otherwise. An image
    looks brain-extracted when (1) at least :data:`MIN_ZERO_BACKGROUND` of its voxels are exactly
    zero, (2) one 26-connected component holds at least :data:`MIN_MAIN_COMPONENT` of the non-zero
    voxels, and (3) deepbet's brain covers at least :data:`MIN_DEEPBET_COVERAGE` of that filled
    component. Check (3) keeps whole-head images with a zeroed background on deepbet (the 1.6 mm
    head of the shared data passes (1) and (2); deepbet's brain covers 35 % of its non-zero
    region, against 89-99.6 % on the brain-extracted scans measured).

Registering the nilearn MNI template with antspyx (affine or SyN) was measured as well and not
kept: 4-20x slower, it cut off the vertex of the whole head, and its affine results changed from
run to run (docs/preprocessing.md, benchmarks/skullstrip_compare.py).

Every mask must have a plausible volume (:data:`BRAIN_VOLUME_RANGE_ML`), else
:class:`SkullStripError` is raised. Masks are computed in the closest-RAS+ voxel order and returned
on the input's exact grid (shape, voxel order and affine).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mednet_pvs.errors import MednetPVSError
from mednet_pvs.preproc.conform import native_image, to_native

__all__ = [
    "BRAIN_VOLUME_RANGE_ML",
    "CONTRASTS",
    "METHODS",
    "MIN_DEEPBET_COVERAGE",
    "MIN_MAIN_COMPONENT",
    "MIN_ZERO_BACKGROUND",
    "BrainExtraction",
    "SkullStripError",
    "deepbet_brain_mask",
    "extract_brain",
    "nonzero_brain_region",
    "skull_strip",
]

LOGGER = logging.getLogger(__name__)

METHODS = ("auto", "deepbet", "nonzero")
CONTRASTS = ("T1w", "T2w", "FLAIR")
#: Brain masks outside this volume (mL) are refused: an empty or runaway extraction.
BRAIN_VOLUME_RANGE_ML = (300.0, 2500.0)
#: Fraction of voxels that must be exactly zero for an image to count as brain-extracted.
MIN_ZERO_BACKGROUND = 0.2
#: Fraction of the non-zero voxels that the largest 26-connected component must hold.
MIN_MAIN_COMPONENT = 0.99
#: Fraction of the filled non-zero region that deepbet's brain must cover to confirm it is a brain.
MIN_DEEPBET_COVERAGE = 0.75
#: deepbet's own probability threshold.
DEEPBET_THRESHOLD = 0.5


class SkullStripError(MednetPVSError):
    """Brain extraction failed or produced an implausible mask; the message says why."""


@dataclass(frozen=True)
class BrainExtraction:
    """A brain mask and what the report needs to know about it."""

    #: uint8 brain mask (1 inside) on the input's exact grid.
    mask: nib.Nifti1Image
    #: Method actually used: "deepbet" or "nonzero".
    method: str
    volume_ml: float
    #: True when ``auto`` found the input already brain-extracted (then ``method`` is "nonzero").
    already_extracted: bool
    #: Fraction of the input's filled non-zero region inside deepbet's brain, when ``auto`` computed
    #: it (the input had an exactly-zero background around one component); a QC figure.
    deepbet_coverage: float | None = None

    def summary(self) -> dict[str, Any]:
        """Plain values for reports and JSON sidecars."""
        return {
            "method": self.method,
            "volume_ml": round(self.volume_ml, 1),
            "already_extracted": self.already_extracted,
            "deepbet_coverage": None if self.deepbet_coverage is None else round(self.deepbet_coverage, 3),
        }


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0


def nonzero_brain_region(data: np.ndarray) -> np.ndarray | None:
    """The filled largest non-zero component if ``data`` looks brain-extracted, else None.

    Looks brain-extracted: at least :data:`MIN_ZERO_BACKGROUND` of the voxels are exactly zero and
    the largest 26-connected non-zero component holds :data:`MIN_MAIN_COMPONENT` of the non-zero
    voxels. The volume is not checked here.
    """
    nonzero = data != 0
    if 1.0 - nonzero.mean() < MIN_ZERO_BACKGROUND:
        return None
    labels, n_components = ndimage.label(nonzero, structure=np.ones((3, 3, 3), bool))
    if n_components == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    largest = int(sizes.argmax())
    if sizes[largest] < MIN_MAIN_COMPONENT * sizes.sum():
        return None
    return ndimage.binary_fill_holes(labels == largest + 1)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def deepbet_brain_mask(
    data: np.ndarray, *, device: str | None = None, threads: int | None = None
) -> np.ndarray:
    """deepbet's brain mask (bool) of a closest-RAS+ voxel array, with deepbet's own post-processing.

    ``device`` defaults to CUDA when available, else CPU; ``threads`` sets torch's CPU threads for
    this call. Raises :class:`SkullStripError` when the weights are missing or nothing is found.
    """
    import torch
    from deepbet import BrainExtraction as DeepbetModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = DeepbetModel(no_gpu=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise SkullStripError(f"deepbet's weights could not be loaded ({exc}); reinstall deepbet") from exc
    model.model.to(device)
    model.bbox_model.to(device)
    with _torch_threads(threads):
        try:
            probability = model.run_model(np.array(data, dtype=np.float32, order="C"))
            mask = model.postprocess(probability > DEEPBET_THRESHOLD)
        except (AssertionError, ValueError) as exc:  # deepbet asserts when it finds no head
            raise SkullStripError(f"deepbet found no brain ({exc or 'empty mask'})") from exc
        finally:
            del model
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()  # leave the GPU memory to the segmentation model
    return np.asarray(mask, dtype=bool)


def _check_volume(mask: np.ndarray, voxel_ml: float, name: str, method: str) -> float:
    """The mask's volume (mL); implausible volumes are errors.

    A 'nonzero' mask is the user's own brain extraction: a small one (a child, a cropped field of
    view, an animal) is only a warning; a large one is still an error, since it is most likely a head.
    """
    volume = float(mask.sum()) * voxel_ml
    low, high = BRAIN_VOLUME_RANGE_ML
    if method == "nonzero" and volume < low:
        LOGGER.warning(
            "%s: the given brain has only %.0f mL (expected %.0f-%.0f mL)", name, volume, low, high
        )
        return volume
    if not low <= volume <= high:
        raise SkullStripError(
            f"{name}: the {method} brain mask has {volume:.0f} mL, "
            f"outside the plausible {low:.0f}-{high:.0f} mL"
            + (
                " (is this a whole-head image? let mednet-pvs strip the skull: drop --skip-skull-strip)"
                if method == "nonzero"
                else ""
            )
        )
    return volume


def extract_brain(
    img: nib.Nifti1Image,
    contrast: str,
    *,
    method: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> BrainExtraction:
    """Brain mask of ``img`` (T1w, T2w or FLAIR) with the method used and its volume.

    ``threads`` sets torch's CPU threads and ``device`` the torch device (default: CUDA when
    available) for deepbet; ``source`` names the image in error messages. Raises
    :class:`SkullStripError` with the reason when no plausible brain mask results.
    """
    name = str(source or img.get_filename() or "input image")
    if method not in METHODS:
        raise SkullStripError(
            f"{name}: unknown skull-strip method {method!r}; choose one of {', '.join(METHODS)}"
        )
    if contrast not in CONTRASTS:
        raise SkullStripError(f"{name}: skull stripping supports {', '.join(CONTRASTS)}, not {contrast!r}")
    if img.ndim != 3:
        raise SkullStripError(f"{name}: skull stripping needs a 3-D image, got shape {img.shape}")

    canonical = nib.as_closest_canonical(img)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    if not np.isfinite(data).all() or data.max() == data.min():
        raise SkullStripError(
            f"{name}: the image is constant or has non-finite values; there is no brain to find"
        )
    voxel_ml = _voxel_ml(canonical.affine)

    already_extracted, coverage = False, None
    if method == "nonzero":
        mask = nonzero_brain_region(data)
        if mask is None:
            raise SkullStripError(
                f"{name}: does not look brain-extracted (needs >= {MIN_ZERO_BACKGROUND:.0%} exactly-zero "
                "background around one connected region); let mednet-pvs strip the skull: "
                "drop --skip-skull-strip"
            )
    else:
        mask = deepbet_brain_mask(data, device=device, threads=threads)
        region = nonzero_brain_region(data) if method == "auto" else None
        if region is not None:
            coverage = float((mask & region).sum()) / float(region.sum())
            already_extracted = coverage >= MIN_DEEPBET_COVERAGE
            if already_extracted:
                mask = region
            elif region.sum() * voxel_ml <= BRAIN_VOLUME_RANGE_ML[1]:
                LOGGER.warning(
                    "%s: looks brain-extracted, but deepbet's brain covers only %.0f%% of it; using "
                    "deepbet's mask (method='nonzero' keeps the image's own brain)",
                    name,
                    100 * coverage,
                )
        method = "nonzero" if already_extracted else "deepbet"
    volume = _check_volume(mask, voxel_ml, name, method)
    LOGGER.info("%s (%s): brain mask by %s, %.0f mL", name, contrast, method, volume)
    native = to_native(mask.astype(np.uint8), img.affine)
    return BrainExtraction(
        mask=native_image(native, img, np.uint8),
        method=method,
        volume_ml=volume,
        already_extracted=already_extracted,
        deepbet_coverage=coverage,
    )


def skull_strip(
    img: nib.Nifti1Image,
    contrast: str,
    *,
    method: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    source: str | os.PathLike[str] | None = None,
) -> nib.Nifti1Image:
    """uint8 brain mask (1 inside) of ``img`` on its exact grid; see :func:`extract_brain`."""
    return extract_brain(img, contrast, method=method, threads=threads, device=device, source=source).mask
