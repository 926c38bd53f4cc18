"""Training checkpoints without pickles: tensors in safetensors, everything else in JSON.

``checkpoint_<tag>.json`` holds the epoch, the optimizer's hyper-parameters, the scheduler and
gradient-scaler states, the training history and the name and sha256 of its tensor file
(``checkpoint_<tag>_e<epoch>.safetensors``: model weights under ``model/``, optimizer moments under
``optimizer/``). The tensor file is written first under a new name and the JSON replaced atomically
afterwards, so a run killed at any moment leaves a consistent checkpoint. Reading never unpickles:
a file that is not safetensors (a pickle, say) is refused with an error naming it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import sha256sum
from mednet_pvs.models.networks import alias_groups
from mednet_pvs.utils.atomic import atomic_path, write_json

__all__ = ["Checkpoint", "checkpoint_json", "load_checkpoint", "save_checkpoint"]

LOGGER = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint restores: weights, optimizer state and the JSON-able training state."""

    epoch: int  # epochs completed
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # scheduler, scaler, history, best, ...


def checkpoint_json(folder: Path, tag: str) -> Path:
    return Path(folder) / f"checkpoint_{tag}.json"


def _model_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"model/{names[0]}": state[names[0]].detach().cpu().contiguous() for names in alias_groups(state)}


def _split_optimizer(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a ``torch.optim`` state dict, and its JSON part (param groups, per-parameter scalars)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "scalars": scalars}


def save_checkpoint(folder: Path, tag: str, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint_<tag>`` into ``folder``; remove the tensor file it replaces."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(checkpoint.model)
    optimizer_json = None
    if checkpoint.optimizer is not None:
        optimizer_tensors, optimizer_json = _split_optimizer(checkpoint.optimizer)
        tensors.update(optimizer_tensors)
    tensor_name = f"checkpoint_{tag}_e{checkpoint.epoch:05d}.safetensors"
    with atomic_path(folder / tensor_name) as tmp:
        save_file(tensors, str(tmp))
    json_path = checkpoint_json(folder, tag)
    previous = _read_json(json_path).get("tensors") if json_path.is_file() else None
    write_json(
        json_path,
        {
            "format": FORMAT_VERSION,
            "epoch": checkpoint.epoch,
            "tensors": tensor_name,
            "sha256": sha256sum(folder / tensor_name),
            "optimizer": optimizer_json,
            "state": checkpoint.state,
        },
    )
    if previous and previous != tensor_name:
        (folder / previous).unlink(missing_ok=True)
    return json_path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot be read as a checkpoint description ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise ModelError(f"{path}: not a mednet-pvs training checkpoint (format {FORMAT_VERSION})")
    return data


def load_checkpoint(json_path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (sha256-verified, never unpickled)."""
    json_path = Path(json_path)
    data = _read_json(json_path)
    tensor_path = json_path.parent / str(data["tensors"])
    if not tensor_path.is_file():
        raise ModelError(f"{tensor_path}: the tensor file of {json_path.name} is missing")
    if sha256sum(tensor_path) != data.get("sha256"):
        raise ModelError(
            f"{tensor_path}: sha256 differs from {json_path.name}; the checkpoint is damaged or was replaced"
        )
    try:
        tensors = load_file(str(tensor_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types; pickles and other formats land here
        raise ModelError(
            f"{tensor_path}: not a safetensors file ({exc}); refusing to read it any other way"
        ) from exc
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    optimizer = None
    if data.get("optimizer") is not None:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer/"):
                _, index, name = key.split("/", 2)
                state.setdefault(int(index), {})[name] = value
        for index, scalars in data["optimizer"]["scalars"].items():
            state.setdefault(int(index), {}).update(scalars)
        groups = [
            {
                k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()
            }  # JSON lost tuples
            for group in data["optimizer"]["param_groups"]
        ]
        optimizer = {"state": state, "param_groups": groups}
    return Checkpoint(int(data["epoch"]), model, optimizer, data.get("state", {}))
