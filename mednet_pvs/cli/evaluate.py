"""``mednet-pvs-eval PRED GT [--regions R] [--out DIR]``: score PVS masks against a reference.

PRED and GT are mask files or folders (``*_desc-pvs_mask.nii.gz``, paired by BIDS entities, e.g. a
mednet-pvs output folder against ``derivatives/groundtruth`` of ``mednet-pvs-synth``). Writes
``evaluation.tsv`` (per case and region), ``evaluation_group.tsv`` (agreement across cases),
``evaluation_distractors.tsv`` when the reference has distractors, JSON column sidecars, and an
HTML/PNG summary. Exit codes: 0 done, 1 unreadable or mismatched images, 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mednet_pvs import __version__
from mednet_pvs.cli.run import setup_logging
from mednet_pvs.errors import MednetPVSError, UsageError

__all__ = ["build_parser", "main"]

LOGGER = logging.getLogger("mednet_pvs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mednet-pvs-eval",
        description="Evaluate predicted PVS masks against reference masks: voxel Dice, sensitivity, "
        "precision, HD95, detection F1 (any-overlap and one-to-one IoU > 0.1 rules), count and volume "
        "differences per subject and region, and Spearman / Lin's CCC across subjects.",
    )
    parser.add_argument("prediction", type=Path, help="predicted mask file or folder")
    parser.add_argument("reference", type=Path, help="reference (ground truth) mask file or folder")
    parser.add_argument(
        "--regions", type=Path,
        help="PVS region dseg file or folder (mednet_pvs.regions.lut labels); default: the reference's "
        "*_seg-pvsregions_dseg.nii.gz",
    )  # fmt: skip
    parser.add_argument(
        "--reference-objects", choices=("clusters", "instances"), default="clusters",
        help="reference PVS for detection: 26-connected clusters of the reference mask (default; a perfect "
        "prediction scores 1) or the reference's *_desc-pvsinstances_dseg PVS instances",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder (default: current folder)")
    parser.add_argument(
        "--allow-missing", action="store_true",
        help="skip references without prediction and predictions without reference instead of failing",
    )  # fmt: skip
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0, help="more logging")
    parser.add_argument("--version", action="version", version=f"mednet-pvs-eval {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    try:
        from mednet_pvs.metrics.evaluate import evaluate, find_cases
        from mednet_pvs.metrics.report import write_evaluation

        cases = find_cases(args.prediction, args.reference, args.regions, allow_missing=args.allow_missing)
        result = evaluate(cases, use_instances=args.reference_objects == "instances")
        written = write_evaluation(result, args.out)
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return 1
    whole = result.group[(result.group.region == "whole_brain")].iloc[0]
    LOGGER.info(
        "%d cases: mean Dice %.3f, mean detection F1 %.3f (any overlap) / %.3f (IoU > 0.1); wrote %s",
        whole.n_cases,
        whole.dice_mean,
        whole.any_f1_mean,
        whole.iou_f1_mean,
        ", ".join(p.name for p in written),
    )
    return 0
