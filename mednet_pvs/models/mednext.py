"""MedNeXt networks built with MONAI from a model card's ``architecture`` section.

MONAI's :class:`~monai.networks.nets.MedNeXt` gives down-sampling block ``i`` the expansion ratio of
encoder stage ``i``; the original MedNeXt v1 (and so MedNet-PVS) gives it the ratio of stage
``i + 1``. Sizes B, M and L differ there, so the card may carry ``down_expansion_ratio`` and the
builder replaces those blocks to match (strict weight loading then succeeds).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.blocks.mednext_block import MedNeXtDownBlock
from monai.networks.nets import MedNeXt
from torch import nn

from mednet_pvs.errors import ModelError

__all__ = [
    "MEDNEXT_SIZES",
    "build_mednext",
    "convert_mednext_v1_state_dict",
    "mednext_architecture",
    "mednext_v1_architecture",
    "parse_mednext_trainer",
]

LOGGER = logging.getLogger(__name__)

#: Block counts and expansion ratios of the published sizes (Roy et al. 2023, Table 1), as nine
#: per-stage values: 4 encoder stages, the bottleneck, 4 decoder stages.
MEDNEXT_SIZES: dict[str, dict[str, list[int]]] = {
    "S": {"exp_r": [2] * 9, "blocks": [2] * 9},
    "B": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "blocks": [2] * 9},
    "M": {"exp_r": [2, 3, 4, 4, 4, 4, 4, 3, 2], "blocks": [3, 4, 4, 4, 4, 4, 4, 4, 3]},
    "L": {"exp_r": [3, 4, 8, 8, 8, 8, 8, 4, 3], "blocks": [3, 4, 8, 8, 8, 8, 8, 4, 3]},
}


def mednext_architecture(
    size: str = "S",
    kernel_size: int = 3,
    init_filters: int = 32,
    in_channels: int = 1,
    out_channels: int = 2,
    deep_supervision: bool = True,
    v1_down_blocks: bool = False,
) -> dict[str, Any]:
    """The ``architecture`` section of a model card for a published MedNeXt size.

    ``v1_down_blocks`` selects the original code's down-block expansion ratios (stage ``i + 1``).
    """
    size = size.upper()
    if size not in MEDNEXT_SIZES:
        raise ValueError(f"unknown MedNeXt size {size!r}; choose one of {sorted(MEDNEXT_SIZES)}")
    exp_r = MEDNEXT_SIZES[size]["exp_r"]
    blocks = MEDNEXT_SIZES[size]["blocks"]
    return {
        "family": "mednext",
        "size": size,
        "kernel_size": kernel_size,
        "init_filters": init_filters,
        "in_channels": in_channels,
        "out_channels": out_channels,
        "encoder_expansion_ratio": exp_r[:4],
        "down_expansion_ratio": exp_r[1:5] if v1_down_blocks else exp_r[:4],
        "bottleneck_expansion_ratio": exp_r[4],
        "decoder_expansion_ratio": exp_r[5:],
        "blocks_down": blocks[:4],
        "blocks_bottleneck": blocks[4],
        "blocks_up": blocks[5:],
        "deep_supervision": deep_supervision,
        "residual": True,
        "norm": "group",
        "global_resp_norm": False,
    }


def build_mednext(arch: dict[str, Any]) -> nn.Module:
    """Instantiate MONAI's MedNeXt for ``arch`` (see :func:`mednext_architecture`)."""
    net = MedNeXt(
        spatial_dims=3,
        init_filters=arch["init_filters"],
        in_channels=arch["in_channels"],
        out_channels=arch["out_channels"],
        encoder_expansion_ratio=list(arch["encoder_expansion_ratio"]),
        decoder_expansion_ratio=list(arch["decoder_expansion_ratio"]),
        bottleneck_expansion_ratio=arch["bottleneck_expansion_ratio"],
        kernel_size=arch["kernel_size"],
        deep_supervision=arch.get("deep_supervision", False),
        use_residual_connection=arch.get("residual", True),
        blocks_down=list(arch["blocks_down"]),
        blocks_bottleneck=arch["blocks_bottleneck"],
        blocks_up=list(arch["blocks_up"]),
        norm_type=arch.get("norm", "group"),
        global_resp_norm=arch.get("global_resp_norm", False),
    )
    down_ratios = arch.get("down_expansion_ratio", arch["encoder_expansion_ratio"])
    for i, ratio in enumerate(down_ratios):
        if ratio != arch["encoder_expansion_ratio"][i]:
            width = arch["init_filters"] * 2**i
            net.down_blocks[i] = MedNeXtDownBlock(
                in_channels=width,
                out_channels=2 * width,
                expansion_ratio=ratio,
                kernel_size=arch["kernel_size"],
                use_residual_connection=arch.get("residual", True),
                norm_type=arch.get("norm", "group"),
                dim="3d",
            )
    return net


def parse_mednext_trainer(trainer: str) -> tuple[str, int] | None:
    """(size, kernel size) from a MedNeXt v1 trainer name such as ``nnUNetTrainerV2_MedNeXt_L_kernel5``."""
    match = re.search(r"MedNeXt_([SBML])_kernel(\d+)", trainer)
    return (match.group(1), int(match.group(2))) if match else None


def _count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({m.group(1) for key in state_dict if (m := re.match(rf"{re.escape(prefix)}\.(\d+)\.", key))})


def _expansion(state_dict: Mapping[str, torch.Tensor], prefix: str, width: int) -> int:
    key = f"{prefix}.conv2.weight"
    if key not in state_dict:
        raise ModelError(f"MedNeXt v1 weights lack {key}")
    return int(state_dict[key].shape[0]) // width


