"""Phantom anatomies: bundled FreeSurfer-style label maps and the tissue classes of their labels.

The bundled anatomy (``mednet_pvs/data/anatomy/``) is derived from one real FreeSurfer subject
(``aparc.a2009s+aseg`` + ``norm.mgz``, BSD-2, see ``mednet_pvs/data/NOTICE.md``): cortical and
white-matter parcels are merged into cortex (3/42) and white matter (2/41), and the brain-mask voxels
that FreeSurfer leaves unlabelled (sulcal and cisternal CSF, meninges, vessels) become
``CSF_ExtraCerebral`` (257, dark on ``norm.mgz``) or ``Head_ExtraCerebral`` (258, brighter), the
FreeSurfer ids for these tissues. The anterior commissure (AC) is located by registering
``norm.mgz`` to nilearn's ICBM152 2009a template, where the AC was read off the template.

:func:`build_freesurfer_anatomy` recreates the bundle from the original files (a developer tool);
:func:`load_anatomy` is what the generator uses at run time (no network, no ``../shared``).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from mednet_pvs.errors import MednetPVSError
from mednet_pvs.utils.atomic import save_nifti, write_json

__all__ = [
    "ANATOMY_DIR",
    "CSF_EXTRACEREBRAL",
    "HEAD_EXTRACEREBRAL",
    "TISSUE_CLASSES",
    "Anatomy",
    "available_anatomies",
    "build_freesurfer_anatomy",
    "derive_labels",
    "freesurfer_labels",
    "load_anatomy",
    "tissue_class_of",
]

LOGGER = logging.getLogger(__name__)

ANATOMY_DIR = Path(__file__).resolve().parents[1] / "data" / "anatomy"
_INDEX = "anatomies.json"

#: FreeSurfer ids (FreeSurferColorLUT) of the two extracerebral classes added to the labels.
CSF_EXTRACEREBRAL = 257
HEAD_EXTRACEREBRAL = 258

#: Tissue class of every FreeSurfer label the phantoms use; intensities are drawn per class.
TISSUE_CLASSES: dict[str, tuple[int, ...]] = {
    "white_matter": (2, 41, 77, 85, 251, 252, 253, 254, 255),
    "cerebellum_white_matter": (7, 46),
    "cortex": (3, 42),
    "cerebellum_cortex": (8, 47),
    "hippocampus": (17, 53),
    "amygdala": (18, 54),
    "caudate": (11, 50),
    "putamen": (12, 51),
    "pallidum": (13, 52),
    "accumbens": (26, 58),
    "thalamus": (10, 49),
    "ventral_dc": (28, 60),
    "brainstem": (16,),
    "ventricle": (4, 43, 5, 44, 14, 15, 72),
    "csf": (24, CSF_EXTRACEREBRAL),
    "choroid_plexus": (31, 63),
    "vessel": (30, 62),
    "meninges": (HEAD_EXTRACEREBRAL,),
}
_CLASS_OF_LABEL = {label: name for name, labels in TISSUE_CLASSES.items() for label in labels}
#: Left/right label pairs (for mirrored anatomies).
_LEFT_RIGHT = (
    (2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51),
    (13, 52), (17, 53), (18, 54), (26, 58), (28, 60), (30, 62), (31, 63),
)  # fmt: skip
#: MNI152 2009a coordinate (mm) of the anterior commissure, read off nilearn's ICBM152 2009a T1
#: template (the bright commissure crossing the midline at y ~ 2, z ~ -4).
MNI_ANTERIOR_COMMISSURE_MM = (0.0, 2.0, -4.0)


def tissue_class_of(label: int) -> str:
    """Tissue class name of a FreeSurfer label id (KeyError for labels the phantoms do not use)."""
    return _CLASS_OF_LABEL[int(label)]


@dataclass(frozen=True, eq=False)  # hashed by identity: load_anatomy caches instances
class Anatomy:
    """A FreeSurfer-style label map (RAS+ grid) with the landmarks the generator needs."""

    name: str
    labels: np.ndarray  # uint16 FreeSurfer ids, incl. 257/258 for extracerebral tissue
    affine: np.ndarray
    anterior_commissure_mm: np.ndarray  # world coordinate (mm)
    source: str

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def _index() -> dict[str, dict]:
    path = ANATOMY_DIR / _INDEX
    if not path.exists():
        raise MednetPVSError(f"{path}: the bundled phantom anatomy index is missing (broken installation?)")
    return json.loads(path.read_text(encoding="utf-8"))


def available_anatomies() -> list[str]:
    """Names of the bundled anatomies, plus their left-right mirrored versions (``<name>-mirrored``)."""
    names = list(_index())
    return names + [f"{name}-mirrored" for name in names]


@functools.lru_cache(maxsize=4)
def load_anatomy(name: str) -> Anatomy:
    """Load a bundled anatomy by name; ``<name>-mirrored`` flips it left-right and swaps L/R labels."""
    mirrored = name.endswith("-mirrored")
    base = name.removesuffix("-mirrored")
    index = _index()
    if base not in index:
        raise MednetPVSError(
            f"unknown phantom anatomy {name!r}; available: {', '.join(available_anatomies())}"
        )
    entry = index[base]
    img = nib.load(ANATOMY_DIR / entry["labels"])
    labels = np.asarray(img.dataobj, dtype=np.uint16)
    affine = img.affine.copy()
    ac = np.asarray(entry["anterior_commissure_mm"], dtype=float)
    if mirrored:
        labels, affine, ac = _mirror(labels, affine, ac)
    labels.setflags(write=False)
    return Anatomy(name=name, labels=labels, affine=affine, anterior_commissure_mm=ac, source=entry["source"])


def _mirror(
    labels: np.ndarray, affine: np.ndarray, point: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip the x axis about the grid centre and swap left/right label ids."""
    swap = np.arange(65536, dtype=np.uint16)
    for left, right in _LEFT_RIGHT:
        swap[left], swap[right] = right, left
    flipped = swap[labels[::-1]]
    centre_x = affine[0, 0] * (labels.shape[0] - 1) / 2 + affine[0, 3]
    mirrored_point = point.copy()
    mirrored_point[0] = 2 * centre_x - point[0]
    return np.ascontiguousarray(flipped), affine, mirrored_point


