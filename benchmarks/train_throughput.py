"""Seconds per training iteration and peak memory of MedNeXt-S k3 on this machine's CPU.

Each configuration (width x patch) runs in its own process, so its peak resident memory is its own:
deep-supervised Dice + CE, AdamW, batch 2, the same loss, step, memory layout (channels-last on CPU)
and denormal flushing as ``mednet-pvs-train``. Wall and CPU seconds are both printed: on a shared
machine the CPU seconds divided by the threads estimate the wall time the machine would give alone.
One configuration is repeated in PyTorch's default layout for the channels-last speed-up, and with
one thread (its CPU seconds carry no thread synchronisation; half of them bounds the 2-thread wall
time from below). Also times
the patch sampler (crop + augmentation) on a brain-sized prepared case, and turns the measured rates
into hours for training runs of a given length. Prints a table; nothing is written.

    python benchmarks/train_throughput.py [--iterations 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

CONFIGS = [(16, 64), (32, 64), (16, 96), (32, 96)]
RUNS = {"short (100 epochs x 250 it)": 100 * 250, "nnU-Net default (1000 x 250)": 1000 * 250}


def measure_step(
    init_filters: int, patch: int, iterations: int, threads: int, layout: str
) -> dict[str, float]:
    """Time forward + backward + AdamW step of MedNeXt-S k3 (batch 2) after one warm-up iteration."""
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.networks import build_network
    from mednet_pvs.train.trainer import build_loss, memory_format

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    form = memory_format(torch.device("cpu")) if layout == "train" else torch.contiguous_format
    net = build_network(mednext_architecture("S", 3, init_filters, deep_supervision=True)).train()
    net.to(memory_format=form)
    loss_fn = build_loss(5)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-4, weight_decay=3e-5)
    images = torch.randn(2, 1, patch, patch, patch).to(memory_format=form)
    labels = (torch.rand(2, 1, patch, patch, patch) > 0.98).float()
    wall, cpu = [], []
    for _ in range(iterations + 1):
        began, began_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(list(net(images)), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        optimizer.step()
        wall.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    return {
        "init_filters": init_filters,
        "patch": patch,
        "layout": layout,
        "seconds_per_iteration": float(np.median(wall[1:])),
        "cpu_seconds_per_iteration": float(np.median(cpu[1:])),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "parameters_m": sum(p.numel() for p in net.parameters()) / 1e6,
    }


def measure_sampler(patch: int, samples: int) -> float:
    """Seconds per augmented patch drawn from a 150 x 180 x 150 prepared case (1 % PVS voxels)."""
    from mednet_pvs.train.augment import Augmentation, PatchDataset, training_transforms
    from mednet_pvs.train.prepare import PreparedCase

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 150, 180, 150)).astype(np.float32)
    label = (rng.random((1, 150, 180, 150)) > 0.99).astype(np.uint8)
    flat = label[0].ravel()
    case = PreparedCase(
        "bench", image, label, np.flatnonzero(flat)[:200_000], np.flatnonzero(flat == 0)[::50]
    )
    dataset = PatchDataset(
        [case], training_transforms([patch] * 3, Augmentation()), np.array([[0, s] for s in range(samples)])
    )
    began = time.perf_counter()
    for index in range(samples):
        dataset[index]
    return (time.perf_counter() - began) / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("WIDTH", "PATCH", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        width, patch, layout = args.one
        print(json.dumps(measure_step(int(width), int(patch), args.iterations, args.threads, layout)))
        return
    print(f"load average before: {os.getloadavg()}; cores: {os.cpu_count()}; torch threads: {args.threads}")
    rows = []
    runs = [*((w, p, "train", args.threads) for w, p in CONFIGS), (*CONFIGS[0], "default", args.threads)]
    for width, patch, layout, threads in [*runs, (*CONFIGS[0], "train", 1)]:
        command = [
            sys.executable,
            __file__,
            "--one",
            str(width),
            str(patch),
            layout,
            "--iterations",
            str(args.iterations),
            "--threads",
            str(threads),
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(
            f"MedNeXt-S k3 width {width:2d} patch {patch}^3 batch 2 ({layout} layout, {threads} threads): "
            f"{row['seconds_per_iteration']:.2f} s/it wall, {row['cpu_seconds_per_iteration']:.2f} CPU s/it, "
            f"peak RSS {row['peak_rss_gib']:.2f} GiB, {row['parameters_m']:.2f} M parameters",
            flush=True,
        )
        if threads != args.threads:
            continue
        if layout == "train":
            rows.append(row)
        else:
            speedup = row["cpu_seconds_per_iteration"] / rows[0]["cpu_seconds_per_iteration"]
            print(f"channels-last speed-up (CPU seconds, width {width} patch {patch}): {speedup:.2f}x")
    torch.set_num_threads(1)
    for patch in (64, 96):
        seconds = measure_sampler(patch, 10)
        print(f"patch sampler ({patch}^3, crop + augmentation, 1 thread): {seconds:.3f} s/patch")
    print("\nestimated training hours with this machine to ourselves (CPU s/it / threads; network step only,")
    print("the sampler adds batch x s/patch per iteration unless loader workers run beside it):")
    for row in rows:
        per_iteration = row["cpu_seconds_per_iteration"] / args.threads
        estimates = ", ".join(f"{name}: {per_iteration * its / 3600:.0f} h" for name, its in RUNS.items())
        print(f"  width {row['init_filters']:2d} patch {row['patch']}^3 -> {estimates}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
