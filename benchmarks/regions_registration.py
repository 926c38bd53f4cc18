#!/usr/bin/env python
"""Benchmark the atlas registration on a real 1 mm scan and measure its agreement with FreeSurfer.

Prints wall time and peak resident memory of :func:`mednet_pvs.regions.registration.register_atlas`
(first run, then a rerun that reuses the cached transforms), the QC figures, and, when FreeSurfer
labels of the same scan are given, the Dice coefficient of every PVS region between the
atlas-derived and the FreeSurfer-derived maps. Optionally also registers a second contrast of the
same (co-registered) subject and prints the per-region Dice between the two atlas maps.

With ``--pd25 DIR`` it instead checks the atlas's structures against an independent population
atlas that cannot be bundled (PD25, CC BY-NC-SA: used here for evaluation only): the PD25 template
is registered to the atlas template and the Dice of thalamus, caudate, putamen and pallidum between
the two atlases is printed. This tests the single-subject thalamus of the bundled atlas.

Default: the FreeSurfer demo subject of ../shared (norm.mgz, brain = its labels).
Usage: python benchmarks/regions_registration.py [--threads 2] [--figures /tmp/regions]
       python benchmarks/regions_registration.py --subject T1w.nii.gz --second T2w.nii.gz --labels ''
       python benchmarks/regions_registration.py --pd25 ../shared/data/atlases/PD25
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDNET_PVS_SHARED", REPOSITORY.parent / "shared")) / "data" / "real"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load(path: Path) -> nib.Nifti1Image:
    from mednet_pvs.preproc.conform import conform

    img = nib.load(str(path))
    return conform(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine))


def region_masks(regions: np.ndarray) -> dict[str, np.ndarray]:
    """Mask of every leaf region and reported group of a PVS region map."""
    from mednet_pvs.regions.lut import GROUPS, REGIONS

    masks = {region.name: regions == region.index for region in REGIONS}
    for group, members in GROUPS.items():
        masks[group] = np.isin(regions, [r.index for r in REGIONS if r.structure in members])
    return masks


def region_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    masks_a, masks_b = region_masks(a), region_masks(b)
    return {
        name: 2.0 * (masks_a[name] & masks_b[name]).sum() / max(masks_a[name].sum() + masks_b[name].sum(), 1)
        for name in masks_a
    }


def region_volumes(regions: np.ndarray, voxel_cm3: float) -> dict[str, float]:
    return {name: float(mask.sum()) * voxel_cm3 for name, mask in region_masks(regions).items()}


def timed_registration(subject, mask, contrast, work, threads):
    from mednet_pvs.regions.registration import register_atlas

    start = time.perf_counter()
    result = register_atlas(subject, mask, contrast, work, threads=threads)
    return result, time.perf_counter() - start


#: PD25 label ids (PD25-subcortical.json) and the FreeSurfer ids of the same structures in the atlas.
PD25_STRUCTURES = {
    "thalamus": ((15,), (10,), (16,), (49,)),
    "caudate": ((7,), (11,), (8,), (50,)),
    "putamen": ((9,), (12,), (10,), (51,)),
    "pallidum": ((11, 13), (13,), (12, 14), (52,)),
}


def pd25_agreement(pd25: Path, threads: int) -> None:
    """Print the Dice of the atlas's structures with PD25's, after registering PD25 to the template."""
    from mednet_pvs.regions.atlas import load_region_atlas
    from mednet_pvs.regions.registration import QUICK, import_ants, register_images

    ants = import_ants(threads)
    atlas = load_region_atlas()
    fixed = ants.image_read(str(atlas.path("template")), pixeltype="float")
    moving = ants.image_read(str(pd25 / "PD25-fusion-template-1mm.nii.gz"), pixeltype="float")
    labels = ants.image_read(str(pd25 / "PD25-subcortical-1mm.nii.gz"), pixeltype="float")
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        transforms = register_images(fixed, moving, Path(work) / "pd25_", QUICK)
        warped = ants.apply_transforms(
            fixed, labels, transforms.to_fixed, interpolator="genericLabel"
        ).numpy()
        print(f"PD25 -> template registration (QUICK): {time.perf_counter() - start:.0f} s")
    warped = np.rint(warped).astype(int)
    aseg = np.asarray(atlas.aseg.dataobj)
    print("Dice bundled atlas vs PD25 (MNI space):")
    for name, (pd_left, fs_left, pd_right, fs_right) in PD25_STRUCTURES.items():
        for side, pd_ids, fs_ids in (("left", pd_left, fs_left), ("right", pd_right, fs_right)):
            a, b = np.isin(aseg, fs_ids), np.isin(warped, pd_ids)
            print(f"  {name}_{side:6s} {2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1):.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subject", type=Path, default=SHARED / "fs_norm.mgz")
    parser.add_argument("--contrast", default="T1w", choices=("T1w", "T2w"))
    parser.add_argument("--labels", default=str(SHARED / "fs_aparc.a2009s+aseg.mgz"), help="'' for none")
    parser.add_argument("--second", type=Path, default=None, help="second contrast of the same subject")
    parser.add_argument("--second-contrast", default="T2w", choices=("T1w", "T2w"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figures", type=Path, default=None, help="write overlay PNGs here")
    parser.add_argument("--pd25", type=Path, default=None, help="PD25 folder: compare the atlas with it")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(REPOSITORY))
    from mednet_pvs.regions.registration import import_ants

    import_ants(args.threads)  # before anything else imports ants, so the thread count applies
    if args.pd25:
        pd25_agreement(args.pd25, args.threads)
        return 0
    from mednet_pvs.regions.atlas import load_region_atlas, plot_regions
    from mednet_pvs.regions.freesurfer import regions_from_labels_file

    subject = load(args.subject)
    load_region_atlas()
    baseline = peak_rss_mib()
    if args.labels:
        reference_regions = regions_from_labels_file(args.labels, subject)
        brain = np.asarray(reference_regions.dataobj) > 0
    else:
        brain = np.asarray(subject.dataobj) > 0
    mask = nib.Nifti1Image(brain.astype(np.uint8), subject.affine)

    with tempfile.TemporaryDirectory() as work:
        result, first = timed_registration(subject, mask, args.contrast, work, args.threads)
        peak = peak_rss_mib()
        _, second = timed_registration(subject, mask, args.contrast, work, args.threads)
    print(f"subject: {args.subject.name} {subject.shape} voxel {subject.header.get_zooms()[:3]} mm")
    print(f"threads: {args.threads} (shared 2-core machine: timings are indicative)")
    print(f"register_atlas, first run: {first:.1f} s; rerun from cache: {second:.1f} s")
    print(f"peak RSS: {peak:.0f} MiB (before registration: {baseline:.0f} MiB)")
    print("qc:", {k: v for k, v in result.qc.items() if k != "settings"})
    print("landmarks (scanner mm):", result.landmarks)
    atlas_regions = np.asarray(result.regions.dataobj)
    if args.labels:
        fs_regions = np.asarray(reference_regions.dataobj)
        voxel_cm3 = float(np.prod(subject.header.get_zooms()[:3])) / 1000.0
        atlas_volumes, fs_volumes = (
            region_volumes(atlas_regions, voxel_cm3),
            region_volumes(fs_regions, voxel_cm3),
        )
        print("region: Dice atlas vs FreeSurfer, volume atlas / FreeSurfer (cm3)")
        for name, value in region_dice(atlas_regions, fs_regions).items():
            print(f"  {name:26s} {value:.3f}   {atlas_volumes[name]:7.1f} / {fs_volumes[name]:7.1f}")
    if args.second:
        other = load(args.second)
        with tempfile.TemporaryDirectory() as work:
            second_result, seconds = timed_registration(other, mask, args.second_contrast, work, args.threads)
        print(
            f"{args.second_contrast} registration: {seconds:.1f} s; qc:",
            second_result.qc["brain_mask_dice"],
            second_result.qc["wm_gm_effect_size"],
        )
        print(f"Dice {args.contrast} vs {args.second_contrast} atlas regions:")
        for name, value in region_dice(atlas_regions, np.asarray(second_result.regions.dataobj)).items():
            print(f"  {name:26s} {value:.3f}")
    if args.figures:
        stem = args.subject.name.split(".")[0]
        plot_regions(subject, result.regions, args.figures / f"{stem}_atlas_regions.png", "atlas, registered")
        if args.labels:
            plot_regions(
                subject, reference_regions, args.figures / f"{stem}_freesurfer_regions.png", "FreeSurfer"
            )
        plot_regions(
            result.template, result.regions, args.figures / f"{stem}_warped_template.png", "template"
        )
        print("figures in", args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
