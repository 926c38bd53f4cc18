"""One MedNeXt window forward pass: eager vs frozen oneDNN graph vs ``torch.compile``, on the CPU.

Each mode runs in its own process (so its peak resident memory is its own) with a seeded random
MedNeXt of the given size, width and window: the seconds to prepare the mode (trace and freeze, or
compile on the first call), the mean seconds per window over ``--repeats`` calls after one warm-up,
the peak RSS, and the largest difference from the eager output. ``torch.compile`` starts from an
empty Inductor cache, as a first run in a fresh container does. This is what chose frozen graphs
for :mod:`mednet_pvs.inference.frozen`; benchmarks/inference_compare.py measures whole volumes.

    python benchmarks/frozen_graphs.py --width 16 --patch 64 --modes eager,frozen,compile
    python benchmarks/frozen_graphs.py --width 32 --patch 128 --modes eager,frozen --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

MODES = ("eager", "frozen", "compile")


def run_child(args: argparse.Namespace) -> None:
    """Prepare one mode, time it, and print a JSON line of figures."""
    import torch

    from mednet_pvs.inference.frozen import freeze_for_cpu
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.networks import build_network

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_network(
        mednext_architecture(args.size, args.kernel, args.width, deep_supervision=True)
    ).eval()
    x = torch.randn(1, 1, args.patch, args.patch, args.patch)
    with torch.inference_mode():
        reference = net(x)
        start = time.perf_counter()
        if args.child == "frozen":
            runner = freeze_for_cpu(net, x)
        elif args.child == "compile":
            runner = torch.compile(net, dynamic=False)
        else:
            runner = net
        output = runner(x)  # warm-up; compiles for torch.compile
        prepare = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.repeats):
            runner(x)
        per_window = (time.perf_counter() - start) / args.repeats
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    difference = float((output - reference).abs().max())
    print(json.dumps({"prepare": prepare, "per_window": per_window, "peak_mib": peak, "diff": difference}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="S", choices=["S", "B", "M", "L"])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="first-stage filters")
    parser.add_argument("--patch", type=int, default=64, help="window edge in voxels")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    print(
        f"MedNeXt-{args.size}-k{args.kernel}, {args.width} filters, {args.patch}^3 window, "
        f"{args.threads} thread(s), {args.repeats} timed calls"
    )
    print(
        f"{'mode':8s} {'prepare s':>10s} {'s/window':>9s} {'x eager':>8s} {'peak MiB':>9s} {'max|diff|':>10s}"
    )
    eager_time = None
    for mode in [m for m in args.modes.split(",") if m]:
        command = [sys.executable, __file__, "--child", mode] + [
            f"--{name}={getattr(args, name)}"
            for name in ("size", "kernel", "width", "patch", "repeats", "threads")
        ]
        with tempfile.TemporaryDirectory() as cache:  # a cold compile, as a fresh container sees it
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        eager_time = row["per_window"] if mode == "eager" else eager_time
        speedup = eager_time / row["per_window"] if eager_time else float("nan")
        print(
            f"{mode:8s} {row['prepare']:10.1f} {row['per_window']:9.3f} {speedup:8.2f} "
            f"{row['peak_mib']:9.0f} {row['diff']:10.2e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
