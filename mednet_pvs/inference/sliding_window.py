"""Gaussian-weighted sliding-window prediction with mirroring test-time augmentation.

Tile placement and the Gaussian importance map follow nnU-Net v1 exactly (step counts, rounded
positions, sigma = patch / 8, zeros replaced by the smallest non-zero weight) so that imported
nnU-Net models reproduce their published outputs. MONAI's ``sliding_window_inference`` places tiles
differently, which changes probabilities near tile borders by more than the fidelity tolerance.

As in nnU-Net v1, each window's prediction is the mean softmax over its mirrorings, windows are
blended with the Gaussian weights, and folds are averaged as probabilities (``average=
"probabilities"``). nnU-Net v2 averages logits instead and applies the softmax last (``average=
"logits"``). Because the Gaussian normaliser is the same for every fold, all folds accumulate into
one float32 buffer the size of the (cropped) image. Windows that contain no voxel of ``mask`` (no
brain) can be skipped; this only changes voxels outside the mask, which nnU-Net would fill with
whatever the network says about an all-zero input (see docs/models.md for the measured effect).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn
from tqdm.auto import tqdm

from mednet_pvs.inference.frozen import freeze_for_cpu

__all__ = [
    "Average",
    "WindowPredictor",
    "gaussian_importance_map",
    "mirror_combinations",
    "predict_sliding_window",
    "sliding_window_probabilities",
    "tile_boxes",
    "tile_starts",
]

LOGGER = logging.getLogger(__name__)

#: What windows, mirrorings and folds are averaged: softmax outputs (nnU-Net v1) or logits (v2).
Average = Literal["probabilities", "logits"]
#: Logits of voxels no computed window covers, when averaging logits: background, surely.
UNCOVERED_LOGITS = (0.0, -30.0)


def tile_starts(image_size: Sequence[int], patch_size: Sequence[int], step_size: float) -> list[list[int]]:
    """Start index of every tile along each axis (nnU-Net's ``_compute_steps_for_sliding_window``)."""
    starts = []
    for size, patch in zip(image_size, patch_size, strict=True):
        n_steps = int(np.ceil((size - patch) / (patch * step_size))) + 1
        if n_steps > 1:
            step = (size - patch) / (n_steps - 1)
            starts.append([int(np.round(step * i)) for i in range(n_steps)])
        else:
            starts.append([0])
    return starts


def tile_boxes(
    image_size: Sequence[int], patch_size: Sequence[int], step_size: float
) -> list[tuple[slice, slice, slice]]:
    """Every tile as a tuple of slices, in nnU-Net's order (x slowest)."""
    return [
        tuple(slice(start, start + patch) for start, patch in zip(corner, patch_size, strict=True))  # type: ignore[misc]
        for corner in itertools.product(*tile_starts(image_size, patch_size, step_size))
    ]


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
    for size, patch in zip(data.shape[1:], patch_size, strict=True):
        diff = max(patch - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    if all(p == (0, 0) for p in pads):
        return data, tuple(slice(None) for _ in range(data.ndim))
    padded = np.pad(data, pads, mode="constant", constant_values=0)
    region = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, data.shape, strict=True))
    return padded, region


