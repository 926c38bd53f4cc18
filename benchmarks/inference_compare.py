"""Inference speed and agreement: this engine vs nnU-Net v2's predictor vs MONAI's sliding_window_inference.

The same network and weights (a seeded random MedNeXt in the card layout the nnU-Net importer
writes: z, y, x axes, masked z-score), the same real volume, the same settings (Gaussian windows,
step 0.5, mirroring TTA on or off, the same folds and threads), run through

- ``ours``: :class:`mednet_pvs.inference.Segmenter` with its defaults (probabilities averaged, as
  nnU-Net v1), plus ablation rows (``ours[eager]`` without frozen oneDNN graphs, ``ours[no-reuse]``
  letting glibc unmap freed memory, ``ours[batch4]`` four windows x mirrorings per forward pass,
  ``ours[no-skip]`` computing windows without brain too, ``ours[step0.4]`` shifted window positions,
  whose Dice shows how much the model's output depends on where windows fall) when TTA is off;
- ``ours[v2]``: the same engine following nnU-Net v2's conventions (normalise before resampling,
  average logits, resample them before the softmax): the row the ``nnunetv2`` row is compared with;
- ``nnunetv2``: ``nnUNetPredictor.manual_initialization`` with plans/configuration objects built for
  the same model (its own preprocessing, sliding window, logit averaging and export);
- ``monai``: this engine's preprocessing and export around ``monai.inferers.sliding_window_inference``
  (Gaussian, sigma 1/8, overlap 0.5) with a softmax predictor, mirrored in a loop for TTA.

Each run is a fresh subprocess, so wall time (predict only: image array in, probabilities out) and
peak resident memory (``ru_maxrss``; ``delta`` = peak minus the RSS after loading the model) are
its own. The table compares every run's foreground (p > 0.5) with its reference run of the same
setting (``vs``: ``ours[v2]`` for nnU-Net v2, ``ours`` for the others): time ratio, Dice and the
largest absolute probability difference. Requires nnunetv2 (``pip install
mednet-pvs[bench]``).

Defaults finish in about half an hour on 2 CPU cores: the volume is resampled to 1.5 mm with 64^3
windows (12 windows per pass, resampling included) and TTA runs for S only, because MedNeXt-L-k5
with 8 mirrorings takes hours on a CPU. ``--spacing 1 --patch 128`` is the published configuration.

    PYTHONPATH=. python benchmarks/inference_compare.py
    PYTHONPATH=. python benchmarks/inference_compare.py --sizes L-k5 --tta-sizes "" --engines ours \
        --spacing 1 --patch 128
    PYTHONPATH=. python benchmarks/inference_compare.py --sizes mednet-pvs-synth-s16 --tta-sizes ""

A trained model (a name or path in ``--sizes``) runs with its own weights, spacing and window: with
a trained network the engines' outputs can be compared for equality, while a random network's
probabilities hover near 0.5 where engines that blend windows differently (nnU-Net v2 averages
logits and resamples logits; v1 and this engine average and resample probabilities) disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "M2208_T2w.nii.gz"
ENGINES = ("ours", "nnunetv2", "monai")
VARIANTS = {"ours[v2]": {"convention": "nnunet_v2"}}  # InferenceSettings overrides of reference rows
ABLATIONS = {  # InferenceSettings overrides of the ablation rows (TTA off only)
    "ours[eager]": {"freeze": False},
    "ours[no-reuse]": {"reuse_memory": False},
    "ours[batch4]": {"batch_size": 4},
    "ours[no-skip]": {"skip_empty_windows": False},
    "ours[step0.4]": {"step_size": 0.4},  # other window positions: how much the model depends on them
}
REFERENCE = {"nnunetv2": "ours[v2]"}  # the run each row is compared with; "ours" otherwise


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _conformed(image_path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    from mednet_pvs.preproc.conform import conform, load_anatomical

    image = conform(load_anatomical(image_path))
    return np.asarray(image.dataobj, np.float32), tuple(float(z) for z in image.header.get_zooms()[:3])


def _nnunet_v2_predictor(card, networks, tta: bool):  # type: ignore[no-untyped-def]
    """nnU-Net v2's predictor set up for ``card`` with the same network and fold weights."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resampling = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    plans = {
        "dataset_name": "Dataset999_Benchmark",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(card.spacing),
        "original_median_shape_after_transp": list(card.patch_size),
        "image_reader_writer": "NibabelIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(card.patch_size),
                "median_image_size_in_voxels": list(card.patch_size),
                "spacing": list(card.spacing),
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [bool(card.normalization.get("use_mask"))],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": resampling,
                "resampling_fn_seg_kwargs": {**resampling, "is_seg": True, "order": 1},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {**resampling, "order": 1},
                "architecture": {
                    "network_class_name": "monai.networks.nets.MedNeXt",
                    "arch_kwargs": {},
                    "_kw_requires_import": [],
                },
                "batch_dice": False,
            }
        },
        "experiment_planner_used": "manual (mednet-pvs benchmark)",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1.0,
                "mean": 0.0,
                "median": 0.0,
                "min": 0.0,
                "percentile_00_5": 0.0,
                "percentile_99_5": 1.0,
                "std": 1.0,
            }
        },
    }
    dataset_json = {
        "channel_names": {"0": card.contrasts[0]},
        "labels": {"background": 0, "PVS": 1},
        "numTraining": 0,
        "file_ending": ".nii.gz",
    }
    plans_manager = PlansManager(plans)
    predictor = nnUNetPredictor(
        tile_step_size=card.step_size,
        use_gaussian=True,
        use_mirroring=tta,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        networks[0],
        plans_manager,
        plans_manager.get_configuration("3d_fullres"),
        [net.state_dict() for net in networks],
        dataset_json,
        "benchmark",
        tuple(card.mirror_axes),
    )
    return predictor


