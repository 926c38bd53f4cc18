"""What test-time mirroring costs: the bundled model on one phantom without TTA, left-right, and all.

Generates one T2w phantom (a ``--crop-mm`` cube of brain at 1 mm, seed ``--seed``), conforms it,
and predicts its PVS probability with the bundled model (or ``--model``) three times in one
process, after one untimed warm-up run: without TTA, averaging the image and its left-right mirror
(``--tta-mirroring left-right``), and averaging every mirroring of the card (the default, 8 for 3
axes). Prints wall and CPU seconds of each, the ratio to the run without TTA, and how far each
mask (the card's threshold) is from the all-mirrorings one (Dice, and the largest probability
difference). The
accuracy of each choice on held-out phantoms comes from scripts/evaluate_heldout.py
``--tta --tta-mirroring left-right``; this script measures the cost only.

    PYTHONPATH=. python benchmarks/tta_cost.py --crop-mm 64 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from mednet_pvs.inference.engine import InferenceSettings, Segmenter
from mednet_pvs.inference.sliding_window import mirror_combinations
from mednet_pvs.metrics.voxel import voxel_counts
from mednet_pvs.models.registry import resolve_model
from mednet_pvs.preproc.conform import conform
from mednet_pvs.synth import SynthConfig, generate_subject

#: (label, tta, tta_mirroring), the last one the reference
RUNS = (("no TTA", False, "all"), ("left-right", True, "left-right"), ("all mirrorings", True, "all"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or directory (default: the bundled one)")
    parser.add_argument("--crop-mm", type=float, default=64.0, help="edge of the phantom's brain cube")
    parser.add_argument("--seed", type=int, default=9001)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    phantom = generate_subject(args.seed, ("T2w",), SynthConfig(pvs_grade=3, crop_mm=(args.crop_mm,) * 3))
    image = conform(phantom.images["T2w"])
    data = np.asarray(image.dataobj, np.float32)
    spacing = image.header.get_zooms()[:3]
    model = resolve_model(args.model)
    threshold = model.card.threshold_for("T2w")
    print(
        f"{model.card.name} {model.card.version} on a {' x '.join(map(str, data.shape))} phantom "
        f"({args.crop_mm:g} mm at 1 mm), network grid {model.card.spacing} mm, {args.threads} thread(s)"
    )
    results = {}
    for label, tta, mirroring in (RUNS[0], *RUNS):  # the first, overwritten, warms up torch and oneDNN
        settings = InferenceSettings(
            device="cpu", tta=tta, tta_mirroring=mirroring, threads=args.threads, progress=False
        )
        segmenter = Segmenter(model.path, model.card, settings)
        start, start_cpu = time.perf_counter(), time.process_time()
        probability = segmenter.foreground_probability(data, spacing, "T2w")
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        results[label] = (len(mirror_combinations(segmenter.mirror_axes)), seconds, cpu, probability)
    base = results["no TTA"][1]
    reference = results["all mirrorings"][3]
    print(f"{'':15s} passes   wall s    CPU s  x no TTA  Dice vs all  max |dp|")
    for label, (passes, seconds, cpu, probability) in results.items():
        dice = voxel_counts(probability > threshold, reference > threshold).dice
        print(
            f"{label:15s} {passes:6d} {seconds:8.1f} {cpu:8.1f} {seconds / base:9.2f} {dice:12.3f} "
            f"{np.abs(probability - reference).max():9.3f}"
        )
    print(f"peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
