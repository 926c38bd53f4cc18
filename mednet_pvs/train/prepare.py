"""Bring training cases into the network's space exactly as the inference engine does, and cache them.

Images go through :func:`mednet_pvs.inference.preprocessing.preprocess_case` itself (axis order of
the card, crop to the non-zero box, resampling to the model spacing, z-score normalisation), so the
network trains on what it will see at inference. Masks take the same crop and nnU-Net v1's label
resampling (per-label linear interpolation, >= 0.5). Prepared cases are cached as ``.npy`` files in
the work folder (memory-mapped copy-on-write when read) under a key of the preprocessing settings, so reruns,
resumed runs and parallel fold jobs share them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mednet_pvs.inference.preprocessing import (
    CroppedCase,
    anisotropic_axis,
    preprocess_case,
    resample_to_shape,
)
from mednet_pvs.train.data import Sample, TrainingCase
from mednet_pvs.utils.atomic import atomic_path, write_json

__all__ = [
    "PREPARATION_VERSION",
    "PreparedCase",
    "Preprocessing",
    "network_label",
    "prepare_cached",
    "prepare_case",
]

LOGGER = logging.getLogger(__name__)

#: Bump when the cached arrays would change for the same settings.
PREPARATION_VERSION = 1
#: At most this many foreground / background voxel positions are kept per case for patch sampling.
MAX_SAMPLING_INDICES = 200_000


@dataclass(frozen=True)
class Preprocessing:
    """What the engine needs to reproduce a model's input: the card's axes, spacing and normalisation."""

    axes: tuple[int, int, int]
    spacing: tuple[float, float, float]  # network axis order
    use_mask: bool

    def key(self) -> str:
        text = json.dumps([PREPARATION_VERSION, list(self.axes), list(self.spacing), self.use_mask])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class PreparedCase:
    """A case in network space: (1, X, Y, Z) normalised image and uint8 mask, plus sampling positions."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    foreground: np.ndarray  # flat indices of mask voxels (at most MAX_SAMPLING_INDICES, random subset)
    background: np.ndarray  # flat indices of a random subset of the other voxels


def _subsample(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if indices.size <= MAX_SAMPLING_INDICES:
        return indices
    return np.sort(rng.choice(indices, MAX_SAMPLING_INDICES, replace=False))


def network_label(label: np.ndarray, case: CroppedCase, axes: Sequence[int]) -> np.ndarray:
    """A conformed (X, Y, Z) mask in ``case``'s network space, (1, ...) uint8: nnU-Net v1's label resampling.

    This is the training target; a network that reproduced it exactly is the best any model working
    at ``case.target_spacing`` can do.
    """
    cropped = np.transpose(label, list(axes))[case.bbox][None]
    return resample_to_shape(
        cropped,
        np.array(case.data.shape[1:]),
        is_labels=True,
        order=1,
        separate_z_axis=anisotropic_axis(case.original_spacing, case.target_spacing),
    ).astype(np.uint8)


def prepare_case(case_id: str, sample: Sample, settings: Preprocessing) -> PreparedCase:
    """Preprocess one sample as the engine would (image) and as nnU-Net v1 does for labels (mask)."""
    axes = list(settings.axes)
    image = np.transpose(sample.image, axes)[None].astype(np.float32)
    spacing = np.asarray(sample.spacing, float)[axes]
    case = preprocess_case(image, spacing, np.asarray(settings.spacing, float), settings.use_mask)
    label = network_label(sample.label, case, axes)
    flat = label[0].ravel()
    rng = np.random.default_rng(int(hashlib.sha256(case_id.encode()).hexdigest()[:8], 16))
    return PreparedCase(
        case_id,
        case.data.astype(np.float32),
        label,
        _subsample(np.flatnonzero(flat), rng),
        _subsample(np.flatnonzero(flat == 0), rng),
    )


_ARRAYS = ("image", "label", "foreground", "background")


def _paths(folder: Path, case_id: str) -> dict[str, Path]:
    return {name: folder / f"{case_id}_{name}.npy" for name in _ARRAYS} | {"meta": folder / f"{case_id}.json"}


def prepare_cached(
    cases: Sequence[TrainingCase],
    load: Callable[[TrainingCase], Sample],
    settings: Preprocessing,
    cache_dir: Path,
    progress: bool = True,
) -> dict[str, PreparedCase]:
    """Prepared cases by id, read from ``cache_dir/<settings key>/`` or computed (and cached) on demand."""
    from tqdm.auto import tqdm

    folder = Path(cache_dir) / settings.key()
    folder.mkdir(parents=True, exist_ok=True)
    prepared = {}
    for case in tqdm(cases, desc="preparing cases", unit="case", disable=not progress):
        paths = _paths(folder, case.case_id)
        if not paths["meta"].is_file():
            arrays = prepare_case(case.case_id, load(case), settings)
            for name in _ARRAYS:
                with atomic_path(paths[name]) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, getattr(arrays, name))
            write_json(paths["meta"], {"case": case.describe(), "shape": list(arrays.image.shape[1:])})
        prepared[case.case_id] = PreparedCase(
            case.case_id, *(np.load(paths[name], mmap_mode="c") for name in _ARRAYS)
        )
    LOGGER.info("%d cases prepared in %s", len(prepared), folder)
    return prepared
