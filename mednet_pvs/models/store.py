"""Write model directories atomically (weights as safetensors, checksums in the card)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import ModelCard, fold_file_name
from mednet_pvs.models.networks import alias_groups, build_network

__all__ = ["random_model", "write_model_dir"]


def write_model_dir(
    directory: str | Path,
    card: ModelCard,
    fold_states: Sequence[Mapping[str, torch.Tensor]],
    *,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model.json`` and one ``fold_<k>.safetensors`` per state dict; all or nothing.

    Files go to a temporary sibling folder that is renamed into place at the end, so a failure
    never leaves a half-written model. ``dtype`` (e.g. float16) converts floating tensors. A tensor
    reachable under several names (module aliases) is stored once, under its first name.
    """
    directory = Path(directory)
    if len(fold_states) != len(card.folds):
        raise ModelError(f"{len(fold_states)} state dicts for folds {card.folds}")
    if directory.exists() and not overwrite:
        raise ModelError(f"{directory}: already exists (remove it first or choose another name)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for fold, state in zip(card.folds, fold_states, strict=True):
            tensors = {}
            for names in alias_groups(state):
                key, value = names[0], state[names[0]]
                tensor = value.detach().cpu()
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                tensors[key] = tensor.contiguous()
            save_file(tensors, str(staging / fold_file_name(fold)))
        card.record_checksums(staging)
        card.save(staging)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def random_model(
    directory: str | Path,
    architecture: dict,
    *,
    name: str = "random",
    contrasts: Sequence[str] = ("T2w", "T1w"),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    patch_size: Sequence[int] = (64, 64, 64),
    folds: Sequence[int] = (0,),
    seed: int = 0,
    **card_fields: object,
) -> Path:
    """A model directory with seeded random weights: for tests, benchmarks and smoke runs."""
    states = []
    for k in folds:
        torch.manual_seed(seed + k)
        states.append(build_network(architecture).state_dict())
    card = ModelCard(
        name=name,
        version="0.0.0",
        architecture=dict(architecture),
        contrasts=list(contrasts),
        labels={"0": "background", "1": "PVS"},
        spacing=[float(s) for s in spacing],
        patch_size=[int(p) for p in patch_size],
        folds=list(folds),
        description="Random weights (no training); for testing only.",
        provenance={"source": "mednet_pvs.models.store.random_model", "seed": seed, "licence": "Apache-2.0"},
        **card_fields,  # type: ignore[arg-type]
    )
    return write_model_dir(directory, card, states, overwrite=True)
