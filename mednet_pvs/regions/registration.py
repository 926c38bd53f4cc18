"""Register the bundled MNI atlas to a subject with ANTs (antspyx) and bring its regions to the subject grid.

The template (moving) is registered to the subject's brain (fixed): rigid, affine, then SyN
(Avants et al. 2008), all with Mattes mutual information so that T1w and T2w subjects share one
code path. The default settings are those of ``antsRegistrationSyNQuick.sh`` (no iterations at full
resolution); see docs/regions.md for measured run times. Transforms are cached in a work folder,
keyed by a hash of the inputs, so a rerun with the same folder and inputs reuses them.

Determinism: antsRegistration gets a fixed ``--random-seed`` (its metric sampling is random); with
one ITK thread the transforms are bit-identical across runs. With more threads, the order of
floating-point sums differs between runs and results can differ slightly. ITK reads its thread count
(``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``) once, when ``ants`` is first imported, so ``threads`` only
takes effect if this module is the first to import it in the process.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import nibabel as nib
import numpy as np

from mednet_pvs.errors import InputImageError
from mednet_pvs.regions.atlas import RegionAtlas, load_region_atlas
from mednet_pvs.regions.freesurfer import pvs_regions_on_grid
from mednet_pvs.regions.rules import bounding_box, fit_to_brain_mask
from mednet_pvs.utils.atomic import write_json

__all__ = [
    "AFFINE",
    "FINE",
    "QUICK",
    "AtlasRegistration",
    "RegistrationSettings",
    "Transforms",
    "antsregistration_arguments",
    "import_ants",
    "register_atlas",
    "register_images",
    "transform_points",
    "warp_to_subject",
]

LOGGER = logging.getLogger(__name__)

#: Part of the cache key: bump when a change here alters the transforms for the same inputs.
_CACHE_VERSION = 1
_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
_MANIFEST = "registration.json"
#: Margin (mm) kept around the subject's brain when the registration target is cropped.
_CROP_MARGIN_MM = 12.0
#: Registration grids finer than this (mm) are resampled to it: SyN on sub-millimetre grids costs
#: time and memory without improving a region atlas whose own resolution is 1 mm.
_MIN_SPACING_MM = 1.0
_CONTRASTS = ("T1w", "T2w")
#: QC thresholds: Dice of the warped atlas brain mask with the subject's brain mask, and the
#: white-matter/grey-matter effect size (Cohen's d of subject intensities in the warped tissue
#: classes; positive on T1w, negative on T2w) below which a registration is flagged.
QC_MIN_DICE = 0.85
QC_MIN_EFFECT_SIZE = 0.5


@dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of one antsRegistration run: rigid and affine, then SyN unless ``syn_iterations`` is empty.

    Each tuple has one entry per resolution level (shrink factor, smoothing sigma in voxels).
    """

    linear_iterations: tuple[int, ...] = (1000, 500, 250, 0)
    syn_iterations: tuple[int, ...] = (100, 70, 50, 0)
    shrink_factors: tuple[int, ...] = (8, 4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (3.0, 2.0, 1.0, 0.0)
    #: "MI" (Mattes mutual information, any pair of contrasts) or "CC" (neighbourhood
    #: cross-correlation, radius 2: same contrast only, sharper and slower).
    syn_metric: str = "MI"
    seed: int = 20180401

    def __post_init__(self) -> None:
        levels = len(self.shrink_factors)
        if len(self.smoothing_sigmas) != levels or len(self.linear_iterations) != levels:
            raise ValueError(
                "shrink_factors, smoothing_sigmas and linear_iterations need one entry per level"
            )
        if self.syn_iterations and len(self.syn_iterations) != levels:
            raise ValueError("syn_iterations needs one entry per level (or none for affine only)")
        if self.syn_metric not in ("MI", "CC"):
            raise ValueError(f"syn_metric must be 'MI' or 'CC', not {self.syn_metric!r}")


#: antsRegistrationSyNQuick.sh: what the pipeline uses.
QUICK = RegistrationSettings()
#: Rigid + affine only: fast, for tests and as a fallback.
AFFINE = RegistrationSettings(syn_iterations=())
#: Cross-correlation SyN with a few iterations at full resolution (``antsRegistrationSyN.sh`` runs
#: 20 there, which takes hours on a shared 2-core machine): for the same-contrast template-to-template
#: registrations of the atlas builder.
FINE = RegistrationSettings(
    linear_iterations=(1000, 500, 250, 100), syn_iterations=(100, 70, 50, 10), syn_metric="CC"
)


@dataclass(frozen=True)
class Transforms:
    """Transform files of one registration (moving = template, fixed = subject)."""

    affine: Path
    warp: Path | None = None
    inverse_warp: Path | None = None

    @property
    def to_fixed(self) -> list[str]:
        """Transform list that resamples a moving-space image onto the fixed grid."""
        return [str(p) for p in (self.warp, self.affine) if p is not None]

    @property
    def to_moving(self) -> tuple[list[str], list[bool]]:
        """Transform list and ``whichtoinvert`` that resample a fixed-space image onto the moving grid.

        Points go the opposite way to images in ANTs, so this list also maps moving-space points
        into fixed space.
        """
        files = [str(self.affine)] + ([str(self.inverse_warp)] if self.inverse_warp else [])
        return files, [True] + [False] * (len(files) - 1)

    def files(self) -> list[Path]:
        """The transform files that exist for this registration type."""
        return [p for p in (self.affine, self.warp, self.inverse_warp) if p is not None]


@dataclass(frozen=True)
class AtlasRegistration:
    """The atlas registered to one subject; every image lies on the subject's grid."""

    #: PVS region labels (uint8, see :mod:`mednet_pvs.regions.lut`), zero outside the brain mask.
    regions: nib.Nifti1Image
    #: The MNI template resampled onto the subject grid (float32), for registration QC figures.
    template: nib.Nifti1Image
    transforms: Transforms
    #: Registration quality figures, see :func:`register_atlas`.
    qc: dict[str, Any]
    #: Atlas landmarks in subject scanner coordinates (RAS mm).
    landmarks: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def import_ants(threads: int | None = None) -> ModuleType:
    """Import antspyx, first setting ITK's thread count to ``threads`` when that can still take effect."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be a positive number, not {threads}")
        if "ants" in sys.modules and os.environ.get(_THREADS_ENV) != str(threads):
            LOGGER.warning(
                "ANTs was imported before with %s=%s; ITK keeps that thread count, not %d. Set the "
                "variable before the process imports ants.",
                _THREADS_ENV,
                os.environ.get(_THREADS_ENV, "<unset: all cores>"),
                threads,
            )
        else:
            os.environ[_THREADS_ENV] = str(threads)
    import ants

    return ants


def antsregistration_arguments(
    fixed: str, moving: str, prefix: str | Path, settings: RegistrationSettings
) -> list[str]:
    """Command-line arguments of antsRegistration for ``settings``.

    ``fixed`` and ``moving`` are file names, or antspyx image pointer strings when run in-process.
    """
    levels = "x".join(str(f) for f in settings.shrink_factors)
    sigmas = "x".join(f"{s:g}" for s in settings.smoothing_sigmas) + "vox"

    def stage(transform: str, metric: str, iterations: tuple[int, ...]) -> list[str]:
        return [
            "--transform",
            transform,
            "--metric",
            metric,
            "--convergence",
            f"[{'x'.join(str(i) for i in iterations)},1e-6,10]",
            "--shrink-factors",
            levels,
            "--smoothing-sigmas",
            sigmas,
        ]

    linear_metric = f"MI[{fixed},{moving},1,32,Regular,0.25]"
    args = [
        "--dimensionality",
        "3",
        "--float",
        "1",
        "--output",
        f"[{prefix}]",
        "--interpolation",
        "Linear",
        "--use-histogram-matching",
        "0",
        "--winsorize-image-intensities",
        "[0.005,0.995]",
        "--initial-moving-transform",
        f"[{fixed},{moving},1]",
        *stage("Rigid[0.1]", linear_metric, settings.linear_iterations),
        *stage("Affine[0.1]", linear_metric, settings.linear_iterations),
    ]
    if settings.syn_iterations:
        syn_metric = (
            f"MI[{fixed},{moving},1,32]" if settings.syn_metric == "MI" else f"CC[{fixed},{moving},1,2]"
        )
        args += stage("SyN[0.1,3,0]", syn_metric, settings.syn_iterations)
    return [*args, "--random-seed", str(settings.seed), "--write-composite-transform", "0"]


def register_images(
    fixed: Any,
    moving: Any,
    prefix: str | Path,
    settings: RegistrationSettings = QUICK,
    threads: int | None = None,
) -> Transforms:
    """Register ``moving`` to ``fixed`` (ANTs images) and write the transforms as ``<prefix>*``.

    Runs antsRegistration in this process through antspyx's raw-argument interface, which (unlike
    the presets of ``ants.registration``) lets each call set its own random seed.
    """
    import_ants(threads)
    from ants.internal import get_lib_fn, get_pointer_string

    prefix = str(prefix)
    args = antsregistration_arguments(get_pointer_string(fixed), get_pointer_string(moving), prefix, settings)
    LOGGER.debug("antsRegistration %s", " ".join(args))
    status = get_lib_fn("antsRegistration")(args)
    if status != 0:
        raise RuntimeError(f"antsRegistration failed with exit status {status}")
    return Transforms(
        affine=Path(prefix + "0GenericAffine.mat"),
        warp=Path(prefix + "1Warp.nii.gz") if settings.syn_iterations else None,
        inverse_warp=Path(prefix + "1InverseWarp.nii.gz") if settings.syn_iterations else None,
    )


def _to_ants(data: np.ndarray, affine: np.ndarray) -> Any:
    """An ANTs float image of ``data`` on the grid of ``affine`` (RAS, as nibabel)."""
    ants = import_ants()
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(img)


def _brain_box(subject: nib.spatialimages.SpatialImage, brain: np.ndarray) -> tuple[slice, ...]:
    """The brain's bounding box plus ``_CROP_MARGIN_MM``: where registration and resampling happen."""
    spacing = np.sqrt((subject.affine[:3, :3] ** 2).sum(axis=0))
    return bounding_box(brain, np.ceil(_CROP_MARGIN_MM / spacing).astype(int))


