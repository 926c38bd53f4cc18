"""Phantoms from :mod:`mednet_pvs.synth` as training-sample generators (one per contrast).

``generate_subject(seed, contrasts, config)`` draws the anatomy, the lesions and the PVS from the
seed alone and renders every requested contrast from them, so the generators of the contrasts of one
training run share a one-subject memo: the anatomy of a seed is drawn once for all its contrasts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from mednet_pvs.preproc.conform import conform
from mednet_pvs.train.data import SampleGenerator

__all__ = ["phantom_generators", "phantom_seeds"]


def phantom_seeds(count: int, base_seed: int) -> list[int]:
    """The seeds of a dataset of ``count`` phantoms, as ``mednet-pvs-synth --seed base_seed`` numbers them."""
    from mednet_pvs.synth import subject_seed

    return [subject_seed(base_seed, index) for index in range(1, count + 1)]


def phantom_generators(
    contrasts: Sequence[str], settings: Mapping[str, Any] | None = None
) -> dict[str, SampleGenerator]:
    """``{contrast: seed -> (conformed image, conformed PVS mask, spacing)}`` over the phantom generator.

    ``settings`` are :class:`mednet_pvs.synth.config.SynthConfig` fields (unknown ones are an error).
    """
    from mednet_pvs.synth import SynthConfig, generate_subject

    config = SynthConfig.from_dict(dict(settings or {}))
    names = tuple(contrasts)

    @lru_cache(maxsize=1)
    def subject(seed: int) -> Any:
        return generate_subject(seed, names, config)

    def generator_for(contrast: str) -> SampleGenerator:
        def generate(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
            phantom = subject(seed)
            image = conform(phantom.images[contrast])
            mask = conform(phantom.pvs_mask)
            spacing = tuple(float(z) for z in image.header.get_zooms()[:3])
            return (
                np.asarray(image.dataobj, np.float32),
                np.asarray(mask.dataobj).round().astype(np.uint8),
                spacing,
            )

        return generate

    return {contrast: generator_for(contrast) for contrast in names}
