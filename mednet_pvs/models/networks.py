"""Build a network from a model card and load one fold's verified weights."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import ModelCard, fold_file_name

__all__ = ["alias_groups", "build_network", "load_fold", "load_weights"]

LOGGER = logging.getLogger(__name__)


def build_network(arch: dict[str, Any]) -> nn.Module:
    """Instantiate the network described by a card's ``architecture`` section."""
    family = arch.get("family")
    if family == "mednext":
        from mednet_pvs.models.mednext import build_mednext

        return build_mednext(arch)
    if family == "generic_unet":
        from mednet_pvs.models.generic_unet import build_generic_unet

        return build_generic_unet(arch)
    raise ModelError(f"unknown architecture family {family!r}")


def alias_groups(state: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Names that share one tensor, in state-dict order (e.g. DynUNet's ``skip_layers`` views).

    A model directory stores each tensor once, under the first of its names.
    """
    groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
    for key, tensor in state.items():
        if tensor.numel() == 0:
            groups[(id(tensor), 0, ())] = [key]
            continue
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        groups.setdefault(ident, []).append(key)
    return list(groups.values())


def load_weights(net: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> nn.Module:
    """Load ``state`` strictly into ``net``, filling aliased names from their stored twin."""
    full = dict(state)
    for names in alias_groups(net.state_dict()):
        stored = [name for name in names if name in state]
        for name in names:
            if stored and name not in full:
                full[name] = state[stored[0]]
    try:
        net.load_state_dict(full, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not fit the architecture ({exc})") from exc
    return net


def load_fold(
    card: ModelCard, directory: str | Path, fold: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the network and load fold ``fold``'s weights (sha256-verified first), in eval mode."""
    directory = Path(directory)
    card.verify(directory, folds=[fold])
    net = build_network(card.architecture)
    path = directory / fold_file_name(fold)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ModelError(f"{path}: cannot be read as safetensors ({exc})") from exc
    load_weights(net, state, path)
    return net.to(device).eval()
