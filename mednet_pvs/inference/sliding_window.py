"""Gaussian-weighted sliding-window prediction with mirroring test-time augmentation.

Tile placement and the Gaussian importance map follow nnU-Net v1 exactly (step counts, rounded
positions, sigma = patch / 8, zeros replaced by the smallest non-zero weight) so that imported
nnU-Net models reproduce their published outputs. MONAI's ``sliding_window_inference`` places tiles
differently, which changes probabilities near tile borders by more than the fidelity tolerance.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

__all__ = ["gaussian_importance_map", "predict_sliding_window", "tile_starts"]


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Start index of every tile along each axis (nnU-Net's ``_compute_steps_for_sliding_window``)."""
    starts = []
    for size, patch in zip(image_size, patch_size):
        n_steps = int(np.ceil((size - patch) / (patch * step_size))) + 1
        if n_steps > 1:
            step = (size - patch) / (n_steps - 1)
            starts.append([int(np.round(step * i)) for i in range(n_steps)])
        else:
            starts.append([0])
    return starts


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net's tile weighting: a Gaussian peaked at the patch centre, max 1, no zeros."""
    impulse = np.zeros(patch_size)
    impulse[tuple(p // 2 for p in patch_size)] = 1
    weights = gaussian_filter(impulse, [p * sigma_scale for p in patch_size], 0, mode="constant", cval=0)
    weights = (weights / weights.max()).astype(np.float32)
    weights[weights == 0] = weights[weights != 0].min()
    return weights


def mirror_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial mirror axes, as tensor dims of a (B, C, X, Y, Z) batch."""
    dims = [axis + 2 for axis in mirror_axes]
    return [combo for r in range(len(dims) + 1) for combo in itertools.combinations(dims, r)]


def _pad_to_patch(data: np.ndarray, patch_size: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad (C, ...) data to at least the patch size, split floor/ceil as nnU-Net does."""
    pads = [(0, 0)]
    for size, patch in zip(data.shape[1:], patch_size):
        diff = max(patch - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    if all(p == (0, 0) for p in pads):
        return data, tuple(slice(None) for _ in range(data.ndim))
    padded = np.pad(data, pads, mode="constant", constant_values=0)
    region = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, (data.shape[0], *data.shape[1:])))
    return padded, region


@torch.inference_mode()
def predict_sliding_window(
    data: np.ndarray,
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    n_classes: int,
    patch_size: Sequence[int],
    step_size: float = 0.5,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Softmax probabilities (n_classes, ...) of ``data`` (C, X, Y, Z), one map per network.

    Returns an array of shape (len(networks), n_classes, X, Y, Z): each network's prediction
    aggregated over tiles and mirrorings; averaging over networks (folds) is left to the caller.
    """
    device = torch.device(device)
    padded, region = _pad_to_patch(data, patch_size)
    weights = torch.from_numpy(gaussian_importance_map(patch_size)).to(device)
    flips = mirror_combinations(mirror_axes)
    starts = tile_starts(padded.shape[1:], patch_size, step_size)
    tensor = torch.from_numpy(padded).to(device)
    out = np.zeros((len(networks), n_classes, *padded.shape[1:]), dtype=np.float32)
    for k, net in enumerate(networks):
        summed = torch.zeros((n_classes, *padded.shape[1:]), dtype=torch.float32, device=device)
        counts = torch.zeros(padded.shape[1:], dtype=torch.float32, device=device)
        for x, y, z in itertools.product(*starts):
            box = (slice(x, x + patch_size[0]), slice(y, y + patch_size[1]), slice(z, z + patch_size[2]))
            tile = tensor[(slice(None), *box)][None]
            probs = torch.zeros((1, n_classes, *patch_size), dtype=torch.float32, device=device)
            for dims in flips:
                inp = torch.flip(tile, dims) if dims else tile
                pred = torch.softmax(net(inp).float(), 1)
                probs += (torch.flip(pred, dims) if dims else pred) / len(flips)
            summed[(slice(None), *box)] += probs[0] * weights
            counts[box] += weights
            if progress is not None:
                progress(1)
        out[k] = (summed / counts).cpu().numpy()
    return out[(slice(None), *region)]
