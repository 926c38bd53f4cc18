"""nnU-Net v1 ``Generic_UNet`` (PINGU, MedNet-PVS nnU-Net) rebuilt as MONAI's DynUNet.

``nnUNetTrainerV2`` builds Generic_UNet with strided-convolution down-sampling, two
conv -> InstanceNorm(affine) -> LeakyReLU(0.01) blocks per stage, transposed-convolution
up-sampling (no bias) followed by concatenation ``[upsampled, skip]``, and bias-free 1x1 segmentation
heads at every decoder stage. MONAI's :class:`~monai.networks.nets.DynUNet` is the same network
except that its convolutions have no bias and its heads have one. The builder adds the convolution
biases (``conv_bias``) and the importer sets the head biases to zero, so the fixture logits are
reproduced bit for bit (dropping the biases, which InstanceNorm cancels mathematically, left 8e-5
of float32 rounding on logits of magnitude 150). DynUNet was chosen over
``dynamic_network_architectures`` (nnU-Net v2's builder, also exact) because that package pulls in
timm and torchvision, while MONAI is already a dependency.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.nets import DynUNet
from torch import nn

from mednet_pvs.errors import ModelError

__all__ = [
    "MAX_FEATURES_3D",
    "build_generic_unet",
    "convert_generic_unet_v1_state_dict",
    "generic_unet_architecture",
    "generic_unet_v1_keys",
]

#: Generic_UNet.MAX_NUM_FILTERS_3D.
MAX_FEATURES_3D = 320


def generic_unet_architecture(
    base_features: int,
    pool_kernel_sizes: Sequence[Sequence[int]],
    conv_kernel_sizes: Sequence[Sequence[int]],
    in_channels: int = 1,
    out_channels: int = 2,
    max_features: int = MAX_FEATURES_3D,
    deep_supervision: bool = True,
) -> dict[str, Any]:
    """The ``architecture`` section of a card for a Generic_UNet built from nnU-Net v1 plans."""
    n_stages = len(pool_kernel_sizes) + 1
    if len(conv_kernel_sizes) != n_stages:
        raise ModelError(
            f"plans give {len(pool_kernel_sizes)} pooling steps but {len(conv_kernel_sizes)} conv kernel "
            f"sizes (expected {n_stages})"
        )
    return {
        "family": "generic_unet",
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "features": [min(int(base_features) * 2**i, int(max_features)) for i in range(n_stages)],
        "kernel_sizes": [[int(k) for k in kernel] for kernel in conv_kernel_sizes],
        "strides": [[1] * len(conv_kernel_sizes[0])] + [[int(s) for s in pool] for pool in pool_kernel_sizes],
        "deep_supervision": bool(deep_supervision),
        "norm": "instance",
        "negative_slope": 0.01,
        "conv_bias": True,
    }


def build_generic_unet(arch: Mapping[str, Any]) -> nn.Module:
    """MONAI DynUNet equivalent to nnU-Net v1's Generic_UNet for ``arch``."""
    strides = [list(s) for s in arch["strides"]]
    n_heads = len(arch["features"]) - 2 if arch.get("deep_supervision", False) else 1
    net = DynUNet(
        spatial_dims=len(strides[0]),
        in_channels=arch["in_channels"],
        out_channels=arch["out_channels"],
        kernel_size=[list(k) for k in arch["kernel_sizes"]],
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=list(arch["features"]),
        norm_name=("INSTANCE", {"affine": True, "eps": 1e-5}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": arch.get("negative_slope", 0.01)}),
        deep_supervision=bool(arch.get("deep_supervision", False)),
        deep_supr_num=max(n_heads, 1),
        res_block=False,
        trans_bias=False,
    )
    if arch.get("conv_bias", False):
        for name, module in net.named_modules():
            if name.endswith((".conv1.conv", ".conv2.conv")) and module.bias is None:
                module.bias = nn.Parameter(torch.zeros(module.out_channels))
    return net


def _v1_to_dynunet_prefixes(n_stages: int) -> dict[str, str]:
    """Module prefixes of Generic_UNet -> DynUNet (convolution/norm pairs and heads)."""
    n_up = n_stages - 1
    mapping: dict[str, str] = {}

    def block(v1_first: str, v1_second: str, monai: str) -> None:
        mapping[f"{v1_first}.conv"] = f"{monai}.conv1.conv"
        mapping[f"{v1_first}.instnorm"] = f"{monai}.norm1"
        mapping[f"{v1_second}.conv"] = f"{monai}.conv2.conv"
        mapping[f"{v1_second}.instnorm"] = f"{monai}.norm2"

    block("conv_blocks_context.0.blocks.0", "conv_blocks_context.0.blocks.1", "input_block")
    for stage in range(1, n_stages - 1):
        block(
            f"conv_blocks_context.{stage}.blocks.0",
            f"conv_blocks_context.{stage}.blocks.1",
            f"downsamples.{stage - 1}",
        )
    last = n_stages - 1
    block(f"conv_blocks_context.{last}.0.blocks.0", f"conv_blocks_context.{last}.1.blocks.0", "bottleneck")
    for up in range(n_up):
        mapping[f"tu.{up}"] = f"upsamples.{up}.transp_conv.conv"
        block(
            f"conv_blocks_localization.{up}.0.blocks.0",
            f"conv_blocks_localization.{up}.1.blocks.0",
            f"upsamples.{up}.conv_block",
        )
    # seg_outputs.{n_up-1} is full resolution; seg_outputs.{n_up-2} is 1/2 (DynUNet head 0), and so on.
    mapping[f"seg_outputs.{n_up - 1}"] = "output_block.conv.conv"
    for head in range(n_up - 1):
        mapping[f"seg_outputs.{n_up - 2 - head}"] = f"deep_supervision_heads.{head}.conv.conv"
    return mapping


def generic_unet_v1_keys(state_dict: Mapping[str, torch.Tensor]) -> int:
    """Number of resolution stages of a Generic_UNet state dict (raises ModelError if it is not one)."""
    stages = {int(m.group(1)) for key in state_dict if (m := re.match(r"conv_blocks_context\.(\d+)\.", key))}
    if not stages or "seg_outputs.0.weight" not in state_dict:
        raise ModelError(
            "the state dict is not an nnU-Net v1 Generic_UNet (no conv_blocks_context / seg_outputs keys)"
        )
    return max(stages) + 1


def convert_generic_unet_v1_state_dict(
    state_dict: Mapping[str, torch.Tensor], arch: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """Rename Generic_UNet weights for :func:`build_generic_unet` (heads get a zero bias).

    Raises :class:`ModelError` naming any key that has no counterpart, or shapes that do not fit.
    """
    prefixes = _v1_to_dynunet_prefixes(len(arch["features"]))
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        target = prefixes.get(prefix)
        if target is None:
            unknown.append(key)
            continue
        converted[f"{target}.{leaf}"] = value
    if unknown:
        raise ModelError(f"Generic_UNet weights have keys with no counterpart: {unknown[:5]}")
    reference = build_generic_unet(arch).state_dict()
    for key, tensor in reference.items():
        if key.endswith(".bias") and ("output_block" in key or "deep_supervision_heads" in key):
            converted.setdefault(key, torch.zeros_like(tensor))  # v1 heads have no bias
    for key, value in converted.items():
        if key not in reference or tuple(reference[key].shape) != tuple(value.shape):
            shape = tuple(reference[key].shape) if key in reference else None
            raise ModelError(
                f"Generic_UNet weight {key} has shape {tuple(value.shape)}; the architecture expects {shape}"
            )
    return converted