def _registration_target(
    subject: nib.spatialimages.SpatialImage, brain: np.ndarray, box: tuple[slice, ...]
) -> nib.Nifti1Image:
    """The subject's brain inside ``box``, on a grid no finer than 1 mm."""
    data = np.asarray(subject.dataobj, dtype=np.float32)[box] * brain[box]
    cropped = nib.Nifti1Image(data, subject.slicer[box].affine)
    spacing = np.sqrt((subject.affine[:3, :3] ** 2).sum(axis=0))
    if spacing.min() >= _MIN_SPACING_MM:
        return cropped
    from nibabel.processing import resample_to_output

    return resample_to_output(cropped, voxel_sizes=np.maximum(spacing, _MIN_SPACING_MM), order=1)


def _cache_key(
    target: nib.Nifti1Image, contrast: str, settings: RegistrationSettings, atlas: RegionAtlas
) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(target.dataobj, dtype=np.float32).tobytes())
    digest.update(np.asarray(target.affine, dtype=np.float64).tobytes())
    template_sha = atlas.description.get("sha256", {}).get(atlas.path("template").name, "")
    details = {
        "version": _CACHE_VERSION,
        "ants": importlib.metadata.version("antspyx"),
        "contrast": contrast,
        "settings": asdict(settings),
        "template": template_sha,
    }
    digest.update(json.dumps(details, sort_keys=True).encode())
    return digest.hexdigest()


