"""A MedNeXt model directory whose weights make it a voxel-wise intensity threshold.

Zeroing every block's last convolution and every resampling shortcut turns MedNeXt into
``out_0(stem(x))``: a 1x1x1 linear map of the normalised intensity. With the stem passing the
intensity through one channel and the head giving ``logit_PVS - logit_background = k (x - t)``, the
network marks exactly the voxels brighter than ``t`` standard deviations. Pushed through the real
inference engine and workflow, it shows whether voxels come back where they started.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.mednext import mednext_architecture
from mednet_pvs.models.networks import build_network
from mednet_pvs.models.store import write_model_dir


def threshold_model(
    directory: Path,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    axes: Sequence[int] = (2, 1, 0),
    z_threshold: float = 2.5,
    gain: float = 10.0,
) -> Path:
    """Write the threshold model (patch 32^3, one fold) to ``directory``."""
    arch = mednext_architecture("S", kernel_size=3, init_filters=4, deep_supervision=True)
    net = build_network(arch)
    state = net.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(("conv3.weight", "conv3.bias", "res_conv.weight", "res_conv.bias")):
                value.zero_()
        state["stem.weight"].zero_()
        state["stem.weight"][0] = 1.0
        state["stem.bias"].zero_()
        state["out_0.conv_out.weight"].zero_()
        state["out_0.conv_out.weight"][0, 1] = gain
        state["out_0.conv_out.bias"].copy_(torch.tensor([0.0, -gain * z_threshold]))
    card = ModelCard(
        name="threshold",
        version="0.0.0",
        architecture=arch,
        contrasts=["T2w", "T1w"],
        labels={"0": "background", "1": "PVS"},
        spacing=[float(s) for s in spacing],
        patch_size=[32, 32, 32],
        folds=[0],
        axes=list(axes),
        description="Voxel-wise intensity threshold expressed as MedNeXt weights (tests only).",
    )
    return write_model_dir(directory, card, [state], overwrite=True)
