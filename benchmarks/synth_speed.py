"""Phantom generator and evaluation speed: seconds per subject for the main configurations.

Times :func:`mednet_pvs.synth.generate_subject` (after one warm-up call that loads the anatomy and
its cached fields) for whole-brain 1 mm subjects with one and three contrasts, an anisotropic
0.5x0.5x2 mm subject, and the training fast path (``crop_mm``), then :func:`evaluate_case` of a
whole-brain ground truth against itself. Prints the median of ``--repeats`` seeds per setting and
the process's peak resident memory. Wall time depends on what else runs on the machine; CPU time
(``time.process_time``, all threads of this process) much less so, so both are printed.

    PYTHONPATH=. python benchmarks/synth_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path

from mednet_pvs.metrics import evaluate_case, find_cases
from mednet_pvs.synth import SynthConfig, generate_subject, write_subject

LOGGER = logging.getLogger("benchmark")

SETTINGS = {
    "whole brain 1 mm, T2w": (("T2w",), SynthConfig(pvs_grade=3)),
    "whole brain 1 mm, T2w+T1w+FLAIR": (("T2w", "T1w", "FLAIR"), SynthConfig(pvs_grade=3)),
    "whole brain 0.5x0.5x2 mm, T2w": (("T2w",), SynthConfig(pvs_grade=3, voxel_size=(0.5, 0.5, 2.0))),
    "crop 96 mm 1 mm, T2w (fast path)": (("T2w",), SynthConfig(pvs_grade=3, crop_mm=(96.0, 96.0, 96.0))),
    "crop 64 mm 1 mm, T2w (fast path)": (("T2w",), SynthConfig(pvs_grade=3, crop_mm=(64.0, 64.0, 64.0))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="seeds per setting (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    generate_subject(0, ("T2w",), SynthConfig(crop_mm=(32.0, 32.0, 32.0)))  # warm-up: anatomy, cached fields
    for name, (contrasts, config) in SETTINGS.items():
        seconds, cpu = [], []
        for seed in range(1, args.repeats + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            phantom = generate_subject(seed, contrasts, config)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        LOGGER.info(
            "%-36s median %.2f s wall (min %.2f, max %.2f), %.2f s CPU per subject; last grid %s, %d PVS",
            name,
            statistics.median(seconds),
            min(seconds),
            max(seconds),
            statistics.median(cpu),
            phantom.grid.shape,
            phantom.participant["n_pvs"],
        )

    phantom = generate_subject(1, ("T2w",), SynthConfig(pvs_grade=3))
    with tempfile.TemporaryDirectory() as folder:
        write_subject(phantom, folder, "01")
        truth = Path(folder) / "derivatives" / "groundtruth"
        case = find_cases(truth, truth)[0]
        start, start_cpu = time.perf_counter(), time.process_time()
        rows, _ = evaluate_case(case)
        LOGGER.info(
            "evaluate_case, whole brain %s, %d regions rows: %.2f s wall, %.2f s CPU",
            phantom.grid.shape,
            len(rows),
            time.perf_counter() - start,
            time.process_time() - start_cpu,
        )
    LOGGER.info("peak resident memory %.0f MiB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    main()
