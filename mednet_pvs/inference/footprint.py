"""How much host memory a segmentation step needs, from the model card and the image's header.

Nipype's MultiProc starts a step only when its declared ``mem_gb`` fits in ``--mem``, and cluster
recipes size their jobs from it, so the segmentation node declares an estimate instead of a
constant. Three parts add up:

- the forward pass of one window (CPU only): its activations grow with the window's voxels, the
  first stage's width and that stage's channel expansion; calibrated on a MedNeXt-S with 32
  filters and 128^3 windows that peaked at 7.1 GB on CPU (docs/hpc.md, section 7);
- the arrays: float32 and float64 copies of the image on its own grid and on the network grid
  (resampled crop, accumulators, probabilities resampled back), one set when the image is already
  on the network grid and nothing is resampled; calibrated by benchmarks/segmentation_memory.py on
  1 mm, 1.6 mm, 0.5 mm and clinical 0.45 x 0.45 x 2 mm images read at 0.6 mm and at 0.5 mm;
- the process itself (Python, PyTorch, Nipype, the weights).

On a GPU the activations live in GPU memory; the CUDA context and pinned transfers take their place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mednet_pvs.inference.preprocessing import target_shape

__all__ = ["ImageGrid", "image_grid", "network_voxels", "on_network_grid", "segmentation_memory_gb"]

#: (shape, voxel size in mm) of the image to segment
ImageGrid = tuple[Sequence[int], Sequence[float]]

#: The grid assumed when the image is not known: a whole adult head at 1 mm.
_DEFAULT_GRID: ImageGrid = ((176, 256, 256), (1.0, 1.0, 1.0))
#: The process without images or activations: Python, PyTorch, Nipype, the weights (GB).
_PROCESS_GB = 0.8
#: Bytes per voxel of the network grid: the resampled crop, its padded copy, the mask, the summed
#: probabilities, the normaliser and the averaged probabilities.
_NETWORK_GRID_BYTES = 40.0
#: Bytes per voxel of the image grid: the image, the probabilities resampled back, pasted into the
#: full grid and reordered, and the foreground probability written out.
_IMAGE_GRID_BYTES = 40.0
#: Live float32 activations of one forward pass, in units of (width x (1 + expansion) x voxels).
_ACTIVATION_FACTOR = 8.0
#: CUDA context and pinned transfers on the host when the network runs on a GPU (GB).
_GPU_HOST_GB = 1.5


def _first_stage(architecture: Mapping[str, Any]) -> tuple[int, float]:
    """(channels, expansion ratio) of the first, widest-in-voxels stage."""
    if architecture.get("family") == "mednext":
        return int(architecture["init_filters"]), float(architecture["encoder_expansion_ratio"][0])
    if architecture.get("family") == "generic_unet":
        return int(architecture["features"][0]), 1.0
    return 32, 2.0  # an unknown family: assume a MedNeXt-S-like network


def image_grid(path: str | Path) -> ImageGrid:
    """The shape and voxel size of a NIfTI image, from its header alone."""
    header = nib.load(path).header
    return header.get_data_shape()[:3], header.get_zooms()[:3]


def on_network_grid(grid: ImageGrid, network_spacing: Sequence[float]) -> bool:
    """Whether the image is already on the network grid, so that it is not resampled either way.

    Preprocessing then crops and normalises the image in place of a resampled copy, and the
    probabilities need no resampling back: the image-grid arrays are the network-grid arrays.
    """
    shape = tuple(int(n) for n in grid[0])
    zooms, spacing = np.asarray(grid[1], float), np.asarray(network_spacing, float)
    return tuple(target_shape(shape, zooms, spacing)) == shape


def network_voxels(grid: ImageGrid, network_spacing: Sequence[float]) -> float:
    """Voxels of the image's whole field of view sampled at the network spacing."""
    shape, zooms = grid
    return math.prod(
        int(n) * float(z) / float(s) for n, z, s in zip(shape, zooms, network_spacing, strict=True)
    )


def segmentation_memory_gb(
    architecture: Mapping[str, Any],
    patch_size: Sequence[int],
    network_spacing: Sequence[float],
    on_gpu: bool,
    grid: ImageGrid | None = None,
) -> float:
    """Estimated peak host memory (GB, rounded up to 0.5) of segmenting one image with this model.

    The arrays scale with the image's voxels and with its field of view sampled at the network
    spacing (a 1 mm image read by a 0.5 mm network takes 8 times as many network voxels); the
    whole field of view counts, as the brain box is not known before skull stripping.
    """
    resampled = grid is None or not on_network_grid(grid, network_spacing)  # unknown: assume so
    grid = grid or _DEFAULT_GRID
    arrays = _NETWORK_GRID_BYTES * network_voxels(grid, network_spacing)
    if resampled:
        arrays += _IMAGE_GRID_BYTES * math.prod(int(n) for n in grid[0])
    if on_gpu:
        activations = _GPU_HOST_GB
    else:
        channels, expansion = _first_stage(architecture)
        window = math.prod(int(p) for p in patch_size)
        activations = _ACTIVATION_FACTOR * channels * (1.0 + expansion) * window * 4 / 1e9
    return math.ceil(2 * (_PROCESS_GB + arrays / 1e9 + activations)) / 2
