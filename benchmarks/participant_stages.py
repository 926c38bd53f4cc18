"""Wall time and peak memory of one participant, split by pipeline stage.

Runs ``mednet-pvs`` on one participant (default: sub-01 of ../shared/data/bids/bids_tiny) with the
Linear plugin and Nipype's resource monitor, then reads every node's recorded duration and peak
memory and sums them per stage. Runs ``--method frangi`` and a MedNeXt-S-sized random model
(32 filters, kernel 3, 128^3 patches, one fold; the network's weights do not change its speed).

    python benchmarks/participant_stages.py [--bids DIR] [--participant 01] [--tta|--no-tta]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from nipype.utils.filemanip import loadpkl

from mednet_pvs.cli.run import main as mednet_pvs
from mednet_pvs.models.mednext import mednext_architecture
from mednet_pvs.models.store import random_model

STAGES = {
    "conform": "conform",
    "n4": "N4",
    "skullstrip": "skull strip",
    "atlas_registration": "registration",
    "label_regions": "registration",
    "mednext": "segmentation",
    "frangi": "segmentation",
    "native_probseg": "stats",
    "native_brain_mask": "stats",
    "native_regions": "stats",
    "pvs_mask": "stats",
    "statistics": "stats",
    "report": "report",
}


def stage_table(work: Path) -> dict[str, tuple[float, float]]:
    """(seconds, peak GB) per stage from the node results in a work folder."""
    seconds: dict[str, float] = defaultdict(float)
    peak: dict[str, float] = defaultdict(float)
    for result in work.rglob("result_*.pklz"):
        name = result.parent.name
        stage = STAGES.get(name, "outputs" if name.startswith(("ds_", "merge", "collect")) else None)
        if stage is None:
            continue
        runtime = loadpkl(result).runtime
        seconds[stage] += float(getattr(runtime, "duration", 0.0) or 0.0)
        peak[stage] = max(peak[stage], float(getattr(runtime, "mem_peak_gb", 0.0) or 0.0))
    order = ["conform", "N4", "skull strip", "registration", "segmentation", "stats", "outputs", "report"]
    return {stage: (seconds[stage], peak[stage]) for stage in order if stage in seconds}


def run(bids: Path, participant: str, extra: list[str], label: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, work = Path(tmp) / "out", Path(tmp) / "work"
        argv = [
            str(bids),
            str(out),
            "participant",
            "--participant-label",
            participant,
            "-w",
            str(work),
            "--skip-bids-validation",
            "--nipype-plugin",
            "Linear",
            "--resource-monitor",
            *extra,
        ]
        started = time.perf_counter()
        code = mednet_pvs(argv)
        wall = time.perf_counter() - started
        table = stage_table(work)
    print(f"\n{label}: exit code {code}, wall time {wall:.1f} s")
    print(f"{'stage':<14}{'time (s)':>10}{'peak RSS (GB)':>15}")
    for stage, (seconds, peak_gb) in table.items():
        print(f"{stage:<14}{seconds:>10.1f}{peak_gb:>15.2f}")
    print(f"{'sum of nodes':<14}{sum(s for s, _ in table.values()):>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "bids" / "bids_tiny"
    parser.add_argument("--bids", type=Path, default=shared)
    parser.add_argument("--participant", default="01")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--methods", nargs="+", default=["frangi", "mednext"], choices=["frangi", "mednext"])
    args = parser.parse_args()
    if not args.bids.is_dir():
        sys.exit(f"{args.bids} not found; give --bids")
    for method in args.methods:
        if method == "frangi":
            run(args.bids, args.participant, ["--method", "frangi"], "--method frangi")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            arch = mednext_architecture("S", kernel_size=3, init_filters=32, deep_supervision=True)
            model = random_model(Path(tmp) / "mednext_s", arch, patch_size=(128, 128, 128), folds=(0,))
            tta = ["--tta"] if args.tta else ["--no-tta"]
            run(
                args.bids,
                args.participant,
                ["--model", str(model), *tta],
                f"MedNeXt-S k3 (32 filters, 128^3 patches, 1 fold, TTA {'on' if args.tta else 'off'})",
            )
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\npeak RSS of this process (Linear plugin: every node ran here): {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
