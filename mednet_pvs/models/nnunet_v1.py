"""Import published nnU-Net v1 trained-model folders (MedNet-PVS MedNeXt, PINGU, MedNet-PVS nnU-Net).

A v1 results tree looks like ``[nnUNet/]3d_fullres/Task<NNN>_<name>/<trainer>__<plans id>/fold_<k>/``
with ``model_final_checkpoint.model`` (weights) and ``model_final_checkpoint.model.pkl`` (trainer
name, init arguments and the plans prediction uses) in every fold. :func:`find_v1_models` accepts any
level of that tree (a folder holding several tasks, a task, a trainer folder or one fold) and returns
one :class:`V1ModelFolder` per trainer folder. :func:`convert_v1_model` reads the pickles with the
restricted loaders of :mod:`mednet_pvs.models.safe_pickle`, rebuilds the network (MONAI MedNeXt or
DynUNet), maps the weights and writes the model card; :func:`import_v1_models` converts everything
first and writes the model directories only when all of it succeeded.

What the card records mirrors how nnU-Net v1 predicts (see the fixture MANIFEST): the stage is
``init[5]`` (3d_fullres = the last stage), spacing and patch size come from that stage of the plans
stored in the ``.pkl``, images are read by SimpleITK in reversed (z, y, x) order and then permuted by
``transpose_forward``, intensities get the 'nonCT' z-score with or without the non-zero mask, and
test-time mirroring uses the trainer's mirror axes.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mednet_pvs import __version__
from mednet_pvs.errors import ModelError, UsageError
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.generic_unet import (
    MAX_FEATURES_3D,
    convert_generic_unet_v1_state_dict,
    generic_unet_architecture,
    generic_unet_v1_keys,
)
from mednet_pvs.models.mednext import convert_mednext_v1_state_dict, mednext_v1_architecture
from mednet_pvs.models.networks import build_network, load_weights
from mednet_pvs.models.safe_pickle import load_checkpoint, load_pickle
from mednet_pvs.models.store import write_model_dir

__all__ = [
    "CITATIONS",
    "DEFAULT_CHECKPOINT",
    "ConvertedModel",
    "V1ModelFolder",
    "convert_v1_model",
    "find_v1_models",
    "import_v1_models",
]

LOGGER = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "model_final_checkpoint"
#: nnU-Net v1 network configurations (the folder above the task).
_CONFIGURATIONS = ("2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres")
#: Method citations recorded in every imported card (the model's own paper comes from --citation).
CITATIONS = {
    "nnunet": "Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a self-configuring "
    "method for deep learning-based biomedical image segmentation. Nature Methods 18, 203-211 (2021).",
    "mednext": "Roy S, Koehler G, Ulrich C, Baumgartner M, Petersen J, Isensee F, Jaeger PF, Maier-Hein KH. "
    "MedNeXt: Transformer-driven scaling of ConvNets for medical image segmentation. MICCAI 2023.",
}
#: nnU-Net modality names -> BIDS suffixes.
_CONTRASTS = {"T1": "T1w", "T1W": "T1w", "T2": "T2w", "T2W": "T2w", "FLAIR": "FLAIR", "PD": "PDw"}
_FOLD_NAME = re.compile(r"fold_(\d+)$")
_TASK_NAME = re.compile(r"Task\d+_.+")


@dataclass
class V1ModelFolder:
    """One nnU-Net v1 trainer folder (``<trainer>__<plans id>``) and the folds found in it."""

    path: Path
    folds: dict[int, Path]
    task: str
    configuration: str
    folder_name: str

    @property
    def trainer_from_folder(self) -> str | None:
        return self.folder_name.split("__", 1)[0] if "__" in self.folder_name else None

    @property
    def plans_from_folder(self) -> str | None:
        return self.folder_name.split("__", 1)[1] if "__" in self.folder_name else None


@dataclass
class ConvertedModel:
    """A model ready to be written: its card and one converted state dict per fold."""

    card: ModelCard
    states: list[dict[str, torch.Tensor]] = field(repr=False)
    source: V1ModelFolder = field(repr=False)


def _checkpoint_files(fold_dir: Path, checkpoint: str) -> tuple[Path, Path]:
    return fold_dir / f"{checkpoint}.model", fold_dir / f"{checkpoint}.model.pkl"


def _model_folder(trainer_dir: Path, folds: dict[int, Path]) -> V1ModelFolder:
    task_dir = trainer_dir.parent
    configuration = task_dir.parent.name if task_dir.parent.name in _CONFIGURATIONS else ""
    return V1ModelFolder(
        trainer_dir, dict(sorted(folds.items())), task_dir.name, configuration, trainer_dir.name
    )


def find_v1_models(source: str | Path, checkpoint: str = DEFAULT_CHECKPOINT) -> list[V1ModelFolder]:
    """Every nnU-Net v1 trainer folder at or below ``source`` (a fold folder gives just that fold).

    Raises :class:`ModelError` when ``source`` is missing or holds no ``fold_<k>/<checkpoint>.model``.
    """
    source = Path(source).expanduser()
    if not source.is_dir():
        raise ModelError(f"{source}: not a folder (give an nnU-Net v1 task, trainer or fold_<k> folder)")
    source = source.resolve()
    match = _FOLD_NAME.match(source.name)
    if match and _checkpoint_files(source, checkpoint)[0].is_file():
        return [_model_folder(source.parent, {int(match.group(1)): source})]
    grouped: dict[Path, dict[int, Path]] = {}
    for weights in sorted(source.rglob(f"{checkpoint}.model")):
        fold_match = _FOLD_NAME.match(weights.parent.name)
        if fold_match:
            grouped.setdefault(weights.parent.parent, {})[int(fold_match.group(1))] = weights.parent
    if not grouped:
        raise ModelError(
            f"{source}: no nnU-Net v1 model found (expected fold_<k>/{checkpoint}.model at or below it)"
        )
    return [_model_folder(path, folds) for path, folds in sorted(grouped.items())]


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and tuples from the plans -> JSON-friendly Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mirror_axes(fold_dir: Path) -> list[int]:
    """The trainer's mirror axes from debug.json (a copy of data_aug_params); (0, 1, 2) if absent."""
    debug = fold_dir / "debug.json"
    if debug.is_file():
        try:
            text = json.loads(debug.read_text(encoding="utf-8")).get("data_aug_params", "")
            match = re.search(r"'mirror_axes':\s*(\([^)]*\)|\[[^\]]*\])", text)
            if match:
                return sorted(int(a) for a in ast.literal_eval(match.group(1)))
        except (OSError, ValueError, SyntaxError, AttributeError) as exc:
            LOGGER.warning("%s: cannot read mirror_axes (%s); using (0, 1, 2)", debug, exc)
    return [0, 1, 2]