def freesurfer_labels(labels: np.ndarray) -> np.ndarray:
    """The labels a FreeSurfer ``aseg`` would hold: the extracerebral classes set to 0 (unlabelled)."""
    out = labels.copy()
    out[np.isin(out, (CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL))] = 0
    return out


def _merge_parcels(labels: np.ndarray) -> np.ndarray:
    merged = labels.copy()
    cortex_left = ((labels >= 1000) & (labels < 2000)) | ((labels >= 11100) & (labels < 12000))
    cortex_right = ((labels >= 2000) & (labels < 3000)) | ((labels >= 12100) & (labels < 13000))
    merged[cortex_left] = 3
    merged[cortex_right] = 42
    merged[(labels >= 3000) & (labels < 4000) | (labels == 5001)] = 2
    merged[(labels >= 4000) & (labels < 5000) | (labels == 5002)] = 41
    return merged


def derive_labels(
    aparc_aseg: str | Path, norm: str | Path, csf_threshold: float = 60.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phantom labels from a FreeSurfer subject: (uint16 labels, affine, intensity), RAS, cropped.

    Parcels are merged into cortex and white matter; the unlabelled brain-mask voxels of ``norm``
    (WM normalised to 110) become extracerebral CSF below ``csf_threshold`` and other extracerebral
    tissue above it. The grid is cropped to the brain plus 3 voxels.
    """
    labels_img = nib.as_closest_canonical(nib.load(str(aparc_aseg)))
    norm_img = nib.as_closest_canonical(nib.load(str(norm)))
    labels = np.asarray(labels_img.dataobj).astype(np.int32)
    intensity = np.asarray(norm_img.dataobj).astype(np.float32)
    merged = _merge_parcels(labels)
    unknown = set(np.unique(merged)) - set(_CLASS_OF_LABEL) - {0}
    if unknown:
        LOGGER.warning("labels %s have no tissue class; they become white matter", sorted(unknown))
        merged[np.isin(merged, list(unknown))] = 2
    extracerebral = (intensity > 0) & (merged == 0)
    # A 3x3x3 median of the intensity keeps the CSF/meninges split free of single-voxel speckle.
    smooth = ndimage.median_filter(intensity, size=3)
    merged[extracerebral] = np.where(
        smooth[extracerebral] < csf_threshold, CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL
    )
    brain = np.argwhere(merged > 0)
    lo = np.maximum(brain.min(0) - 3, 0)
    hi = np.minimum(brain.max(0) + 4, merged.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    affine = labels_img.affine.copy()
    affine[:3, 3] = labels_img.affine[:3, :3] @ lo + labels_img.affine[:3, 3]
    return merged[crop].astype(np.uint16), affine, intensity[crop]


def build_freesurfer_anatomy(
    aparc_aseg: str | Path,
    norm: str | Path,
    mni_template: str | Path,
    out_dir: str | Path = ANATOMY_DIR,
    name: str = "fs-subject",
    csf_threshold: float = 60.0,
) -> Path:
    """Write a bundled anatomy from a FreeSurfer subject (developer tool, needs antspyx).

    Labels from :func:`derive_labels`; the anterior commissure is the MNI point
    :data:`MNI_ANTERIOR_COMMISSURE_MM` mapped by an affine registration of ``norm`` to
    ``mni_template`` (nilearn's ICBM152 2009a T1). Returns the written label file.
    """
    import ants  # build-time only: affine registration to find the anterior commissure

    labels, affine, intensity = derive_labels(aparc_aseg, norm, csf_threshold)
    fixed = ants.image_read(str(mni_template))
    moving = ants.from_nibabel_nifti(nib.Nifti1Image(intensity, affine))
    reg = ants.registration(fixed=fixed, moving=moving, type_of_transform="Affine", random_seed=1)
    ac_mni = np.array(MNI_ANTERIOR_COMMISSURE_MM)
    # ANTs works in LPS; point mapping runs opposite to image mapping, so the forward transforms
    # take fixed (MNI) points to moving (subject) points.
    lps = ac_mni * np.array([-1, -1, 1])
    pts = ants.apply_transforms_to_points(
        3, pd.DataFrame({"x": [lps[0]], "y": [lps[1]], "z": [lps[2]]}), reg["fwdtransforms"]
    )
    ac_subject = np.array([pts["x"][0], pts["y"][0], pts["z"][0]]) * np.array([-1, -1, 1])
    LOGGER.info("anterior commissure of %s at %s mm", name, np.round(ac_subject, 1))

    out_dir = Path(out_dir)
    label_file = f"{name}_labels.nii.gz"
    out_img = nib.Nifti1Image(labels, affine)
    out_img.set_qform(affine, code=1)
    out_img.set_sform(affine, code=1)
    save_nifti(out_img, out_dir / label_file)
    index_path = out_dir / _INDEX
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    index[name] = {
        "labels": label_file,
        "anterior_commissure_mm": [round(float(v), 2) for v in ac_subject],
        "source": "FreeSurfer aparc.a2009s+aseg and norm.mgz of the niivue demo subject (BSD-2)",
    }
    write_json(index_path, index)
    return out_dir / label_file