def _cached_transforms(cache_dir: Path, key: str) -> Transforms | None:
    manifest = cache_dir / _MANIFEST
    if not manifest.is_file():
        return None
    with contextlib.suppress(ValueError, KeyError, TypeError):
        record = json.loads(manifest.read_text(encoding="utf-8"))
        if record["key"] == key:
            files = {
                name: cache_dir / value if value else None for name, value in record["transforms"].items()
            }
            transforms = Transforms(**files)
            if all(p.is_file() for p in transforms.files()):
                return transforms
    return None


def _register_into_cache(
    target: nib.Nifti1Image,
    atlas: RegionAtlas,
    cache_dir: Path,
    key: str,
    settings: RegistrationSettings,
) -> Transforms:
    """Register the atlas template to ``target`` and move the transforms into ``cache_dir``.

    The manifest is removed first and written last, so an interrupted run never leaves a manifest
    that describes other files.
    """
    ants = import_ants()
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / _MANIFEST).unlink(missing_ok=True)
    fixed = _to_ants(np.asarray(target.dataobj), target.affine)
    moving = ants.image_read(str(atlas.path("template")), pixeltype="float")
    with tempfile.TemporaryDirectory(prefix=".registration-", dir=cache_dir) as tmp:
        produced = register_images(fixed, moving, Path(tmp) / "atlas_to_subject_", settings)
        names = {}
        for name in ("affine", "warp", "inverse_warp"):
            path = getattr(produced, name)
            if path is not None:
                os.replace(path, cache_dir / path.name)
            names[name] = path.name if path is not None else None
    write_json(cache_dir / _MANIFEST, {"key": key, "transforms": names, "settings": asdict(settings)})
    return Transforms(**{name: cache_dir / value if value else None for name, value in names.items()})


