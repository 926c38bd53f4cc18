#!/usr/bin/env python
"""Build the bundled PVS-region atlas (mednet_pvs/data/atlas/) from its sources.

Every shipped file is regenerated from the sources below; nothing is edited by hand. Steps:

1. Grid and template: the CIT168 T1w brain template (Pauli et al. 2018; CC BY 4.0), which lies in
   MNI152NLin2009cAsym at 1 mm, cropped to the brain's bounding box plus a margin. It is the image
   registered to subjects. Brain mask: its non-zero voxels (largest component, holes filled).
2. Basal-ganglia nuclei: the CIT168 probabilistic atlas as repackaged by niivue (PAQD: one RGBA
   voxel = most likely label, second label, and their probabilities scaled to 0-255). A nucleus
   group (caudate; putamen; pallidum = GPe + GPi + ventral pallidum; accumbens) takes the voxels
   where it is the most probable group and the groups' summed probability (from the two ranked
   labels) is at least 0.5.
3. Tissue: the ICBM152 2009a symmetric T1 template and GM/WM probability maps shipped in nilearn
   (Fonov et al. 2009, 2011), registered to the CIT168 template (rigid, affine, SyN with
   cross-correlation) and resampled; CSF = 1 - GM - WM inside the brain mask; the tissue map is the
   most probable class.
4. Structures CIT168 lacks (thalamus, hippocampus, amygdala, brainstem, ventral diencephalon,
   cerebellum, ventricles, choroid plexus): the FreeSurfer aparc.a2009s+aseg labels of one real
   subject (niivue, BSD-2), registered to the template through its norm.mgz like step 3 and
   resampled with nearest-neighbour ("genericLabel"). A single subject: see docs/regions.md.
5. Composite FreeSurfer-id volume on the MNI grid: tissue classes give cerebral white matter (2/41),
   cortex (3/42) and CSF (24), hemispheres from the nearest left/right FreeSurfer label; the
   FreeSurfer structures of step 4 and then the CIT168 nuclei of step 2 are written over it.
6. PVS regions: the composite goes through the same mapping as a subject's own FreeSurfer labels
   (:func:`mednet_pvs.regions.freesurfer.pvs_regions_on_grid`); brain-mask voxels left unlabelled
   become 'other'. Both the composite (``desc-aseg``) and the regions are shipped: registration
   warps the composite and maps it on the subject's grid, so both paths share one set of
   definitions in the subject's own axes; the MNI region map is for display and MNI-space use.
7. Landmarks (MNI mm): anterior and posterior commissure = centroid of the brightest voxels (at least
   90 % of the maximum) of the template in a small midline search box around each, chosen by
   inspecting the template; top of the lateral ventricles; the centrum semiovale rating level
   (10 mm above that top, Potter et al. 2015).
8. Files: uint8 images (gzip), landmarks JSON and atlas.json with sources, licences, parameters and
   a SHA-256 per file. ``--figures DIR`` also renders the regions on the template.

Usage: python scripts/build_region_atlas.py [--shared /work/shared/data] [--work /tmp/atlas-build]
Registrations are cached in the work folder; a rerun reuses them.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import logging
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

LOGGER = logging.getLogger("build_region_atlas")

REPOSITORY = Path(__file__).resolve().parents[1]
#: Voxels of margin kept around the brain when the grid is cropped.
MARGIN_VOXELS = 3
#: Nucleus groups from CIT168 labels (1-based, left/right pairs as in CIT168.json) to FreeSurfer ids.
CIT168_GROUPS = {
    "caudate": ({3}, {4}, 11, 50),
    "putamen": ({1}, {2}, 12, 51),
    "pallidum": ({9, 11, 23}, {10, 12, 24}, 13, 52),  # GPe, GPi, ventral pallidum
    "accumbens": ({5}, {6}, 26, 58),
}
#: FreeSurfer structures taken from the registered FreeSurfer subject (everything CIT168 lacks).
FREESURFER_STRUCTURES = (4, 43, 5, 44, 14, 15, 7, 8, 46, 47, 16, 28, 60, 10, 49, 17, 53, 18, 54, 31, 63)
#: Search boxes (MNI mm, inclusive: x, y, z ranges) for the commissures, set by inspecting the template.
COMMISSURE_BOXES = {
    "anterior_commissure": ((-1, 1), (0, 6), (-7, -3)),
    "posterior_commissure": ((-1, 1), (-27, -23), (-4, 0)),
}
CSO_LEVEL_MM = 10.0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def brain_mask_from_template(template: np.ndarray) -> np.ndarray:
    """Non-zero voxels of the brain-extracted template: largest component, holes filled."""
    labels, _ = ndimage.label(template > 0)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(labels == largest)


def decode_paqd(path: Path, reference: nib.Nifti1Image) -> dict[int, np.ndarray]:
    """Probability (0-1) of every CIT168 label on the grid of ``reference``, from niivue's PAQD file.

    Each RGBA voxel holds the most likely label (R), the second label (G) and their probabilities
    times 255 (B, A); labels beyond the second are not stored, so probabilities are lower bounds.
    """
    from nibabel.processing import resample_from_to

    img = nib.load(str(path))
    rgba = np.asarray(img.dataobj)
    if rgba.dtype.names != ("R", "G", "B", "A"):
        raise ValueError(f"{path}: expected an RGBA (PAQD) image, found {rgba.dtype}")
    first, second = rgba["R"].astype(int), rgba["G"].astype(int)
    p_first, p_second = rgba["B"] / 255.0, rgba["A"] / 255.0
    probabilities = {}
    for label in np.union1d(np.unique(first), np.unique(second)):
        if label == 0:
            continue
        prob = np.where(first == label, p_first, 0.0) + np.where(second == label, p_second, 0.0)
        on_grid = resample_from_to(nib.Nifti1Image(prob.astype(np.float32), img.affine), reference, order=0)
        probabilities[int(label)] = np.asarray(on_grid.dataobj)
    return probabilities


def register(fixed_path: Path, moving_path: Path, prefix: Path, threads: int | None) -> list[str]:
    """FINE registration of moving to fixed, cached under ``prefix``; returns the forward transforms."""
    from mednet_pvs.regions.registration import FINE, Transforms, register_images

    transforms = Transforms(
        affine=Path(f"{prefix}0GenericAffine.mat"),
        warp=Path(f"{prefix}1Warp.nii.gz"),
        inverse_warp=Path(f"{prefix}1InverseWarp.nii.gz"),
    )
    if all(p.is_file() for p in transforms.files()):
        LOGGER.info("reusing %s*", prefix)
        return transforms.to_fixed
    import ants

    LOGGER.info("registering %s to %s (several minutes)", moving_path.name, fixed_path.name)
    fixed = ants.image_read(str(fixed_path), pixeltype="float")
    moving = ants.image_read(str(moving_path), pixeltype="float")
    return register_images(fixed, moving, prefix, FINE, threads=threads).to_fixed


def warp(moving_path: Path, fixed_path: Path, transforms: list[str], interpolator: str) -> np.ndarray:
    import ants

    fixed = ants.image_read(str(fixed_path))
    moving = ants.image_read(str(moving_path))
    return ants.apply_transforms(fixed, moving, transforms, interpolator=interpolator).numpy()


def save(data: np.ndarray, affine: np.ndarray, path: Path, dtype: type = np.uint8) -> Path:
    from mednet_pvs.utils.atomic import save_nifti

    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=4)  # 4 = MNI152
    img.set_sform(affine, code=4)
    return save_nifti(img, path)


def hemisphere_masks(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of left and right FreeSurfer structures (cerebrum and cerebellum)."""
    from mednet_pvs.regions.freesurfer import freesurfer_tissue_masks

    cerebellum = {"left": (7, 8), "right": (46, 47)}
    left, right = (
        np.logical_or.reduce(list(freesurfer_tissue_masks(labels, side).values()))
        | np.isin(labels, cerebellum[side])
        for side in ("left", "right")
    )
    return left, right