class WindowPredictor:
    """Runs every network on batches of windows: frozen CPU graphs, autocast, out-of-memory fallback.

    ``average`` says whether the summed outputs are softmax probabilities or logits. ``freeze``
    runs each network as a frozen TorchScript graph on the CPU (:mod:`mednet_pvs.inference.frozen`),
    traced once per batch shape; a graph that fails on its first batch is replaced by the eager
    network (with a warning) and that batch is run again eagerly. On a CUDA out-of-memory error the
    batch is halved and retried; at batch size 1 the networks move to the CPU (with a warning) and
    the run continues there.
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        device: torch.device,
        *,
        batch_size: int = 1,
        amp: bool = False,
        average: Average = "probabilities",
        freeze: bool = False,
    ) -> None:
        if average not in ("probabilities", "logits"):
            raise ValueError(f"average must be 'probabilities' or 'logits', got {average!r}")
        self.networks = list(networks)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.amp = amp
        self.average = average
        self.freeze = freeze
        self._frozen: dict[tuple[int, tuple[int, ...]], nn.Module] = {}
        self._proven: set[tuple[int, tuple[int, ...]]] = set()  # frozen graphs that ran once
        self._prepare()

    def _prepare(self) -> None:
        self._frozen.clear()
        self._proven.clear()
        for net in self.networks:
            net.to(self.device).eval()

    def _autocast(self):  # type: ignore[no-untyped-def]
        if not self.amp:
            return nullcontext()
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _run(self, index: int, batch: torch.Tensor) -> torch.Tensor:
        """Output of network ``index`` on ``batch``, through its frozen graph when that applies."""
        net = self.networks[index]
        if not (self.freeze and self.device.type == "cpu" and not self.amp):
            return net(batch)
        key = (index, tuple(batch.shape))
        if key not in self._frozen:
            self._frozen[key] = freeze_for_cpu(net, batch)
        runner = self._frozen[key]
        if runner is net or key in self._proven:
            return runner(batch)
        try:
            output = runner(batch)
        except Exception as exc:  # a graph that froze but cannot run: the eager network instead
            name = type(net).__name__
            LOGGER.warning("frozen %s failed on its first window (%s); running it eagerly", name, exc)
            self._frozen[key] = net
            return net(batch)
        self._proven.add(key)
        return output

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Sum over networks of their softmax outputs or logits, float32, on ``self.device``."""
        batch = batch.to(self.device, non_blocking=True)
        total: torch.Tensor | None = None
        with self._autocast():
            for index in range(len(self.networks)):
                output = self._run(index, batch).float()
                if self.average == "probabilities":
                    output = torch.softmax(output, 1)
                total = output if total is None else total + output
        assert total is not None
        return total

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Summed outputs for a CPU batch, split into chunks of at most ``batch_size``."""
        while True:
            try:
                chunks = [self._forward(chunk) for chunk in torch.split(batch, self.batch_size)]
                return torch.cat(chunks)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size //= 2
                    LOGGER.warning("CUDA out of memory: retrying with batch size %d", self.batch_size)
                else:
                    LOGGER.warning("CUDA out of memory at batch size 1: continuing on the CPU (slower)")
                    self.device = torch.device("cpu")
                    self.amp = False
                    self._prepare()


@torch.inference_mode()
def sliding_window_probabilities(
    data: np.ndarray,
    predictor: WindowPredictor,
    n_classes: int,
    patch_size: Sequence[int],
    step_size: float = 0.5,
    mirror_axes: Sequence[int] = (),
    *,
    mask: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Mean outputs (n_classes, X, Y, Z) of ``data`` (C, X, Y, Z) over windows, mirrorings and networks.

    The outputs are softmax probabilities or logits, as ``predictor.average`` says. ``mask``
    (X, Y, Z) bool: windows without any True voxel are not computed; voxels no computed window
    covers get probability 1 (or :data:`UNCOVERED_LOGITS`) for class 0. ``progress`` shows a tqdm
    bar over windows.
    """
    padded, region = _pad_to_patch(data, patch_size)
    shape = padded.shape[1:]
    boxes = tile_boxes(shape, patch_size, step_size)
    if mask is not None:
        padded_mask = _pad_to_patch(mask[None], patch_size)[0][0]
        kept = [box for box in boxes if padded_mask[box].any()]
        if len(kept) < len(boxes):
            LOGGER.info("skipping %d of %d windows that contain no brain", len(boxes) - len(kept), len(boxes))
        boxes = kept
    flips = mirror_combinations(mirror_axes)
    weights = gaussian_importance_map(patch_size)
    # each window contributes gaussian * mean over flips and networks of its outputs
    scale = torch.from_numpy(weights / (len(flips) * len(predictor.networks)))
    summed = np.zeros((n_classes, *shape), dtype=np.float32)
    normaliser = np.zeros(shape, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))
    tiles_per_batch = max(1, predictor.batch_size // len(flips))
    bar = tqdm(total=len(boxes), desc="sliding window", unit="window", disable=not progress, leave=False)
    for first in range(0, len(boxes), tiles_per_batch):
        group = boxes[first : first + tiles_per_batch]
        tiles = [tensor[(slice(None), *box)][None] for box in group]
        predicted = predictor(
            torch.cat([torch.flip(tile, dims) if dims else tile for tile in tiles for dims in flips])
        )
        for index, box in enumerate(group):
            restored = torch.zeros_like(predicted[:1])
            for offset, dims in enumerate(flips):
                item = predicted[index * len(flips) + offset][None]
                restored += torch.flip(item, dims) if dims else item
            summed[(slice(None), *box)] += (restored[0] * scale.to(restored.device)).cpu().numpy()
            normaliser[box] += weights
            bar.update(1)
    bar.close()
    covered = normaliser > 0
    averaged = np.divide(summed, normaliser, out=np.zeros_like(summed), where=covered)
    if predictor.average == "logits":
        averaged[0][~covered] = UNCOVERED_LOGITS[0]
        averaged[1:][:, ~covered] = UNCOVERED_LOGITS[1]
    else:
        averaged[0][~covered] = 1.0
    return averaged[(slice(None), *region[1:])]


def predict_sliding_window(
    data: np.ndarray,
    networks: Sequence[nn.Module],
    n_classes: int,
    patch_size: Sequence[int],
    step_size: float = 0.5,
    mirror_axes: Sequence[int] = (),
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Each network's probabilities, (len(networks), n_classes, X, Y, Z), e.g. for per-fold validation."""
    return np.stack(
        [
            sliding_window_probabilities(
                data,
                WindowPredictor([net], torch.device(device)),
                n_classes,
                patch_size,
                step_size,
                mirror_axes,
            )
            for net in networks
        ]
    )
