#!/usr/bin/env python
"""Compare offline skull-strip methods (and time N4) on the real scans of ../shared/data/real.

For every scan (loaded and conformed as the pipeline does) and every method, one fresh process
runs the method, so that wall time and peak resident memory (``ru_maxrss``; ``delta`` is the peak
minus the resident memory after imports and loading) belong to that method alone. Methods:
``deepbet``, ``template-affine`` and ``template-syn`` (the candidate that was not kept: the
nilearn MNI template registered to the scan with antspyx, see :func:`template_brain_mask`),
``nonzero`` (filled non-zero region, where the scan has an exactly-zero background around one
component), ``auto`` (the pipeline default), and N4 with its
defaults (``n4``; on the 0.5 mm scan also ``n4-shrink4``, the shrink factor used at 1 mm, and the
median relative difference of the two corrected images inside the brain).

Accuracy: Dice with the reference brain (the filled non-zero region of the brain-extracted scans;
for fs_norm.mgz also the FreeSurfer brain, i.e. its aparc+aseg labels, holes filled), the
reference volume a mask misses ("eaten" brain, mL) and the volume it adds outside the reference.
Every mask also gets its Dice with deepbet's, and deepbet's row the fraction of the non-zero
region it covers (the confirmation step of ``auto``). A
``colin27_T1w@0.5mm`` copy (trilinear upsampling) checks timing on a 0.5 mm grid (template
registration is skipped there). Overlays of every mask go to ``--out`` as PNGs; the table is
printed and written to ``--out``/skullstrip_compare.tsv.

    PYTHONPATH=. python benchmarks/skullstrip_compare.py [--data DIR] [--out DIR] [--threads 2]
    PYTHONPATH=. python benchmarks/skullstrip_compare.py --scans head_T1w.nii.gz --methods deepbet auto
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import resource
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SCANS = {
    "head_T1w.nii.gz": "T1w",
    "stroke_T1w.nii.gz": "T1w",
    "stroke_T2w.nii.gz": "T2w",
    "stroke_FLAIR.nii.gz": "FLAIR",
    "M2208_T2w.nii.gz": "T2w",
    "colin27_T1w.nii.gz": "T1w",
    "fs_norm.mgz": "T1w",
}
HIRES = "colin27_T1w@0.5mm"
#: The one scan with skull and neck: it has no reference brain.
WHOLE_HEAD = "head_T1w.nii.gz"
MASK_METHODS = ("deepbet", "template-affine", "template-syn", "nonzero", "auto")
N4_METHODS = ("n4", "n4-shrink4")
#: Dilation (1 mm voxels) of the template brain mask that bounds the registration metric, so that
#: the subject's skull and neck do not drive the fit.
TEMPLATE_MASK_DILATION = 5
COLOURS = {
    "deepbet": "red",
    "template-affine": "cyan",
    "template-syn": "yellow",
    "nonzero": "lime",
    "auto": "magenta",
}


def load_scan(data_dir: Path, scan: str) -> nib.Nifti1Image:
    """The scan as the pipeline sees it: validated, conformed (closest RAS+, float32)."""
    from scipy import ndimage

    from mednet_pvs.preproc.conform import conform, load_anatomical

    if scan != HIRES:
        return conform(load_anatomical(data_dir / scan))
    img = conform(load_anatomical(data_dir / "colin27_T1w.nii.gz"))
    data = ndimage.zoom(np.asarray(img.dataobj), 2, order=1)
    affine = img.affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    out = nib.Nifti1Image(data.astype(np.float32), affine)
    out.header.set_xyzt_units("mm", "sec")
    return out


def _to_ants(data: np.ndarray, affine: np.ndarray) -> Any:
    import ants

    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(img)


def template_brain_mask(img: nib.Nifti1Image, transform: str) -> np.ndarray:
    """The nilearn MNI152 2009a brain mask warped onto ``img`` by antspyx (``transform``: Affine or SyN).

    The template (moving, a brain without skull) is registered to the scan (fixed) with Mattes
    mutual information, so any contrast works, restricted to the dilated template brain.
    """
    import ants
    from nilearn import datasets
    from scipy import ndimage

    template = datasets.load_mni152_template(resolution=1)
    brain = datasets.load_mni152_brain_mask(resolution=1)
    brain_data = np.asarray(brain.dataobj, dtype=np.float32)
    metric_region = ndimage.binary_dilation(brain_data > 0, iterations=TEMPLATE_MASK_DILATION)
    subject = _to_ants(np.asarray(img.dataobj), img.affine)
    registration = ants.registration(
        fixed=subject,
        moving=_to_ants(template.get_fdata(dtype=np.float32), template.affine),
        type_of_transform=transform,
        moving_mask=_to_ants(metric_region, brain.affine),
        mask_all_stages=True,
    )
    warped = ants.apply_transforms(
        fixed=subject,
        moving=_to_ants(brain_data, brain.affine),
        transformlist=registration["fwdtransforms"],
        interpolator="linear",
    )
    for path in {*registration["fwdtransforms"], *registration["invtransforms"]}:
        Path(path).unlink(missing_ok=True)  # ants.registration leaves them in the temporary folder
    return ndimage.binary_fill_holes(warped.numpy() > 0.5)


def _resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_one(data_dir: Path, scan: str, contrast: str, method: str, threads: int) -> dict:
    """Run one method on one scan in this (fresh) process; return the mask and the figures."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import ants  # noqa: F401  (import before timing; ITK reads the thread count now)
    import deepbet  # noqa: F401
    import torch

    from mednet_pvs.preproc import n4, skullstrip

    torch.set_num_threads(threads)
    img = load_scan(data_dir, scan)
    data = np.asarray(img.dataobj, dtype=np.float32)
    baseline = _resident_mb()
    start = time.perf_counter()
    used = method
    mask = corrected = None
    if method == "deepbet":
        mask = skullstrip.deepbet_brain_mask(data, device="cpu", threads=threads)
    elif method.startswith("template-"):
        mask = template_brain_mask(img, transform="SyN" if method.endswith("syn") else "Affine")
    elif method == "nonzero":
        mask = skullstrip.nonzero_brain_region(data)
    elif method == "auto":
        result = skullstrip.extract_brain(img, contrast, threads=threads, device="cpu")
        mask, used = np.asarray(result.mask.dataobj) > 0, result.method
    elif method.startswith("n4"):
        output = n4.n4_bias_correct(img, shrink_factor=4 if method == "n4-shrink4" else None)
        corrected = output.get_fdata(dtype=np.float32) if scan == HIRES else None  # compared below
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "mask": mask,
        "corrected": corrected,
        "used": used,
        "seconds": seconds,
        "peak_mb": peak,
        "delta_mb": peak - baseline,
    }