def run_child(args: argparse.Namespace) -> None:
    """One engine, one setting: write the foreground probability and print a JSON line of figures."""
    import torch

    from mednet_pvs.inference.engine import InferenceSettings, Segmenter, paste_into_image
    from mednet_pvs.inference.preprocessing import preprocess_case
    from mednet_pvs.inference.sliding_window import mirror_combinations
    from mednet_pvs.models.card import ModelCard
    from mednet_pvs.models.networks import load_fold

    torch.set_num_threads(args.threads)
    image, spacing = _conformed(args.image)
    card = ModelCard.load(args.model)
    options = {"device": "cpu", "tta": args.child_tta, "folds": card.folds, "step_size": 0.5}
    options |= {"threads": args.threads, "progress": False}
    options |= {**VARIANTS, **ABLATIONS}.get(args.child, {})
    settings = InferenceSettings(**options)  # type: ignore[arg-type]
    axes = list(card.axes)
    if args.child.startswith("ours"):
        segmenter = Segmenter(args.model, card, settings)
        predict = lambda: segmenter.predict(image, spacing)[1]  # noqa: E731
    else:
        networks = [load_fold(card, args.model, k) for k in card.folds]
        if args.child == "nnunetv2":
            predictor = _nnunet_v2_predictor(card, networks, args.child_tta)

            def predict() -> np.ndarray:
                data = np.transpose(image, axes)[None]
                properties = {"spacing": [spacing[a] for a in axes]}
                _, probabilities = predictor.predict_single_npy_array(data, properties, None, None, True)
                return np.transpose(probabilities[1], list(np.argsort(axes))).astype(np.float32)
        else:
            from monai.inferers import sliding_window_inference

            def predict() -> np.ndarray:
                data = np.transpose(image, axes)[None]
                case = preprocess_case(
                    data,
                    np.asarray(spacing)[axes],
                    np.asarray(card.spacing),
                    bool(card.normalization.get("use_mask")),
                )
                x = torch.from_numpy(case.data[None])
                flips = mirror_combinations(card.mirror_axes) if args.child_tta else [()]
                total = torch.zeros((1, 2, *x.shape[2:]))
                with torch.inference_mode():
                    for net in networks:
                        for dims in flips:
                            out = sliding_window_inference(
                                torch.flip(x, dims) if dims else x,
                                card.patch_size,
                                1,
                                lambda t, net=net: torch.softmax(net(t), 1),
                                overlap=0.5,
                                mode="gaussian",
                                sigma_scale=0.125,
                                padding_mode="constant",
                                cval=0.0,
                            )
                            total += torch.flip(out, dims) if dims else out
                probabilities = (total[0] / (len(flips) * len(networks))).numpy()
                return paste_into_image(probabilities, case, data.shape[1:], axes)[1]

    baseline = _peak_rss_mib()
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    foreground = predict()
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    np.save(args.out, foreground.astype(np.float32))
    peak = _peak_rss_mib()
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak, "delta_mib": peak - baseline}
        )
    )


