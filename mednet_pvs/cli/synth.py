"""``mednet-pvs-synth OUT --subjects N``: write synthetic PVS phantoms as a BIDS dataset.

The images go to ``OUT`` (raw BIDS), the exact ground truth to ``OUT/derivatives/groundtruth``.
Subject ``i`` is generated from a seed derived from ``--seed`` and ``i``, so one subject can be
regenerated alone (``--subjects 1 --first-index i``). Exit codes: 0 done, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mednet_pvs import __version__
from mednet_pvs.cli.run import setup_logging
from mednet_pvs.errors import MednetPVSError, UsageError

__all__ = ["build_parser", "main"]

LOGGER = logging.getLogger("mednet_pvs")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    from mednet_pvs.synth.contrast import CONTRASTS

    parser = argparse.ArgumentParser(
        prog="mednet-pvs-synth",
        description="Generate synthetic brain MRI phantoms with perivascular spaces (PVS) and their exact "
        "ground truth, as a BIDS dataset (images) with a BIDS-Derivatives dataset (derivatives/groundtruth).",
    )
    parser.add_argument("out_dir", type=Path, help="output BIDS dataset folder (created if needed)")
    parser.add_argument(
        "--subjects", type=_positive_int, required=True, help="number of subjects to generate"
    )
    parser.add_argument(
        "--contrasts", nargs="+", choices=list(CONTRASTS), default=["T2w", "T1w", "FLAIR"],
        help="contrasts per subject, all from the same anatomy (default: T2w T1w FLAIR)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="base seed of the dataset (default 0)")
    parser.add_argument(
        "--first-index", type=_positive_int, default=1,
        help="index of the first subject (default 1); with --subjects 1 regenerates one subject",
    )  # fmt: skip
    parser.add_argument(
        "--voxel-size", type=float, nargs=3, metavar=("X", "Y", "Z"), help="output voxel size (mm)"
    )
    parser.add_argument(
        "--random-voxel-size", action="store_true",
        help="draw an (often anisotropic) voxel size per subject; recorded in participants.tsv",
    )  # fmt: skip
    parser.add_argument(
        "--crop-mm", type=float, nargs=3, metavar=("X", "Y", "Z"),
        help="fast path: write a random box of this size (mm) around PVS instead of the whole brain",
    )  # fmt: skip
    parser.add_argument(
        "--pvs-grade", type=int, choices=range(5), help="fixed PVS burden grade 0-4 (default random)"
    )
    parser.add_argument("--no-distractors", action="store_true", help="no WMH, lacunes or flow-void vessels")
    parser.add_argument(
        "--gt-threshold", type=float,
        help="partial-volume fraction from which a voxel is PVS in the ground truth (default 0.5)",
    )  # fmt: skip
    parser.add_argument("--anatomy", nargs="+", help="bundled anatomies to draw from (default: all)")
    parser.add_argument(
        "--config-file", type=Path,
        help="JSON file with generator settings (SynthConfig fields); options given here override it",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0, help="more logging")
    parser.add_argument("--version", action="version", version=f"mednet-pvs-synth {__version__}")
    return parser


def _config(args: argparse.Namespace):
    from mednet_pvs.synth.config import SynthConfig

    values: dict[str, object] = {}
    if args.config_file:
        try:
            values.update(json.loads(args.config_file.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{args.config_file}: cannot read the generator settings ({exc})") from exc
    overrides = {
        "voxel_size": tuple(args.voxel_size) if args.voxel_size else None,
        "random_voxel_size": args.random_voxel_size or None,
        "crop_mm": tuple(args.crop_mm) if args.crop_mm else None,
        "pvs_grade": args.pvs_grade,
        "distractors": False if args.no_distractors else None,
        "gt_fraction_threshold": args.gt_threshold,
        "anatomies": tuple(args.anatomy) if args.anatomy else None,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SynthConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    try:
        from mednet_pvs.synth.anatomy import available_anatomies
        from mednet_pvs.synth.dataset import write_dataset

        config = _config(args)
        unknown = sorted(set(config.anatomies) - set(available_anatomies()))
        if unknown:
            raise UsageError(f"unknown anatomies {unknown}; available: {', '.join(available_anatomies())}")
        participants = write_dataset(
            args.out_dir, args.subjects, args.contrasts, args.seed, config, first_index=args.first_index
        )
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info(
        "wrote %d subjects to %s (ground truth in derivatives/groundtruth)", args.subjects, args.out_dir
    )
    LOGGER.debug("participants:\n%s", participants.to_string(index=False))
    return 0