def mednext_v1_architecture(state_dict: Mapping[str, torch.Tensor], trainer: str = "") -> dict[str, Any]:
    """Architecture of an original MedNeXt v1 checkpoint, read from its weights, checked against its trainer.

    Widths, kernel size, expansion ratios, block counts, classes and deep-supervision heads come from
    the tensor shapes; the trainer name (``..._MedNeXt_<S|B|M|L>_kernel<k>...``) must agree with them.
    """
    if "stem.weight" not in state_dict or "out_0.conv_out.weight" not in state_dict:
        raise ModelError("the state dict is not an original MedNeXt v1 network (no stem / out_0 keys)")
    width = int(state_dict["stem.weight"].shape[0])
    kernel = int(state_dict["enc_block_0.0.conv1.weight"].shape[-1])
    exp_r = [_expansion(state_dict, f"enc_block_{i}.0", width * 2**i) for i in range(4)]
    exp_r.append(_expansion(state_dict, "bottleneck.0", width * 16))
    exp_r += [_expansion(state_dict, f"dec_block_{3 - j}.0", width * 2 ** (3 - j)) for j in range(4)]
    up_r = [_expansion(state_dict, f"up_{3 - j}", width * 2 ** (4 - j)) for j in range(4)]
    if up_r != exp_r[5:]:
        raise ModelError(
            f"MedNeXt v1 up-sampling ratios {up_r} differ from the decoder's {exp_r[5:]}; unsupported"
        )
    blocks = [_count_blocks(state_dict, f"enc_block_{i}") for i in range(4)]
    blocks.append(_count_blocks(state_dict, "bottleneck"))
    blocks += [_count_blocks(state_dict, f"dec_block_{3 - j}") for j in range(4)]
    arch = {
        "family": "mednext",
        "size": "custom",
        "kernel_size": kernel,
        "init_filters": width,
        "in_channels": int(state_dict["stem.weight"].shape[1]),
        "out_channels": int(state_dict["out_0.conv_out.weight"].shape[1]),
        "encoder_expansion_ratio": exp_r[:4],
        "down_expansion_ratio": [_expansion(state_dict, f"down_{i}", width * 2**i) for i in range(4)],
        "bottleneck_expansion_ratio": exp_r[4],
        "decoder_expansion_ratio": exp_r[5:],
        "blocks_down": blocks[:4],
        "blocks_bottleneck": blocks[4],
        "blocks_up": blocks[5:],
        "deep_supervision": "out_1.conv_out.weight" in state_dict,
        "residual": "down_0.res_conv.weight" in state_dict,
        "norm": "group",
        "global_resp_norm": any(key.endswith("grn_beta") for key in state_dict),
    }
    named = parse_mednext_trainer(trainer)
    if named is None:
        LOGGER.warning(
            "trainer %r names no MedNeXt size; using the architecture read from the weights", trainer
        )
        return arch
    size, named_kernel = named
    expected = MEDNEXT_SIZES[size]
    if named_kernel != kernel or expected["exp_r"] != exp_r or expected["blocks"] != blocks:
        raise ModelError(
            f"trainer {trainer!r} says MedNeXt-{size} kernel {named_kernel} (expansion {expected['exp_r']}, "
            f"blocks {expected['blocks']}) but the weights have kernel {kernel}, expansion {exp_r}, "
            f"blocks {blocks}"
        )
    arch["size"] = size
    return arch


def _v1_key_to_monai(key: str) -> str | None:
    """Original MedNeXt v1 parameter name -> MONAI MedNeXt name (None: not a parameter MONAI has)."""
    key = key.replace("grn_beta", "global_resp_beta").replace("grn_gamma", "global_resp_gamma")
    rules = (
        (r"enc_block_(\d)\.", lambda m: f"enc_stages.{m.group(1)}."),
        (r"down_(\d)\.", lambda m: f"down_blocks.{m.group(1)}."),
        (r"up_(\d)\.", lambda m: f"up_blocks.{3 - int(m.group(1))}."),
        (r"dec_block_(\d)\.", lambda m: f"dec_stages.{3 - int(m.group(1))}."),
        (r"out_([1-4])\.", lambda m: f"out_blocks.{4 - int(m.group(1))}."),
        (r"(stem|bottleneck|out_0)\.", lambda m: m.group(0)),
    )
    for pattern, replace in rules:
        if re.match(pattern, key):
            return re.sub(pattern, replace, key, count=1)
    return None


def convert_mednext_v1_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename original MedNeXt v1 weights for :func:`build_mednext` (``dummy_tensor`` is dropped).

    Raises :class:`ModelError` naming keys without a counterpart or with shapes that do not fit.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key == "dummy_tensor":
            continue  # an unused tensor the original keeps for gradient checkpointing
        target = _v1_key_to_monai(key)
        if target is None:
            unknown.append(key)
        else:
            converted[target] = value
    if unknown:
        raise ModelError(f"MedNeXt v1 weights have keys with no counterpart: {unknown[:5]}")
    reference = build_mednext(dict(arch)).state_dict()
    missing = sorted(set(reference) - set(converted))
    if missing:
        raise ModelError(f"MedNeXt v1 weights lack {len(missing)} parameters, e.g. {missing[:3]}")
    for key, value in converted.items():
        if key not in reference or reference[key].shape != value.shape:
            shape = tuple(reference[key].shape) if key in reference else None
            raise ModelError(
                f"MedNeXt weight {key} has shape {tuple(value.shape)}; the architecture expects {shape}"
            )
    return converted