def warp_to_subject(
    image: nib.spatialimages.SpatialImage,
    reference: nib.spatialimages.SpatialImage,
    transforms: Transforms,
    interpolator: str = "genericLabel",
) -> np.ndarray:
    """Resample an atlas-space image onto the grid of ``reference`` (the subject) through ``transforms``.

    ``interpolator`` is an ANTs name: "genericLabel" or "nearestNeighbor" for labels, "linear" for
    intensities and probabilities. Returns the array in the voxel order of ``reference``.
    """
    ants = import_ants()
    fixed = _to_ants(np.zeros(reference.shape[:3], np.float32), reference.affine)
    moving = _to_ants(np.asarray(image.dataobj), image.affine)
    return ants.apply_transforms(fixed, moving, transforms.to_fixed, interpolator=interpolator).numpy()


def transform_points(
    points_mm: dict[str, tuple[float, float, float]], transforms: Transforms
) -> dict[str, tuple[float, float, float]]:
    """Map atlas-space points (RAS mm) to subject scanner coordinates (RAS mm).

    ANTs works in LPS and maps points the opposite way to images, hence the sign flips and the
    inverse transform list.
    """
    if not points_mm:
        return {}
    import pandas as pd

    ants = import_ants()
    names = list(points_mm)
    lps = np.array([points_mm[n] for n in names], dtype=float) * [-1.0, -1.0, 1.0]
    files, invert = transforms.to_moving
    moved = ants.apply_transforms_to_points(
        3, pd.DataFrame(lps, columns=["x", "y", "z"]), files, whichtoinvert=invert
    )
    ras = moved[["x", "y", "z"]].to_numpy() * [-1.0, -1.0, 1.0]
    return {n: tuple(round(float(v), 2) for v in row) for n, row in zip(names, ras, strict=True)}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def _registration_qc(
    subject: np.ndarray,
    brain: np.ndarray,
    warped_mask: np.ndarray,
    warped_tissue: np.ndarray,
    covered: np.ndarray,
    contrast: str,
) -> dict[str, Any]:
    """Overlap and tissue-contrast figures of a registration (see :func:`register_atlas`)."""
    wm = subject[brain & (warped_tissue == 3)]
    gm = subject[brain & (warped_tissue == 2)]
    pooled_sd = float(np.sqrt((wm.var() + gm.var()) / 2.0)) if wm.size and gm.size else 0.0
    effect = float((wm.mean() - gm.mean()) / pooled_sd) if pooled_sd > 0 else 0.0
    expected_sign = 1.0 if contrast == "T1w" else -1.0
    dice = _dice(warped_mask, brain)
    return {
        "brain_mask_dice": round(dice, 4),
        "atlas_coverage": round(float(covered[brain].mean()), 4),
        "wm_gm_effect_size": round(effect, 3),
        "passed": bool(dice >= QC_MIN_DICE and effect * expected_sign >= QC_MIN_EFFECT_SIZE),
    }