def references(data_dir: Path, scan: str, img: nib.Nifti1Image) -> dict[str, np.ndarray]:
    """Reference brains on the conformed grid: the filled non-zero region, FreeSurfer's brain."""
    from scipy import ndimage

    from mednet_pvs.preproc.conform import conform
    from mednet_pvs.preproc.skullstrip import nonzero_brain_region

    refs = {}
    region = nonzero_brain_region(np.asarray(img.dataobj))
    if region is not None and scan != WHOLE_HEAD:
        refs["nonzero"] = region
    if scan == "fs_norm.mgz":
        labels = conform(nib.load(data_dir / "fs_aparc.a2009s+aseg.mgz"))
        refs["freesurfer"] = ndimage.binary_fill_holes(np.asarray(labels.dataobj) > 0)
    return refs


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def overlay(img: nib.Nifti1Image, masks: dict[str, np.ndarray], path: Path) -> None:
    """Contours of each mask on a sagittal, a coronal and two axial slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(img.dataobj)
    centre = np.argwhere(next(iter(masks.values()))).mean(axis=0).astype(int)
    upper = int(np.argwhere(next(iter(masks.values())))[:, 2].max() * 0.85 + centre[2] * 0.15)
    views = [
        lambda v: v[centre[0]],
        lambda v: v[:, centre[1]],
        lambda v: v[:, :, centre[2]],
        lambda v: v[:, :, upper],
    ]
    fig, axes = plt.subplots(len(masks), len(views), figsize=(3 * len(views), 3 * len(masks)), squeeze=False)
    for row, (name, mask) in enumerate(masks.items()):
        for col, view in enumerate(views):
            ax = axes[row, col]
            ax.imshow(view(data).T, origin="lower", cmap="gray")
            ax.contour(view(mask).T.astype(float), [0.5], colors=COLOURS.get(name, "red"), linewidths=0.8)
            ax.set_axis_off()
        axes[row, 0].set_title(f"{path.stem}: {name}", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("/tmp/skullstrip_compare"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scans", nargs="*", default=[*SCANS, HIRES])
    parser.add_argument("--methods", nargs="*", default=[*MASK_METHODS, *N4_METHODS])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from mednet_pvs.utils.atomic import write_tsv

    jobs = [
        (scan, method)
        for scan in args.scans
        for method in args.methods
        if not (scan == HIRES and method.startswith("template-"))
        and not (scan != HIRES and method == "n4-shrink4")
    ]
    results: dict[tuple[str, str], dict] = {}
    context = multiprocessing.get_context("spawn")
    for scan, method in tqdm(jobs, desc="scan x method"):
        contrast = SCANS.get(scan, "T1w")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            results[scan, method] = pool.submit(
                run_one, args.data, scan, contrast, method, args.threads
            ).result()

    rows = []
    for scan in args.scans:
        img = load_scan(args.data, scan)
        voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
        refs = references(args.data, scan, img)
        masks = {
            m: results[scan, m]["mask"]
            for m in MASK_METHODS
            if results.get((scan, m), {}).get("mask") is not None
        }
        for method in args.methods:
            if (scan, method) not in results:
                continue
            res = results[scan, method]
            row = {
                "scan": scan,
                "contrast": SCANS.get(scan, "T1w"),
                "method": method,
                "used": res["used"],
                "seconds": res["seconds"],
                "peak_MB": res["peak_mb"],
                "delta_MB": res["delta_mb"],
            }
            mask = res["mask"]
            if method == "n4-shrink4" and (scan, "n4") in results and "nonzero" in refs:
                brain = refs["nonzero"] & (res["corrected"] > 0)
                ratio = results[scan, "n4"]["corrected"][brain] / res["corrected"][brain]
                row["n4_median_rel_diff"] = float(np.median(np.abs(ratio / np.median(ratio) - 1)))
            if mask is not None:
                row["volume_mL"] = mask.sum() * voxel_ml
                for ref_name, ref in refs.items():
                    row[f"dice_{ref_name}"] = dice(mask, ref)
                    row[f"missed_{ref_name}_mL"] = (ref & ~mask).sum() * voxel_ml
                    row[f"added_{ref_name}_mL"] = (mask & ~ref).sum() * voxel_ml
                if "deepbet" in masks:
                    row["dice_deepbet"] = dice(mask, masks["deepbet"])
                if method == "deepbet" and "nonzero" in masks:
                    row["covers_nonzero"] = float((mask & masks["nonzero"]).sum() / masks["nonzero"].sum())
            rows.append(row)
        if masks:
            name = scan.removesuffix(".nii.gz").removesuffix(".mgz").replace("@", "_").replace(".", "p")
            overlay(img, masks, args.out / f"{name}.png")

    table = pd.DataFrame(rows)
    write_tsv(args.out / "skullstrip_compare.tsv", table)
    load = os.getloadavg()
    print(f"threads={args.threads}; load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    with pd.option_context(
        "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format
    ):
        print(table.to_string(index=False))
    print(f"overlays and TSV in {args.out}")


if __name__ == "__main__":
    main()
