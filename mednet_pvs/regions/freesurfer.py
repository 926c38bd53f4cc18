"""Map FreeSurfer aseg / aparc+aseg / SynthSeg labels to the PVS region set.

Label ids follow FreeSurferColorLUT.txt; SynthSeg uses the same ids for the structures it labels.
Cortical parcels (1000-2999, 11100-12999) and white-matter parcels (3000-4999, 13000-14999,
5001/5002) are folded into cortex and white matter. The brainstem label is split: its top
``MIDBRAIN_HEIGHT_MM`` is the midbrain (FreeSurfer's aseg has no separate midbrain label).

Label files are found in a FreeSurfer ``SUBJECTS_DIR`` or a BIDS derivatives folder
(:func:`find_label_file`), read and checked (:func:`read_label_file`), and mapped onto the grid of
the image being analysed by scanner coordinates (:func:`regions_from_labels_file`): FreeSurfer's
conformed space keeps the scanner coordinates of the scan it was run on.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from nibabel.processing import resample_from_to

from mednet_pvs.errors import InputImageError
from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.regions.rules import (
    assign_hemisphere,
    basal_ganglia_with_internal_capsule,
    bounding_box,
    centrum_semiovale,
    fit_to_brain_mask,
    world_coordinate,
)

__all__ = [
    "FREESURFER_FILES",
    "MIDBRAIN_HEIGHT_MM",
    "find_label_file",
    "freesurfer_tissue_masks",
    "label_regions_qc",
    "pvs_regions_from_freesurfer",
    "pvs_regions_on_grid",
    "read_label_file",
    "regions_from_labels_file",
]

LOGGER = logging.getLogger(__name__)

_RAS = axcodes2ornt("RAS")
#: Height of the midbrain above the pontomesencephalic junction (~2 cm in adults).
MIDBRAIN_HEIGHT_MM = 20.0

_LEFT = {
    "white_matter": (2, 78, 5001),
    "cortex": (3,),
    "lateral_ventricle": (4,),
    "caudate": (11,),
    "putamen": (12,),
    "pallidum": (13,),
    "accumbens": (26,),
    "vessel": (30,),
    "thalamus": (9, 10),
    "hippocampus": (17,),
}
_RIGHT = {
    "white_matter": (41, 79, 5002),
    "cortex": (42,),
    "lateral_ventricle": (43,),
    "caudate": (50,),
    "putamen": (51,),
    "pallidum": (52,),
    "accumbens": (58,),
    "vessel": (62,),
    "thalamus": (48, 49),
    "hippocampus": (53,),
}
#: Id ranges (inclusive) of white-matter parcels (wmparc) and cortical parcels per hemisphere.
_WM_PARCELS = {"left": ((3000, 3999), (13000, 13999)), "right": ((4000, 4999), (14000, 14999))}
_CORTEX_PARCELS = {"left": ((1000, 1999), (11100, 11999)), "right": ((2000, 2999), (12100, 12999))}
_UNLATERALISED_WM = (77, 251, 252, 253, 254, 255)
_BRAINSTEM = (16, 173, 174, 175)
_MIDBRAIN = (173,)
#: Id ranges (inclusive) that FreeSurfer and SynthSeg label volumes use: the aseg block, cortical
#: parcels (Desikan, DKT, a2005s, a2009s) and white-matter parcels.
_KNOWN_RANGES = ((0, 255), (1000, 2999), (3000, 4999), (5001, 5002), (11100, 12999), (13100, 14999))
#: Largest share of labelled voxels that may carry ids outside ``_KNOWN_RANGES``.
_MAX_UNKNOWN_FRACTION = 0.01
#: Smallest share of labelled voxels that white matter must take (adults: ~35-40 %).
_MIN_WM_FRACTION = 0.15

#: Labels whose brain overlaps the analysed brain mask less than this (Dice) probably belong to
#: another scan or session, or the mask failed.
QC_MIN_LABEL_DICE = 0.8

#: Label files searched in a FreeSurfer subject's ``mri`` folder, best first.
FREESURFER_FILES = ("aparc+aseg.mgz", "aseg.mgz", "aparc.DKTatlas+aseg.mgz", "aparc.a2009s+aseg.mgz")
#: File-name patterns searched in a BIDS derivatives ``anat`` folder (sMRIPrep/fMRIPrep write
#: FreeSurfer's labels as ``desc-aparcaseg``/``desc-aseg`` dseg files; SynthSeg output keeps its
#: ``_synthseg`` suffix), best first.
_DERIVATIVE_PATTERNS = ("*desc-aparcaseg_dseg.nii*", "*desc-aseg_dseg.nii*", "*synthseg*.nii*")


def _in_ranges(labels: np.ndarray, ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    inside = np.zeros(labels.shape, bool)
    for low, high in ranges:
        inside |= (labels >= low) & (labels <= high)
    return inside


def freesurfer_tissue_masks(labels: np.ndarray, side: str) -> dict[str, np.ndarray]:
    """Boolean masks of the structures of one hemisphere (``side`` 'left' or 'right')."""
    table = _LEFT if side == "left" else _RIGHT
    masks = {name: np.isin(labels, ids) for name, ids in table.items()}
    masks["white_matter"] |= _in_ranges(labels, _WM_PARCELS[side])
    masks["cortex"] |= _in_ranges(labels, _CORTEX_PARCELS[side])
    return masks


def pvs_regions_from_freesurfer(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """PVS region labels (uint8, see :mod:`mednet_pvs.regions.lut`) from FreeSurfer labels.

    ``labels`` must be on a conformed (closest RAS+) grid with ``affine``. FreeSurfer's 'vessel'
    labels sit among the lenticulostriate vessels of the basal ganglia and are counted there. Within
    the per-slice hull of the basal ganglia, voxels labelled cortex (the anterior perforated
    substance and basal forebrain, where lenticulostriate arteries enter) join the basal ganglia too.
    """
    labels = np.asarray(labels)
    index = {(r.structure, r.hemisphere): r.index for r in REGIONS}
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[labels > 0] = index[("other", "bilateral")]

    sides = {side: freesurfer_tissue_masks(labels, side) for side in ("left", "right")}
    left_any, right_any = (np.logical_or.reduce(list(sides[side].values())) for side in ("left", "right"))
    extra_left, extra_right = assign_hemisphere(np.isin(labels, _UNLATERALISED_WM), left_any, right_any)
    sides["left"]["white_matter"] |= extra_left
    sides["right"]["white_matter"] |= extra_right

    ventricles = sides["left"]["lateral_ventricle"] | sides["right"]["lateral_ventricle"]
    for side, masks in sides.items():
        wm = masks["white_matter"]
        nuclei = (
            masks["caudate"] | masks["putamen"] | masks["pallidum"] | masks["accumbens"] | masks["vessel"]
        )
        exclude = masks["thalamus"] | ventricles
        bg = basal_ganglia_with_internal_capsule(nuclei, wm | masks["cortex"], exclude)
        cso = centrum_semiovale(wm & ~bg, ventricles, affine)
        out[wm & ~bg & ~cso] = index[("deep_white_matter", side)]
        out[cso] = index[("centrum_semiovale", side)]
        out[bg] = index[("basal_ganglia", side)]
        out[masks["thalamus"]] = index[("thalamus", side)]
        out[masks["hippocampus"]] = index[("hippocampus", side)]

    out[_midbrain(labels, affine)] = index[("midbrain", "bilateral")]
    return out


def _midbrain(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    explicit = np.isin(labels, _MIDBRAIN)
    if explicit.any():
        return explicit
    brainstem = np.isin(labels, _BRAINSTEM)
    if not brainstem.any():
        return brainstem
    z = world_coordinate(labels.shape, affine, 2)
    top = float(z[brainstem].max())
    return brainstem & (z > top - MIDBRAIN_HEIGHT_MM)


def pvs_regions_on_grid(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """:func:`pvs_regions_from_freesurfer` for labels on any grid, returned in that grid's voxel order.

    The rules need a closest-RAS+ voxel order (axial slices ``[:, :, k]``), so the labels are
    reoriented (no resampling), cropped to their bounding box for speed, mapped and put back.
    """
    labels = np.asarray(labels)
    native = io_orientation(affine)
    ras = nib.Nifti1Image(labels, affine).as_reoriented(ornt_transform(native, _RAS))
    ras_labels = np.asarray(ras.dataobj)
    regions = np.zeros(ras_labels.shape, np.uint8)
    if ras_labels.any():
        box = bounding_box(ras_labels > 0, 1)
        cropped = ras.slicer[box]
        regions[box] = pvs_regions_from_freesurfer(np.asarray(cropped.dataobj), cropped.affine)
    return apply_orientation(regions, ornt_transform(_RAS, native))


def find_label_file(source: str | Path, participant_label: str, session_label: str | None = None) -> Path:
    """The FreeSurfer/SynthSeg label file of one participant (and session) under ``source``.

    ``source`` may be the label file itself, a FreeSurfer ``SUBJECTS_DIR`` (searched:
    ``sub-<label>[_ses-<session>]/mri/`` for :data:`FREESURFER_FILES`, then the same without the
    session) or a BIDS derivatives folder (searched: ``sub-<label>/[ses-<session>/]anat/`` for
    ``*desc-aparcaseg_dseg.nii*``, ``*desc-aseg_dseg.nii*``, then ``*synthseg*.nii*``). The first
    pattern that matches wins; two files matching the same pattern are an error naming both.
    """
    source = Path(source)
    participant = participant_label.removeprefix("sub-")
    session = session_label.removeprefix("ses-") if session_label else None
    if source.is_file():
        return source
    if not source.is_dir():
        raise InputImageError(source, "neither a label file nor a folder (does it exist?)")

    subject_dirs = (
        [f"sub-{participant}_ses-{session}", f"sub-{participant}"] if session else [f"sub-{participant}"]
    )
    for name in subject_dirs:
        for filename in FREESURFER_FILES:
            candidate = source / name / "mri" / filename
            if candidate.is_file():
                return candidate

    anat = source / f"sub-{participant}" / (f"ses-{session}" if session else "") / "anat"
    entities = f"sub-{participant}" + (f"_ses-{session}" if session else "")
    for pattern in _DERIVATIVE_PATTERNS:
        matches = sorted(p for p in anat.glob(f"{entities}_{pattern}") if "space-" not in p.name)
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise InputImageError(
                anat, f"several label files match {pattern!r} ({names}); pass one with --regions PATH"
            )
        if matches:
            return matches[0]
    searched = [str(source / d / "mri" / f) for d in subject_dirs for f in FREESURFER_FILES[:2]]
    searched += [str(anat / f"{entities}_{p}") for p in _DERIVATIVE_PATTERNS]
    raise InputImageError(
        source, f"no FreeSurfer/SynthSeg labels for sub-{participant}; looked for {', '.join(searched)}"
    )


def read_label_file(path: str | Path) -> nib.Nifti1Image:
    """Read a FreeSurfer/SynthSeg label volume (mgz or NIfTI) as an int32 image, checking it is one.

    Raises :class:`InputImageError` naming the file for unreadable or non-3-D files, non-integer
    values, and label sets that are not FreeSurfer's (unknown ids, missing white matter, ventricles
    or basal ganglia, or left/right labels on the wrong side).
    """
    path = Path(path)
    if not path.is_file():
        raise InputImageError(path, "label file does not exist")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise InputImageError(path, f"is not a readable NIfTI/MGH label file ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputImageError(path, f"is not a 3-D label volume (shape {data.shape})")
    integral = np.issubdtype(data.dtype, np.integer) or (
        np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))
    )
    if not integral:
        raise InputImageError(path, "holds non-integer values; a label volume (aseg, SynthSeg) is needed")
    labels = data.astype(np.int32)
    _check_freesurfer_labels(labels, img.affine, path)
    return nib.Nifti1Image(labels, img.affine)


def _check_freesurfer_labels(labels: np.ndarray, affine: np.ndarray, path: Path) -> None:
    labelled = labels > 0
    n_labelled = int(labelled.sum())
    if n_labelled == 0:
        raise InputImageError(path, "contains no labels (all zero)")
    unknown = labelled & ~_in_ranges(labels, _KNOWN_RANGES)
    if unknown.sum() > _MAX_UNKNOWN_FRACTION * n_labelled:
        ids = ", ".join(str(i) for i in np.unique(labels[unknown])[:8])
        raise InputImageError(
            path, f"does not hold FreeSurfer/SynthSeg label ids (ids {ids}... are not in FreeSurferColorLUT)"
        )
    sides = {side: freesurfer_tissue_masks(labels, side) for side in ("left", "right")}
    required = ("white_matter", "lateral_ventricle", "putamen")
    missing = [f"{side} {name}" for side in sides for name in required if not sides[side][name].any()]
    if missing:
        raise InputImageError(
            path, f"lacks {', '.join(missing)}; an aseg, aparc+aseg or SynthSeg volume is needed"
        )
    wm_fraction = (sides["left"]["white_matter"].sum() + sides["right"]["white_matter"].sum()) / n_labelled
    if wm_fraction < _MIN_WM_FRACTION:
        raise InputImageError(
            path,
            f"white matter (ids 2/41) covers only {100 * wm_fraction:.1f}% of the labels; this does not look "
            "like a FreeSurfer/SynthSeg volume",
        )
    x = world_coordinate(labels.shape, affine, 0)
    left_x = float(x[sides["left"]["white_matter"]].mean())
    right_x = float(x[sides["right"]["white_matter"]].mean())
    if left_x >= right_x:
        raise InputImageError(
            path,
            f"left white matter (id 2, mean x {left_x:.1f} mm) is not left of the right (id 41, "
            f"{right_x:.1f} mm); the labels are not FreeSurfer's or the affine is flipped",
        )


def regions_from_labels_file(
    path: str | Path,
    reference: nib.spatialimages.SpatialImage,
    brain_mask: nib.spatialimages.SpatialImage | None = None,
) -> nib.Nifti1Image:
    """PVS regions from a FreeSurfer/SynthSeg label file, on the grid of ``reference`` (uint8).

    The labels are mapped on their own grid (:func:`pvs_regions_on_grid`) and then resampled to
    ``reference`` by scanner coordinates with nearest neighbour. With ``brain_mask`` (on the
    reference grid), regions outside it are cleared and its unlabelled voxels become 'other'.
    """
    labels_img = read_label_file(path)
    regions = pvs_regions_on_grid(np.asarray(labels_img.dataobj), labels_img.affine)
    regions_img = nib.Nifti1Image(regions, labels_img.affine)
    resampled = resample_from_to(regions_img, (reference.shape[:3], reference.affine), order=0, cval=0)
    out = np.asarray(resampled.dataobj).astype(np.uint8)
    if brain_mask is not None:
        brain = np.asarray(brain_mask.dataobj) > 0
        qc = label_regions_qc(out, brain)
        if not qc["passed"]:
            LOGGER.warning(
                "%s: the labels overlap the brain mask poorly (Dice %.2f); are they from this scan?",
                path,
                qc["brain_mask_dice"],
            )
        out = fit_to_brain_mask(out, brain)
    if not out.any():
        raise InputImageError(
            path, "labels do not overlap the image being analysed (different scanner space?)"
        )
    img = nib.Nifti1Image(out, reference.affine)
    img.set_data_dtype(np.uint8)
    img.header.set_xyzt_units("mm", "sec")
    return img


def label_regions_qc(regions: np.ndarray, brain: np.ndarray) -> dict[str, float | bool]:
    """Agreement of label-file regions (before :func:`fit_to_brain_mask`) with the analysed brain mask.

    ``brain_mask_dice``: Dice of the labelled voxels with the mask (low when the labels belong to
    another scan or session, or the mask failed); ``label_coverage``: share of mask voxels that
    carry a label; ``passed``: Dice >= ``QC_MIN_LABEL_DICE``.
    """
    labelled = np.asarray(regions) > 0
    brain = np.asarray(brain, dtype=bool)
    total = int(labelled.sum()) + int(brain.sum())
    dice = 2.0 * int((labelled & brain).sum()) / total if total else 0.0
    coverage = float(labelled[brain].mean()) if brain.any() else 0.0
    return {
        "brain_mask_dice": round(dice, 4),
        "label_coverage": round(coverage, 4),
        "passed": bool(dice >= QC_MIN_LABEL_DICE),
    }
