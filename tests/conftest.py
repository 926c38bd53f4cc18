"""Shared pytest fixtures: synthetic images, tiny random models, the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED = Path(os.environ.get("MEDNET_PVS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real scans, BIDS dataset, atlases, fixtures); tests using it skip when absent."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight MedNeXt model directory small enough for unit tests (2 folds)."""
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.store import random_model

    arch = mednext_architecture("S", kernel_size=3, init_filters=4, deep_supervision=True)
    return random_model(
        tmp_path_factory.mktemp("models") / "tiny", arch, name="tiny", patch_size=(32, 32, 32), folds=(0, 1)
    )


def make_phantom(
    shape: tuple[int, int, int] = (48, 56, 40),
    affine: np.ndarray | None = None,
    seed: int = 0,
) -> nib.Nifti1Image:
    """A smooth 'brain' ellipsoid with a few bright tubes: a small, fast stand-in for a T2w scan."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    data = np.where(brain, 100.0, 0.0) + brain * rng.normal(0, 3, shape)
    centre = np.array(shape) // 2
    for offset in (-6, 0, 6):
        data[centre[0] + offset, centre[1] - 8 : centre[1] + 8, centre[2]] = 250.0
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    return nib.Nifti1Image(data.astype(np.float32), affine)
