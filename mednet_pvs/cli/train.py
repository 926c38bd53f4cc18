"""``mednet-pvs-train [BIDS_DIR] OUT_MODEL_DIR``: train MedNeXt on labelled BIDS data and/or phantoms.

Exit codes: 0 a model directory was written (training may be unfinished under a time budget; see
the log), 1 a data or model error (message names the file), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from mednet_pvs import __version__
from mednet_pvs.cli.parser import _add, _non_negative, _positive_int
from mednet_pvs.cli.run import EXIT_FAILED, EXIT_OK, setup_logging
from mednet_pvs.config import Config
from mednet_pvs.errors import MednetPVSError, UsageError

__all__ = ["build_parser", "config_from_args", "main"]

LOGGER = logging.getLogger("mednet_pvs")


def _fold(text: str) -> list[int] | None:
    if text == "all":
        return None
    try:
        return [int(k) for k in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"--fold {text!r}: give 'all' or fold numbers such as 0 or 0,2"
        ) from exc


def _json_object(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{path}: cannot be read as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"{path}: must hold a JSON object of phantom settings")
    return data


def build_parser() -> argparse.ArgumentParser:
    """The ``mednet-pvs-train`` parser (hyphen and underscore spellings of every option)."""
    parser = argparse.ArgumentParser(
        prog="mednet-pvs-train",
        description="Train a MedNeXt PVS segmentation model (k-fold cross-validation) on a BIDS dataset with "
        "PVS masks in a derivatives folder, on generated phantoms, or both; writes a model directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="[BIDS_DIR] OUT_MODEL_DIR",
        help="the BIDS dataset (omit it with --synthetic alone) and the model directory to write",
    )
    parser.add_argument("--version", action="version", version=f"mednet-pvs-train {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0, help="more logging")

    data = parser.add_argument_group("Training data")
    _add(
        data,
        "--labels",
        type=Path,
        dest="labels_dir",
        metavar="DERIV_DIR",
        help="folder with the PVS masks (default: BIDS_DIR/derivatives/groundtruth)",
    )
    _add(data, "--label-pattern", default="*_desc-pvs_mask.nii.gz", help="file-name pattern of the masks")
    _add(
        data,
        "--participant-label",
        nargs="+",
        default=[],
        dest="participants",
        metavar="LABEL",
        help="train on these participants only (default: all)",
    )
    _add(
        data,
        "--contrasts",
        nargs="+",
        default=["T2w"],
        metavar="SUFFIX",
        help="image contrasts; several give one contrast-agnostic model trained on all of them",
    )
    _add(
        data,
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="add N generated phantoms (mednet_pvs.synth)",
    )
    _add(data, "--synthetic-seed", type=int, default=0, metavar="S", help="base seed of the phantoms")
    _add(
        data,
        "--synthetic-config",
        type=_json_object,
        default={},
        metavar="JSON",
        help="JSON file of phantom settings (SynthConfig fields)",
    )

    cv = parser.add_argument_group("Cross-validation")
    _add(
        cv,
        "--folds",
        type=_positive_int,
        default=5,
        help="number of folds (1: train on everything, no validation)",
    )
    _add(
        cv,
        "--fold",
        type=_fold,
        default=None,
        dest="train_folds",
        metavar="K|all",
        help="folds to train in this invocation: 'all' or numbers such as 0 or 1,3 (default: all)",
    )
    _add(cv, "--split-seed", type=int, default=12345, help="random state of the subject-wise KFold")

    schedule = parser.add_argument_group("Optimisation")
    _add(schedule, "--epochs", type=_positive_int, default=1000)
    _add(schedule, "--iterations-per-epoch", type=_positive_int, default=250)
    _add(schedule, "--batch-size", type=_positive_int, default=2)
    _add(
        schedule,
        "--patch-size",
        type=int,
        nargs=3,
        default=[96, 96, 96],
        metavar=("X", "Y", "Z"),
        help="training and inference patch (multiples of 16)",
    )
    _add(schedule, "--learning-rate", type=float, default=3e-4, help="AdamW learning rate (MedNet-PVS: 3e-4)")
    _add(schedule, "--weight-decay", type=float, default=3e-5)
    _add(
        schedule,
        "--schedule",
        choices=["poly", "cosine"],
        default="poly",
        help="learning-rate decay per epoch",
    )
    _add(schedule, "--grad-clip", type=float, default=12.0, help="gradient norm clipping (nnU-Net: 12)")
    _add(
        schedule,
        "--foreground-fraction",
        type=float,
        default=1 / 3,
        help="share of patches centred on PVS (nnU-Net: 0.33)",
    )
    _add(
        schedule,
        "--elastic",
        action="store_true",
        help="elastic deformation in the spatial augmentation (slower)",
    )

    network = parser.add_argument_group("Network")
    _add(network, "--size", choices=["S", "B", "M", "L"], default="S", help="MedNeXt size")
    _add(network, "--kernel-size", type=int, choices=[3, 5, 7], default=3)
    _add(network, "--init-filters", type=_positive_int, default=32, help="width of the first stage")
    _add(network, "--no-deep-supervision", dest="deep_supervision", action="store_false")
    _add(
        network,
        "--spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="network voxel spacing in mm (default: median of the training images, as nnU-Net)",
    )
    _add(
        network,
        "--no-mask-normalization",
        dest="use_mask_for_norm",
        action="store_false",
        help="z-score over the whole crop instead of inside the non-zero (brain) mask",
    )
    _add(
        network, "--upkern-from", metavar="MODEL", help="initialise a larger-kernel model from MODEL (UpKern)"
    )
    _add(
        network,
        "--finetune-from",
        metavar="MODEL",
        help="start from MODEL's weights (name or path); all layers train unless --trainable-decoder-layers",
    )
    _add(
        network,
        "--trainable-decoder-layers",
        type=int,
        metavar="N",
        help="with --finetune-from: train the last N decoder stages (0-4) and the heads",
    )

    output = parser.add_argument_group("Validation and export")
    _add(
        output,
        "--val-every",
        type=_positive_int,
        default=5,
        help="fast validation every E epochs (and after the last with --export best)",
    )
    _add(output, "--val-tta", action="store_true", help="mirroring TTA in the final validation")
    _add(
        output,
        "--threshold-criterion",
        choices=["dice", "cluster_f1", "none"],
        default="dice",
        help="tune the probability threshold on the validation folds for the best mean voxel Dice or "
        "cluster detection F1 ('none': keep 0.5)",
    )
    _add(
        output,
        "--min-cluster-size",
        type=_non_negative,
        default=Config.min_cluster_size,
        metavar="MM3",
        help="score the validation masks as the app writes them, without clusters smaller than this "
        "volume (mm^3; the app's default)",
    )
    _add(
        output,
        "--export",
        choices=["last", "best"],
        default="last",
        help="weights to export: last epoch (nnU-Net's final) or best moving-average validation Dice",
    )
    _add(
        output,
        "--save-dtype",
        choices=["float32", "float16"],
        default="float32",
        help="precision of the saved weights",
    )
    _add(output, "--name", help="model name (default: the output folder's name)")
    _add(output, "--model-version", default="1.0.0")
    _add(output, "--licence", default="unspecified", help="licence of the weights, recorded in model.json")
    _add(output, "--description", default="")
    _add(
        output,
        "--inverted-contrasts",
        nargs="+",
        default=[],
        metavar="SUFFIX",
        help="contrasts the model will read with negated intensities (e.g. T1w for a T2w model), recorded "
        "in model.json; the validation subjects' labelled images of them set their own threshold",
    )
    _add(
        output,
        "--train-inverted",
        action="store_true",
        help="also train on the --inverted-contrasts images (BIDS and phantoms), negated as the engine "
        "reads them; their validation subjects' images then set those contrasts' thresholds",
    )

    run = parser.add_argument_group("Execution")
    _add(
        run,
        "-w",
        "--work-dir",
        type=Path,
        help="checkpoints, splits and caches (default: OUT_MODEL_DIR.work)",
    )
    _add(run, "--resume", action="store_true", help="continue the run in the work folder")
    _add(run, "--overwrite", action="store_true", help="replace an existing output model directory")
    _add(run, "--device", default="auto", help="auto, cpu, cuda or cuda:N")
    _add(run, "--threads", type=_positive_int, help="CPU threads for torch")
    _add(run, "--workers", type=int, default=0, help="data-loader worker processes")
    _add(run, "--deterministic", action="store_true", help="deterministic algorithms (slower on GPU)")
    _add(run, "--seed", type=int, default=0)
    _add(run, "--max-minutes", type=float, help="stop training cleanly after this long (checkpoint + model)")
    _add(
        run,
        "--stop-after-epochs",
        type=_positive_int,
        help="stop each fold after this many epochs in this invocation",
    )
    _add(run, "--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> Any:
    """A :class:`~mednet_pvs.train.config.TrainConfig` from parsed arguments."""
    from mednet_pvs.train.config import TrainConfig

    options = {k: v for k, v in vars(args).items() if k not in ("paths", "verbosity", "stop_after_epochs")}
    if len(args.paths) > 2:
        raise UsageError(f"expected [BIDS_DIR] OUT_MODEL_DIR, got {len(args.paths)} paths")
    bids_dir = args.paths[0] if len(args.paths) == 2 else None
    return TrainConfig(output_dir=args.paths[-1], bids_dir=bids_dir, **options)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    try:
        config = config_from_args(args)
        from mednet_pvs.train.run import run_training

        file_handler = logging.FileHandler(_log_path(config), encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        LOGGER.addHandler(file_handler)
        try:
            result = run_training(config, stop_after_epochs=args.stop_after_epochs)
        finally:
            LOGGER.removeHandler(file_handler)
            file_handler.close()
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return EXIT_FAILED
    if result.model_dir is None:
        LOGGER.error("no fold completed an epoch, so no model was written; give more time and use --resume")
        return EXIT_FAILED
    return EXIT_OK


def _log_path(config: Any) -> Path:
    config.work_dir.mkdir(parents=True, exist_ok=True)
    return config.work_dir / "train.log"