def _stage_plans(plans: Mapping[str, Any], stage: int, path: Path) -> Mapping[str, Any]:
    per_stage = plans.get("plans_per_stage", {})
    if stage not in per_stage:
        raise ModelError(f"{path}: the plans have no stage {stage} (stages: {sorted(per_stage)})")
    return per_stage[stage]


def _normalization(plans: Mapping[str, Any], path: Path) -> dict[str, Any]:
    schemes = dict(plans.get("normalization_schemes", {}))
    if plans.get("num_modalities", 1) != 1 or len(schemes) != 1:
        raise ModelError(
            f"{path}: {plans.get('num_modalities')} input channels; only single-channel models are supported"
        )
    if schemes.get(0) != "nonCT":
        raise ModelError(
            f"{path}: normalisation {schemes.get(0)!r} is not supported (only nnU-Net's 'nonCT' z-score)"
        )
    use_mask = bool(dict(plans.get("use_mask_for_norm", {})).get(0, False))
    return {"scheme": "zscore", "use_mask": use_mask}


def _labels(n_classes: int) -> dict[str, str]:
    if n_classes == 2:
        return {"0": "background", "1": "PVS"}
    return {"0": "background", **{str(k): f"class_{k}" for k in range(1, n_classes)}}


def _architecture(
    state_dict: Mapping[str, torch.Tensor],
    trainer: str,
    plans: Mapping[str, Any],
    stage_plans: Mapping[str, Any],
    path: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The card architecture and the converted weights of one fold."""
    if "stem.weight" in state_dict:
        arch = mednext_v1_architecture(state_dict, trainer)
        return arch, convert_mednext_v1_state_dict(state_dict, arch)
    if "conv_blocks_context.0.blocks.0.conv.weight" in state_dict:
        n_stages = generic_unet_v1_keys(state_dict)
        if int(plans.get("conv_per_stage", 2)) != 2:
            raise ModelError(
                f"{path}: conv_per_stage {plans.get('conv_per_stage')} is not supported (only 2)"
            )
        base = int(state_dict["conv_blocks_context.0.blocks.0.conv.weight"].shape[0])
        if base != int(plans.get("base_num_features", base)):
            raise ModelError(
                f"{path}: the weights start with {base} features but the plans say "
                f"{plans.get('base_num_features')}"
            )
        pools = _plain(stage_plans["pool_op_kernel_sizes"])
        if len(pools) + 1 != n_stages:
            raise ModelError(
                f"{path}: the weights have {n_stages} stages but the plans {len(pools)} pooling steps"
            )
        arch = generic_unet_architecture(
            base,
            pools,
            _plain(stage_plans["conv_kernel_sizes"]),
            in_channels=int(state_dict["conv_blocks_context.0.blocks.0.conv.weight"].shape[1]),
            out_channels=int(state_dict["seg_outputs.0.weight"].shape[0]),
            max_features=MAX_FEATURES_3D,
            deep_supervision=True,
        )
        return arch, convert_generic_unet_v1_state_dict(state_dict, arch)
    raise ModelError(
        f"{path}: weights are neither a MedNeXt v1 nor a Generic_UNet network (trainer {trainer!r})"
    )


def _default_name(folder: V1ModelFolder, arch: Mapping[str, Any]) -> str:
    if arch["family"] == "mednext":
        tag = f"mednext-{str(arch['size']).lower()}-k{arch['kernel_size']}"
    else:
        tag = "nnunet"
    task = folder.task if _TASK_NAME.match(folder.task) else folder.path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}-{tag}").lower()


def convert_v1_model(
    folder: V1ModelFolder,
    *,
    name: str | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    trust_pickle: bool = False,
    contrast: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
    description: str | None = None,
) -> ConvertedModel:
    """Read, check and convert every fold of ``folder`` (nothing is written)."""
    states: list[dict[str, torch.Tensor]] = []
    reference: dict[str, Any] | None = None
    epochs: dict[str, int] = {}
    for fold, fold_dir in folder.folds.items():
        weights_path, info_path = _checkpoint_files(fold_dir, checkpoint)
        if not info_path.is_file():
            raise ModelError(
                f"{info_path}: missing; nnU-Net v1 needs it next to {weights_path.name} (plans, trainer)"
            )
        info = load_pickle(info_path, trust=trust_pickle)
        checkpoint_data = load_checkpoint(weights_path, trust=trust_pickle)
        try:
            trainer, init, plans = str(info["name"]), info["init"], info["plans"]
            stage = int(init[5])
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ModelError(f"{info_path}: not an nnU-Net v1 model description ({exc})") from exc
        stage_plans = _stage_plans(plans, stage, info_path)
        state = {k.removeprefix("module."): v for k, v in checkpoint_data["state_dict"].items()}
        arch, converted = _architecture(state, trainer, plans, stage_plans, weights_path)
        net = build_network(arch)
        load_weights(net, converted, weights_path)
        summary = {
            "trainer": trainer,
            "architecture": arch,
            "stage": stage,
            "spacing": [float(s) for s in _plain(stage_plans["current_spacing"])],
            "patch_size": [int(p) for p in _plain(stage_plans["patch_size"])],
            "transpose_forward": [int(t) for t in _plain(plans.get("transpose_forward", [0, 1, 2]))],
            "normalization": _normalization(plans, info_path),
            "modalities": {int(k): str(v) for k, v in dict(plans.get("modalities", {})).items()},
            "plans_file": Path(str(init[0])).name,
        }
        if reference is None:
            reference = summary
        else:
            differing = sorted(k for k in summary if summary[k] != reference[k])
            if differing:
                raise ModelError(f"{fold_dir}: fold {fold} differs from the other folds in {differing}")
        states.append(converted)
        epochs[str(fold)] = int(checkpoint_data.get("epoch", -1))
    assert reference is not None  # find_v1_models never returns a folder without folds
    card = _card(folder, reference, epochs, name, checkpoint, contrast, licence, citation, description)
    return ConvertedModel(card, states, folder)


def _plans_identifier(folder: V1ModelFolder, plans_file: str) -> str:
    if folder.plans_from_folder:
        return folder.plans_from_folder
    return re.sub(r"_plans_(2|3)D\.pkl$", "", plans_file)


def _card(
    folder: V1ModelFolder,
    summary: Mapping[str, Any],
    epochs: Mapping[str, int],
    name: str | None,
    checkpoint: str,
    contrast: str | None,
    licence: str | None,
    citation: str | None,
    description: str | None,
) -> ModelCard:
    arch = summary["architecture"]
    sitk_to_xyz = [2, 1, 0]  # SimpleITK arrays are (z, y, x) of the NIfTI voxel axes
    axes = [sitk_to_xyz[t] for t in summary["transpose_forward"]]
    modality = summary["modalities"].get(0, "")
    contrasts = [contrast] if contrast else [_CONTRASTS.get(modality.upper(), modality or "unknown")]
    postprocessing = _postprocessing(folder.path)
    family = "MedNeXt" if arch["family"] == "mednext" else "nnU-Net Generic_UNet"
    citations = [CITATIONS["nnunet"]] + ([CITATIONS["mednext"]] if arch["family"] == "mednext" else [])
    provenance: dict[str, Any] = {
        "format": "nnU-Net v1 trained model",
        "source": str(folder.path),
        "task": folder.task,
        "configuration": folder.configuration or "unknown",
        "trainer": summary["trainer"],
        "plans_identifier": _plans_identifier(folder, summary["plans_file"]),
        "stage": summary["stage"],
        "checkpoint": checkpoint,
        "epochs": dict(epochs),
        "transpose_forward": summary["transpose_forward"],
        "licence": licence or "unknown (check the terms of the source you downloaded)",
        "citation": ([citation] if citation else []) + citations,
        "imported_with": f"mednet-pvs {__version__}",
    }
    if postprocessing is not None:
        provenance["postprocessing"] = postprocessing
    card = ModelCard(
        name=name or _default_name(folder, arch),
        version="1.0",
        architecture=arch,
        contrasts=contrasts,
        labels=_labels(int(arch["out_channels"])),
        spacing=summary["spacing"],
        patch_size=summary["patch_size"],
        folds=sorted(int(k) for k in epochs),
        axes=axes,
        normalization=summary["normalization"],
        mirror_axes=_mirror_axes(next(iter(folder.folds.values()))),
        description=description
        or f"{family} imported from nnU-Net v1 task {folder.task} ({summary['trainer']}), "
        f"{contrasts[0]} input.",
        provenance=provenance,
    )
    card.validate()
    return card


def _postprocessing(trainer_dir: Path) -> dict[str, Any] | None:
    """postprocessing.json's decision, with a warning when it removes components (not applied here)."""
    path = trainer_dir / "postprocessing.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        LOGGER.warning("%s: unreadable (%s); ignored", path, exc)
        return None
    classes = data.get("for_which_classes", [])
    if classes:
        LOGGER.warning(
            "%s: nnU-Net keeps only the largest connected component for classes %s; mednet-pvs does not "
            "(PVS are many small objects) and applies its own minimum cluster size instead",
            path,
            classes,
        )
    return {"for_which_classes": classes, "min_valid_object_sizes": data.get("min_valid_object_sizes")}


def import_v1_models(
    source: str | Path,
    destination: str | Path,
    *,
    name: str | None = None,
    task: str | None = None,
    overwrite: bool = False,
    checkpoint: str = DEFAULT_CHECKPOINT,
    trust_pickle: bool = False,
    contrast: str | None = None,
    licence: str | None = None,
    citation: str | None = None,
) -> list[Path]:
    """Import every model found at or below ``source`` into ``destination/<name>``; all or nothing.

    ``task`` keeps only trainer folders whose task or folder name contains it. ``name`` is only
    allowed when exactly one model is selected (else :class:`UsageError`). Returns the written
    model directories.
    """
    folders = find_v1_models(source, checkpoint)
    if task:
        folders = [f for f in folders if task in f.task or task in f.folder_name]
        if not folders:
            listing = ", ".join(f"{f.task}/{f.folder_name}" for f in find_v1_models(source, checkpoint))
            raise UsageError(f"{source}: no model matches --task {task!r} (found: {listing})")
    if name and len(folders) > 1:
        listing = ", ".join(f"{f.task}/{f.folder_name}" for f in folders)
        raise UsageError(
            f"{source}: holds {len(folders)} models ({listing}); --name needs one, so add --task to choose it"
        )
    converted = [
        convert_v1_model(
            folder,
            name=name,
            checkpoint=checkpoint,
            trust_pickle=trust_pickle,
            contrast=contrast,
            licence=licence,
            citation=citation,
        )
        for folder in folders
    ]
    names = [model.card.name for model in converted]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelError(
            f"{source}: several models would be named {duplicates}; import them one by one with --task/--name"
        )
    destination = Path(destination)
    targets = [destination / model.card.name for model in converted]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise ModelError(f"{', '.join(existing)}: already exists (use --overwrite to replace)")
    written = []
    for model, target in zip(converted, targets, strict=True):
        write_model_dir(target, model.card, model.states, overwrite=overwrite)
        LOGGER.info("imported %s (folds %s) from %s", model.card.name, model.card.folds, model.source.path)
        written.append(target)
    return written
