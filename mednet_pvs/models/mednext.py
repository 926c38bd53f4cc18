"""MedNeXt networks built with MONAI from a model card's ``architecture`` section.

MONAI's :class:`~monai.networks.nets.MedNeXt` gives down-sampling block ``i`` the expansion ratio of
encoder stage ``i``; the original MedNeXt v1 (and so MedNet-PVS) gives it the ratio of stage
``i + 1``. Sizes B, M and L differ there, so the card may carry ``down_expansion_ratio`` and the
builder replaces those blocks to match (strict weight loading then succeeds).
"""

from __future__ import annotations

from typing import Any

from monai.networks.blocks.mednext_block import MedNeXtDownBlock
from monai.networks.nets import MedNeXt
from torch import nn

__all__ = ["MEDNEXT_SIZES", "build_mednext", "mednext_architecture"]

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
