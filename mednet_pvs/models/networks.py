"""Build a network from a model card and load one fold's verified weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import ModelCard, fold_file_name

__all__ = ["build_network", "load_fold"]

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


def load_fold(
    card: ModelCard, directory: str | Path, fold: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """Build the network and load fold ``fold``'s weights (sha256-verified first), in eval mode."""
    directory = Path(directory)
    card.verify(directory, folds=[fold])
    net = build_network(card.architecture)
    path = directory / fold_file_name(fold)
    state = load_file(str(path), device="cpu")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the architecture in model.json ({exc})") from exc
    return net.to(device).eval()
