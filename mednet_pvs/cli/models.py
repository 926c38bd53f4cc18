"""``mednet-pvs-models``: list, inspect, import, verify and remove model directories.

Models are found by name among the bundled ones, then in ``$MEDNET_PVS_HOME/models`` (default
``~/.cache/mednet-pvs/models``), or by path: the lookup ``mednet-pvs --model`` uses.
Exit codes: 0 ok, 1 failure (e.g. a sha256 mismatch or an unsafe pickle), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

from mednet_pvs import __version__
from mednet_pvs.cli.run import EXIT_FAILED, EXIT_OK, setup_logging
from mednet_pvs.errors import MednetPVSError, ModelError, UsageError
from mednet_pvs.models.networks import load_fold
from mednet_pvs.models.nnunet_v1 import DEFAULT_CHECKPOINT, import_v1_models
from mednet_pvs.models.registry import ResolvedModel, list_models, models_home, resolve_model

__all__ = ["build_parser", "main"]

LOGGER = logging.getLogger("mednet_pvs")


def build_parser() -> argparse.ArgumentParser:
    """The ``mednet-pvs-models`` parser with its five sub-commands."""
    parser = argparse.ArgumentParser(
        prog="mednet-pvs-models",
        description="Manage mednet-pvs model directories (model.json + fold_<k>.safetensors). "
        "Models are looked up among the bundled ones, then in $MEDNET_PVS_HOME/models "
        f"(now {models_home()}), or by path.",
    )
    parser.add_argument("--version", action="version", version=f"mednet-pvs-models {__version__}")
    parser.add_argument("-v", "--verbose", dest="verbosity", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("list", help="list the bundled and imported models")

    info = commands.add_parser("info", help="show a model's card (model.json)")
    info.add_argument("model", metavar="NAME|PATH")
    info.add_argument("--json", action="store_true", help="print the whole model.json")

    imp = commands.add_parser(
        "import",
        help="import a published nnU-Net v1 trained-model folder (MedNet-PVS, PINGU)",
        description="Import nnU-Net v1 models. SRC may be a folder holding several tasks (one model is "
        "imported per trainer folder), a Task folder, a <trainer>__<plans> folder or a single fold_<k> "
        "folder (that fold only). Pickles are read with a restricted loader; nothing is written unless "
        "every fold converts.",
    )
    imp.add_argument("source", type=Path, metavar="SRC")
    imp.add_argument("--name", help="name of the imported model (only when SRC holds one model; see --task)")
    imp.add_argument(
        "--task", help="import only trainer folders whose task or folder name contains this text"
    )
    imp.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="folder to write the model directory into (default: the user store)",
    )
    imp.add_argument("--overwrite", action="store_true", help="replace an existing model of the same name")
    imp.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="checkpoint file stem inside fold_<k>")
    imp.add_argument(
        "--contrast", help="input contrast (BIDS suffix, e.g. T2w) if the plans name it otherwise"
    )
    imp.add_argument(
        "--licence", "--license", dest="licence", help="licence of the weights, recorded in model.json"
    )
    imp.add_argument("--citation", help="citation of the published model, recorded in model.json")
    imp.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load the .model/.pkl files with unrestricted pickle (it can execute code: trusted files only)",
    )

    verify = commands.add_parser("verify", help="check every weight file's sha256 and that it loads")
    verify.add_argument("model", metavar="NAME|PATH")

    remove = commands.add_parser("remove", help="delete an imported model from the user store")
    remove.add_argument("model", metavar="NAME")
    return parser


def _summary(model: ResolvedModel) -> str:
    card = model.card
    arch = card.architecture
    family = arch.get("family", "?")
    if family == "mednext":
        family = f"MedNeXt-{arch.get('size', '?')}-k{arch.get('kernel_size', '?')}"
    elif family == "generic_unet":
        family = "nnU-Net UNet"
    folds = ",".join(str(k) for k in card.folds)
    contrasts = "/".join([*card.contrasts, *(f"{c}(inv)" for c in card.inverted_contrasts)])
    return f"{card.name:40s} {model.origin:8s} {family:18s} {contrasts:10s} folds {folds:10s} {model.path}"


def _list() -> int:
    models = list_models()
    if not models:
        LOGGER.info(
            "no models installed; import one with `mednet-pvs-models import` (store: %s)", models_home()
        )
        return EXIT_OK
    for model in models:
        print(_summary(model))
    return EXIT_OK


def _info(name: str, as_json: bool) -> int:
    model = resolve_model(name)
    card = model.card
    if as_json:
        print(json.dumps(card.to_dict(), indent=2))
        return EXIT_OK
    provenance = card.provenance
    lines = [
        _summary(model),
        f"  description: {card.description}",
        f"  labels: {card.labels}; threshold {card.threshold}"
        + "".join(f", {c} {t}" for c, t in card.contrast_thresholds.items()),
        f"  spacing {card.spacing} mm, patch {card.patch_size}, axes {card.axes}",
        f"  mirror axes {card.mirror_axes}, step {card.step_size}",
        f"  normalisation: {card.normalization}",
        f"  source: {provenance.get('source', 'unknown')}",
        f"  trainer: {provenance.get('trainer', 'n/a')}; plans: {provenance.get('plans_identifier', 'n/a')}",
        f"  licence: {provenance.get('licence', 'unknown')}",
        *(f"  cite: {c}" for c in provenance.get("citation", [])),
        *(f"  metric {k}: {v}" for k, v in card.metrics.items()),
    ]
    print("\n".join(lines))
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    destination = args.dest if args.dest is not None else models_home()
    written = import_v1_models(
        args.source,
        destination,
        name=args.name,
        task=args.task,
        overwrite=args.overwrite,
        checkpoint=args.checkpoint,
        trust_pickle=args.trust_pickle,
        contrast=args.contrast,
        licence=args.licence,
        citation=args.citation,
    )
    for path in written:
        LOGGER.info("wrote %s; use it with --model %s", path, path.name if args.dest is None else path)
    return EXIT_OK


def _verify(name: str) -> int:
    model = resolve_model(name)
    for fold in model.card.folds:
        load_fold(model.card, model.path, fold)  # checks the sha256 first, then that the weights fit
        LOGGER.info("%s fold %d: sha256 ok, weights load", model.card.name, fold)
    return EXIT_OK


def _remove(name: str) -> int:
    model = resolve_model(name)
    if model.origin != "user":
        raise ModelError(
            f"{model.path}: is a {model.origin} model; only models in {models_home()} can be removed"
        )
    shutil.rmtree(model.path)
    LOGGER.info("removed %s", model.path)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbosity)
    try:
        if args.command == "list":
            return _list()
        if args.command == "info":
            return _info(args.model, args.json)
        if args.command == "import":
            if args.name is not None and (not args.name or "/" in args.name or args.name.startswith(".")):
                raise UsageError(
                    f"--name {args.name!r}: give a plain name (no '/' and not starting with '.')"
                )
            return _import(args)
        if args.command == "verify":
            return _verify(args.model)
        return _remove(args.model)
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return EXIT_FAILED
    return EXIT_OK
