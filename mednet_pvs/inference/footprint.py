"""How much host memory a segmentation step needs, from the model card alone.

Nipype's MultiProc starts a step only when its declared ``mem_gb`` fits in ``--mem``, and cluster
recipes size their jobs from it, so the segmentation node declares an estimate instead of a
constant. On CPU the forward pass of one window dominates: its activations grow with the window's
voxels, the first stage's width and that stage's channel expansion. The coefficients are calibrated
on measured peaks (docs/hpc.md, section 7): a MedNeXt-S with 32 filters and 128^3 windows peaked at
7.1 GB on CPU; the model-free part (image, resampled copies, probability accumulators) stays within
about 1.5 GB for a 1 mm brain. Frozen CPU graphs (mednet_pvs.inference.frozen) raised the peak of a
128^3 forward pass of that network from 3577 to 3773 MiB (benchmarks/frozen_graphs.py), within the
estimate's margin. On a GPU the activations live in GPU memory and only the arrays stay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["segmentation_memory_gb"]

#: Host memory besides the network's activations: volumes, resampled copies, accumulators (GB).
_BASE_GB = 1.5
#: Live float32 activations of one forward pass, in units of (width x (1 + expansion) x voxels).
_ACTIVATION_FACTOR = 8.0


def _first_stage(architecture: Mapping[str, Any]) -> tuple[int, float]:
    """(channels, expansion ratio) of the first, widest-in-voxels stage."""
    if architecture.get("family") == "mednext":
        return int(architecture["init_filters"]), float(architecture["encoder_expansion_ratio"][0])
    if architecture.get("family") == "generic_unet":
        return int(architecture["features"][0]), 1.0
    return 32, 2.0  # an unknown family: assume a MedNeXt-S-like network


def segmentation_memory_gb(architecture: Mapping[str, Any], patch_size: Sequence[int], on_gpu: bool) -> float:
    """Estimated peak host memory (GB, rounded up to 0.5) of segmenting one image with this model."""
    if on_gpu:
        return _BASE_GB + 1.5  # CUDA context and pinned transfers on top of the arrays
    channels, expansion = _first_stage(architecture)
    voxels = math.prod(int(p) for p in patch_size)
    activations = _ACTIVATION_FACTOR * channels * (1.0 + expansion) * voxels * 4 / 1e9
    return math.ceil(2 * (_BASE_GB + activations)) / 2