def _run(engine: str, model: Path, tta: bool, args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--model",
        str(model),
        "--out",
        str(out),
        "--image",
        str(args.image),
        "--threads",
        str(args.threads),
    ] + (["--child-tta"] if tta else [])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _agreement(ours: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    a, b = ours > 0.5, other > 0.5
    dice = 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)
    return float(dice), float(np.abs(ours - other).max())


def _fit_confident_head(net, window: np.ndarray, mask: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Refit the output head so that the network segments bright voxels confidently (in place).

    A random network's logits change sign from one window to the next, so engines that blend windows
    differently (nnU-Net v2 averages logits, v1 and this engine probabilities) disagree in ways a
    trained network would not. As the nnU-Net v1 fixture does, the class-1 row of ``out_0`` becomes
    the class-0 row plus k * v, with v least-squares fitted on the centre window to +1 for the
    brightest 5 % of brain voxels and -1 elsewhere, and k giving a median logit gap of 10.
    """
    import torch

    features = {}
    hook = net.out_0.register_forward_hook(lambda module, inputs, output: features.update(x=inputs[0]))
    with torch.inference_mode():
        net(torch.from_numpy(window[None]))
    hook.remove()
    x = features["x"][0].reshape(features["x"].shape[1], -1).T.double().numpy()
    intensity = window[0].reshape(-1)
    threshold = np.quantile(intensity[mask.reshape(-1)], 0.95)
    target = np.where(intensity > threshold, 1.0, -1.0)
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    coefficients = np.linalg.lstsq(design, target, rcond=None)[0]
    scale = 10.0 / np.median(np.abs(design @ coefficients))
    with torch.no_grad():
        weight, bias = (
            net.out_0.conv_out.weight,
            net.out_0.conv_out.bias,
        )  # ConvTranspose: [in, classes, 1, 1, 1]
        weight[:, 1] = weight[:, 0] + torch.from_numpy(scale * coefficients[:-1]).float()[:, None, None, None]
        bias[1] = bias[0] + float(scale * coefficients[-1])


def _model(folder: Path, size: str, args: argparse.Namespace) -> Path:
    """A seeded random MedNeXt (importer card layout, heads fitted on the volume), or a trained model."""
    from mednet_pvs.inference.preprocessing import preprocess_case
    from mednet_pvs.models.card import ModelCard
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.networks import load_fold
    from mednet_pvs.models.store import random_model, write_model_dir

    if not re.fullmatch(r"[SBML]-k[357]", size):  # a trained model: its own weights and settings
        from mednet_pvs.models.registry import resolve_model

        return resolve_model(size).path
    name, kernel = size.split("-k")
    arch = mednext_architecture(name, int(kernel), 32, deep_supervision=True, v1_down_blocks=True)
    directory = random_model(
        folder / size,
        arch,
        name=size,
        contrasts=("T2w",),
        spacing=(args.spacing,) * 3,
        patch_size=(args.patch,) * 3,
        folds=tuple(range(args.folds)),
        seed=args.seed,
        axes=[2, 1, 0],
        normalization={"scheme": "zscore", "use_mask": True},
    )
    card = ModelCard.load(directory)
    image, spacing = _conformed(args.image)
    axes = list(card.axes)
    case = preprocess_case(
        np.transpose(image, axes)[None], np.asarray(spacing)[axes], np.asarray(card.spacing), True
    )
    centre = tuple(
        slice(max(0, (n - args.patch) // 2), max(0, (n - args.patch) // 2) + args.patch)
        for n in case.data.shape[1:]
    )
    window, mask = case.data[(slice(None), *centre)], case.mask[centre]
    states = []
    for fold in card.folds:
        net = load_fold(card, directory, fold)
        _fit_confident_head(net, np.ascontiguousarray(window), mask)
        states.append(net.state_dict())
    return write_model_dir(directory, card, states, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="NIfTI volume (default: M2208_T2w)")
    parser.add_argument(
        "--sizes",
        default="S-k3,L-k5",
        help="MedNeXt sizes (random weights), or names/paths of trained model directories, comma-separated",
    )
    parser.add_argument("--tta-sizes", default="S-k3", help="sizes also run with TTA (8 mirrorings)")
    parser.add_argument(
        "--tta-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run every size with TTA off (--no-tta-off: only the --tta-sizes runs)",
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    parser.add_argument(
        "--ablations",
        default=",".join(ABLATIONS),
        help="ablation rows run with TTA off, comma-separated ('' for none; default: all)",
    )
    parser.add_argument("--spacing", type=float, default=1.5, help="model spacing in mm (default 1.5)")
    parser.add_argument("--patch", type=int, default=64, help="window edge in voxels (default 64)")
    parser.add_argument("--folds", type=int, default=1, help="folds (random weights each)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every engine (default 1: steadiest on a shared machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-tta", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    engines = [e for e in args.engines.split(",") if e]
    unknown = [a for a in args.ablations.split(",") if a and a not in ABLATIONS]
    if unknown:
        parser.error(f"unknown ablations {unknown}; choose from {', '.join(ABLATIONS)}")
    print(
        f"image {args.image.name}; model spacing {args.spacing} mm, window {args.patch}^3, step 0.5, "
        f"{args.folds} fold(s), {args.threads} threads; load average {os.getloadavg()[0]:.1f} "
        "(shared machine: compare ratios within this run)"
    )
    header = (
        f"{'model':6s} {'TTA':4s} {'engine':15s} {'vs':9s} {'wall s':>8s} {'x vs':>7s} {'CPU s':>8s} "
        f"{'x vs':>7s} {'peak MiB':>9s} {'delta MiB':>9s} {'Dice':>7s} {'max|dp|':>8s}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for size in [s for s in args.sizes.split(",") if s]:
            model = _model(folder, size, args)
            settings = ([False] if args.tta_off else []) + (
                [True] if size in args.tta_sizes.split(",") else []
            )
            for tta in settings:
                rows = list(engines)
                if "nnunetv2" in engines and "ours" in engines:
                    rows.insert(rows.index("ours") + 1, "ours[v2]")
                if not tta and "ours" in engines:
                    rows += [a for a in args.ablations.split(",") if a]
                results, outputs = {}, {}
                for engine in rows:
                    out = folder / f"{size}_{tta}_{engine}.npy"
                    results[engine] = _run(engine, model, tta, args, out)
                    outputs[engine] = np.load(out)
                    reference = REFERENCE.get(engine, "ours")
                    if reference not in results:
                        reference = engine
                    dice, diff = _agreement(outputs[reference], outputs[engine])
                    row, base = results[engine], results[reference]
                    print(
                        f"{size:6s} {'on' if tta else 'off':4s} {engine:15s} {reference:9s} "
                        f"{row['seconds']:8.1f} {row['seconds'] / base['seconds']:7.2f} "
                        f"{row['cpu_seconds']:8.1f} {row['cpu_seconds'] / base['cpu_seconds']:7.2f} "
                        f"{row['peak_mib']:9.0f} {row['delta_mib']:9.0f} {dice:7.4f} {diff:8.2e}",
                        flush=True,
                    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
