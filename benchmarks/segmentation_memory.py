"""Peak memory of the segmentation step against the estimate it declares to Nipype.

Each case runs the ``ModelSegmentation`` interface (read the NIfTI, predict without TTA, write the
probability) in its own process on a generated image: noise inside an ellipsoid that fills the
field of view, so the brain box is the whole image (the worst case the estimate assumes). Printed
per case: image and network-grid voxels, the process's peak resident memory (``ru_maxrss``), the
estimate of :func:`mednet_pvs.inference.footprint.segmentation_memory_gb` for that image, and
peak / estimate (above 1: the node would be under-declared).

The default model is a random MedNeXt-S of width 16 with the bundled model's windows and network
spacing (same memory, random weights), with windows that do not overlap (step 1): memory does not
depend on the step, time does. ``--model`` takes a model name or directory instead.

    PYTHONPATH=. python benchmarks/segmentation_memory.py
    PYTHONPATH=. python benchmarks/segmentation_memory.py --model mednet-pvs-synth-s16 --cases 1.6mm
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: name -> (shape, voxel size in mm): typical fields of view of research and clinical scans
CASES = {
    "1mm": ((176, 208, 176), (1.0, 1.0, 1.0)),
    "1.6mm": ((104, 150, 133), (1.6, 1.6, 1.6)),
    "0.5mm": ((300, 360, 280), (0.5, 0.5, 0.5)),
    "clinical": ((384, 384, 60), (0.45, 0.45, 2.0)),
}


def _phantom(path: Path, shape: tuple[int, ...], zooms: tuple[float, ...]) -> None:
    import nibabel as nib

    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    inside = sum(((g - (n - 1) / 2) / (n / 2)) ** 2 for g, n in zip(grid, shape, strict=True)) <= 1.0
    data = np.zeros(shape, np.float32)
    data[inside] = np.random.default_rng(0).normal(100.0, 10.0, int(inside.sum()))
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)


def run_child(model: str, image: Path, threads: int) -> None:
    """Segment ``image`` once and print a JSON line of figures."""
    from mednet_pvs.interfaces.segmentation import ModelSegmentation

    start = time.perf_counter()
    node = ModelSegmentation(
        in_file=str(image), model_dir=model, contrast="T2w", tta=False, threads=threads, device="cpu"
    )
    node.run(cwd=str(image.parent))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"peak_mib": peak, "seconds": seconds}))


def _model_dir(name: str | None, folder: Path) -> Path:
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.registry import resolve_model
    from mednet_pvs.models.store import random_model

    if name:
        return resolve_model(name).path
    bundled = resolve_model(None).card
    architecture = mednext_architecture("S", 3, init_filters=16, deep_supervision=False)
    return random_model(
        folder / "random-s16",
        architecture,
        spacing=tuple(bundled.spacing),
        patch_size=tuple(bundled.patch_size),
        step_size=1.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="model name or directory (default: random S-16 in the bundled model's layout)"
    )
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child[0], Path(args.child[1]), args.threads)
        return

    from mednet_pvs.inference.footprint import network_voxels, segmentation_memory_gb
    from mednet_pvs.models.card import ModelCard

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model_dir(args.model, folder)
        card = ModelCard.load(model)
        print(f"model {model} ({card.name}), network spacing {card.spacing} mm, window {card.patch_size}")
        print(
            "| case | image voxels (M) | network voxels (M) | peak (GB) "
            "| estimate (GB) | peak / estimate | seconds |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in args.cases:
            shape, zooms = CASES[name]
            image = folder / name / "image.nii.gz"
            image.parent.mkdir()
            _phantom(image, shape, zooms)
            command = [
                sys.executable,
                __file__,
                "--threads",
                str(args.threads),
                "--child",
                str(model),
                str(image),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                print(f"| {name} | failed: {result.stderr.strip().splitlines()[-1]} |")
                continue
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            estimate = segmentation_memory_gb(
                card.architecture, card.patch_size, card.spacing, False, (shape, zooms)
            )
            peak_gb = figures["peak_mib"] * 2**20 / 1e9
            resampled = network_voxels((shape, zooms), card.spacing)
            print(
                f"| {name} | {np.prod(shape) / 1e6:.1f} | {resampled / 1e6:.1f} "
                f"| {peak_gb:.2f} | {estimate:.1f} "
                f"| {peak_gb / estimate:.2f} | {figures['seconds']:.0f} |"
            )


if __name__ == "__main__":
    main()