def register_atlas(
    subject: nib.spatialimages.SpatialImage,
    brain_mask: nib.spatialimages.SpatialImage,
    contrast: str,
    cache_dir: str | Path,
    *,
    threads: int | None = None,
    settings: RegistrationSettings = QUICK,
    atlas: RegionAtlas | None = None,
) -> AtlasRegistration:
    """Register the bundled atlas to ``subject`` and return its PVS regions on the subject's grid.

    ``subject`` is the (bias-corrected) T1w or T2w image on its conformed grid, ``brain_mask`` a
    mask on the same grid. The template is registered to the masked subject (cropped to the brain,
    no finer than 1 mm); transforms are cached in ``cache_dir``. The atlas's FreeSurfer-id labels are
    resampled with ANTs' "genericLabel" interpolation and mapped to PVS regions on the subject's
    grid by the same rules as a subject's own FreeSurfer labels (so the centrum semiovale starts
    above the subject's lateral ventricles in scanner z, whatever the head's tilt); regions are
    cleared outside the mask, and mask voxels the atlas does not cover become 'other'.

    QC (``.qc``): ``brain_mask_dice`` (warped atlas brain mask vs ``brain_mask``),
    ``atlas_coverage`` (share of mask voxels that received an atlas region), ``wm_gm_effect_size``
    (Cohen's d of subject intensities in the warped WM vs GM), ``passed`` (Dice >= QC_MIN_DICE and
    effect size of the expected sign >= QC_MIN_EFFECT_SIZE), ``anterior_commissure_in_brain``,
    ``cached`` and ``settings``. ``.landmarks`` holds the atlas landmarks (anterior commissure,
    posterior commissure, lateral ventricle top, centrum semiovale level) in scanner mm.
    """
    if contrast not in _CONTRASTS:
        raise ValueError(f"contrast must be one of {_CONTRASTS}, not {contrast!r}")
    brain = np.asarray(brain_mask.dataobj) > 0
    if brain.shape != tuple(subject.shape[:3]) or not np.allclose(
        brain_mask.affine, subject.affine, atol=1e-3
    ):
        raise ValueError(f"brain mask grid {brain.shape} does not match the subject grid {subject.shape[:3]}")
    if not brain.any():
        raise InputImageError("brain mask", "is empty; the atlas cannot be registered")
    atlas = atlas or load_region_atlas()
    cache_dir = Path(cache_dir)
    import_ants(threads)

    box = _brain_box(subject, brain)
    target = _registration_target(subject, brain, box)
    key = _cache_key(target, contrast, settings, atlas)
    transforms = _cached_transforms(cache_dir, key)
    cached = transforms is not None
    if transforms is None:
        LOGGER.info("registering the MNI atlas to the subject (%s)", contrast)
        transforms = _register_into_cache(target, atlas, cache_dir, key, settings)
    else:
        LOGGER.info("reusing the atlas registration cached in %s", cache_dir)

    # Everything is resampled inside the brain's box only (outside it the regions are empty anyway).
    reference = subject.slicer[box]
    warped = {
        name: warp_to_subject(getattr(atlas, name), reference, transforms, interpolator)
        for name, interpolator in (
            ("aseg", "genericLabel"),
            ("tissue", "genericLabel"),
            ("brain_mask", "genericLabel"),
            ("template", "linear"),
        )
    }
    aseg = np.rint(warped["aseg"]).astype(np.int32)
    regions = np.zeros(brain.shape, np.uint8)
    regions[box] = pvs_regions_on_grid(aseg, reference.affine)
    regions = fit_to_brain_mask(regions, brain)
    qc = _registration_qc(
        np.asarray(reference.dataobj, dtype=np.float32),
        brain[box],
        warped["brain_mask"] > 0.5,
        np.rint(warped["tissue"]).astype(np.uint8),
        aseg > 0,
        contrast,
    )
    template = np.zeros(brain.shape, np.float32)
    template[box] = warped["template"]
    landmarks = transform_points(atlas.landmarks, transforms)
    ac = landmarks.get("anterior_commissure")
    qc["anterior_commissure_in_brain"] = bool(ac is not None and _inside(brain, subject.affine, ac))
    qc["cached"] = cached
    qc["settings"] = asdict(settings)
    if not qc["passed"]:
        LOGGER.warning(
            "atlas registration QC flagged: %s", {k: qc[k] for k in ("brain_mask_dice", "wm_gm_effect_size")}
        )
    return AtlasRegistration(
        regions=_subject_image(regions, subject, np.uint8),
        template=_subject_image(template, subject, np.float32),
        transforms=transforms,
        qc=qc,
        landmarks=landmarks,
    )


def _inside(mask: np.ndarray, affine: np.ndarray, point_mm: tuple[float, float, float]) -> bool:
    voxel = np.rint(np.linalg.solve(affine, [*point_mm, 1.0])[:3]).astype(int)
    return bool(np.all(voxel >= 0) and np.all(voxel < mask.shape) and mask[tuple(voxel)])


def _subject_image(data: np.ndarray, subject: nib.spatialimages.SpatialImage, dtype: type) -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), subject.affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(subject.affine, code=1)
    img.set_sform(subject.affine, code=1)
    return img