def nucleus_labels(cit168: dict[int, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """FreeSurfer ids of the CIT168 nucleus groups: where the groups' summed probability is at least
    0.5, the most probable group (so voxels on the border of two nuclei are not lost)."""
    ids, stacked = [0], [np.zeros(shape, np.float32)]
    for left_labels, right_labels, left_id, right_id in CIT168_GROUPS.values():
        for labels, fs_id in ((left_labels, left_id), (right_labels, right_id)):
            ids.append(fs_id)
            stacked.append(
                sum((cit168[label] for label in labels if label in cit168), np.zeros(shape, np.float32))
            )
    probabilities = np.stack(stacked)
    winner = np.asarray(ids)[np.argmax(probabilities, axis=0)]
    return np.where(probabilities.sum(axis=0) >= 0.5, winner, 0)


def composite_labels(
    brain: np.ndarray,
    tissue: np.ndarray,
    freesurfer: np.ndarray,
    cit168: dict[int, np.ndarray],
) -> np.ndarray:
    """FreeSurfer-id volume on the MNI grid (step 5 of the module docstring)."""
    from mednet_pvs.regions.rules import assign_hemisphere

    left, right = assign_hemisphere(brain, *hemisphere_masks(freesurfer))
    out = np.zeros(brain.shape, np.int32)
    for tissue_label, (left_id, right_id) in {1: (24, 24), 2: (3, 42), 3: (2, 41)}.items():
        out[left & (tissue == tissue_label)] = left_id
        out[right & (tissue == tissue_label)] = right_id
    structures = np.isin(freesurfer, FREESURFER_STRUCTURES) & brain
    out[structures] = freesurfer[structures]
    nuclei = nucleus_labels(cit168, brain.shape)
    out[(nuclei > 0) & brain] = nuclei[(nuclei > 0) & brain]
    return out


def commissure(template: np.ndarray, affine: np.ndarray, box: tuple[tuple[int, int], ...]) -> list[float]:
    """Centroid (MNI mm) of the template's brightest voxels (>= 90 % of the maximum) inside ``box``."""
    inverse = np.linalg.inv(affine)
    corners = [inverse @ np.array([*corner, 1.0]) for corner in zip(*box, strict=True)]
    low = np.floor(np.min(corners, axis=0)[:3]).astype(int)
    high = np.ceil(np.max(corners, axis=0)[:3]).astype(int) + 1
    patch = template[low[0] : high[0], low[1] : high[1], low[2] : high[2]].astype(float)
    bright = patch >= 0.9 * patch.max()
    weights = patch * bright
    voxel = (np.argwhere(bright) * weights[bright][:, None]).sum(0) / weights[bright].sum() + low
    return [round(float(v), 1) for v in (affine @ np.append(voxel, 1.0))[:3]]


def landmarks(template: np.ndarray, affine: np.ndarray, composite: np.ndarray) -> dict[str, dict]:
    """Step 7 of the module docstring."""
    found = {
        name: {
            "mni_mm": commissure(template, affine, box),
            "method": "brightest template voxels in search box",
        }
        for name, box in COMMISSURE_BOXES.items()
    }
    ventricles = np.isin(composite, (4, 43))
    idx = np.argwhere(ventricles)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    top = world[:, 2].max()
    top_slab = world[world[:, 2] >= top - 1.0]
    point = [
        round(float(top_slab[:, 0].mean()), 1),
        round(float(top_slab[:, 1].mean()), 1),
        round(float(top), 1),
    ]
    found["lateral_ventricles_top"] = {"mni_mm": point, "method": "highest point of the lateral ventricles"}
    found["centrum_semiovale_level"] = {
        "mni_mm": [point[0], point[1], round(float(top + CSO_LEVEL_MM), 1)],
        "method": f"{CSO_LEVEL_MM:g} mm above the top of the lateral ventricles (Potter et al. 2015)",
    }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("/work/shared/data"), help="source data folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/atlas-build"), help="cache of registrations")
    parser.add_argument("--out", type=Path, default=REPOSITORY / "mednet_pvs" / "data" / "atlas")
    parser.add_argument("--threads", type=int, default=None, help="ITK threads (default: all cores)")
    parser.add_argument("--figures", type=Path, default=None, help="render the regions on the template here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    sys.path.insert(0, str(REPOSITORY))
    import nilearn

    from mednet_pvs.regions.atlas import ATLAS_FILES, SPACE, TISSUE_LABELS, plot_regions
    from mednet_pvs.regions.freesurfer import pvs_regions_on_grid
    from mednet_pvs.regions.lut import REGIONS
    from mednet_pvs.regions.rules import bounding_box, fit_to_brain_mask
    from mednet_pvs.utils.atomic import write_json

    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    cit168_dir = args.shared / "atlases" / "CIT168"
    nilearn_data = Path(nilearn.__file__).parent / "datasets" / "data"
    sources = {
        "cit168_template": cit168_dir / "CIT168toMNI152-2009c_T1w_brain.nii.gz",
        "cit168_labels": cit168_dir / "CIT168.nii.gz",
        "icbm_t1": nilearn_data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
        "icbm_gm": nilearn_data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
        "icbm_wm": nilearn_data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        "freesurfer_norm": args.shared / "real" / "fs_norm.mgz",
        "freesurfer_labels": args.shared / "real" / "fs_aparc.a2009s+aseg.mgz",
    }

    # 1. Grid, template and brain mask.
    source_template = nib.load(str(sources["cit168_template"]))
    full_template = np.asarray(source_template.dataobj)
    crop = bounding_box(brain_mask_from_template(full_template), MARGIN_VOXELS)
    grid = source_template.slicer[crop]
    affine = grid.affine
    template = np.asarray(grid.dataobj).astype(np.uint8)
    brain = brain_mask_from_template(template)
    template_path = save(template, affine, work / "template.nii.gz")
    LOGGER.info("grid %s, brain %d voxels", template.shape, brain.sum())

    # 2. CIT168 nucleus probabilities on the grid.
    cit168 = decode_paqd(sources["cit168_labels"], grid)

    # 3. ICBM152 2009a tissue probabilities.
    icbm = register(template_path, sources["icbm_t1"], work / "icbm_", args.threads)
    gm = warp(sources["icbm_gm"], template_path, icbm, "linear") / 255.0
    wm = warp(sources["icbm_wm"], template_path, icbm, "linear") / 255.0
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = (np.argmax(np.stack([csf, gm, wm]), axis=0) + 1) * brain

    # 4. FreeSurfer subject labels.
    norm = nib.load(str(sources["freesurfer_norm"]))
    norm_path = save(np.asarray(norm.dataobj), norm.affine, work / "fs_norm.nii.gz", np.float32)
    fs_labels = nib.load(str(sources["freesurfer_labels"]))
    labels_path = save(np.asarray(fs_labels.dataobj), fs_labels.affine, work / "fs_labels.nii.gz", np.int32)
    subject = register(template_path, norm_path, work / "freesurfer_", args.threads)
    freesurfer = np.rint(warp(labels_path, template_path, subject, "genericLabel")).astype(np.int32)

    # 5-6. Composite labels and PVS regions.
    composite = composite_labels(brain, tissue, freesurfer, cit168)
    regions = fit_to_brain_mask(pvs_regions_on_grid(composite, affine), brain)

    # 7-8. Landmarks and files.
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "template": save(template, affine, out / ATLAS_FILES["template"]),
        "brain_mask": save(brain, affine, out / ATLAS_FILES["brain_mask"]),
        "regions": save(regions, affine, out / ATLAS_FILES["regions"]),
        "aseg": save(composite, affine, out / ATLAS_FILES["aseg"]),
        "tissue": save(tissue, affine, out / ATLAS_FILES["tissue"]),
        "landmarks": write_json(out / ATLAS_FILES["landmarks"], landmarks(template, affine, composite)),
    }
    volumes = {r.name: int((regions == r.index).sum()) for r in REGIONS}
    description = {
        "Name": "mednet-pvs PVS-region atlas",
        "Space": SPACE,
        "Resolution": "1 mm isotropic",
        "BuiltBy": "scripts/build_region_atlas.py",
        "BuildDate": datetime.date.today().isoformat(),
        "TissueLabels": TISSUE_LABELS,
        "RegionVolumesMM3": volumes,
        "Sources": {name: {"file": path.name, "sha256": sha256(path)} for name, path in sources.items()},
        "Licenses": "see mednet_pvs/data/NOTICE.md",
        "sha256": {path.name: sha256(path) for path in written.values()},
    }
    write_json(out / "atlas.json", description)
    LOGGER.info("region volumes (mm3): %s", volumes)
    if args.figures:
        plot_regions(
            template_path, out / ATLAS_FILES["regions"], args.figures / "atlas_regions_on_template.png"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
