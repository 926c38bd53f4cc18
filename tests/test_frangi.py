"""The Frangi vesselness baseline finds thin tubes of the right polarity and ignores blobs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mednet_pvs.classical.frangi import FrangiParameters, frangi_vesselness


def _phantom(bright: bool, spacing=(1.0, 1.0, 1.0)):
    shape = (40, 40, 40)
    image = np.full(shape, 100.0, np.float32) + np.random.default_rng(0).normal(0, 1, shape).astype(
        np.float32
    )
    tube = np.zeros(shape, bool)
    tube[8:32, 20, 20] = True  # 24-voxel line along x
    blob = np.zeros(shape, bool)
    grid = np.indices(shape)
    blob[((grid - np.array([20, 10, 10])[:, None, None, None]) ** 2).sum(0) <= 16] = True  # radius-4 ball
    value = 160.0 if bright else 40.0
    image[tube] = value
    image[blob] = value
    brain = np.zeros(shape, bool)
    brain[2:38, 2:38, 2:38] = True
    return image, tube, blob, brain


@pytest.mark.parametrize(("contrast", "bright"), [("T2w", True), ("T1w", False)])
def test_tube_detected_blob_ignored(contrast, bright):
    image, tube, blob, brain = _phantom(bright)
    v = frangi_vesselness(image, (1.0, 1.0, 1.0), brain, contrast, FrangiParameters(border_mm=0.0))
    assert v.dtype == np.float32 and v.shape == image.shape
    core = v[tube][4:-4]  # away from the tube ends
    assert core.min() > 0.4
    assert v[blob].max() < core.min() / 2  # a ball only lights up weakly at its rim
    assert np.percentile(v[brain & ~tube & ~blob], 99.9) < 0.05
    assert v[~brain].max() == 0.0


def test_wrong_polarity_gives_nothing():
    image, tube, _, brain = _phantom(bright=True)
    v = frangi_vesselness(image, (1.0, 1.0, 1.0), brain, "T1w", FrangiParameters(border_mm=0.0))
    assert v[tube].max() < 0.05


def test_anisotropic_grid_and_restriction():
    image, tube, blob, brain = _phantom(bright=True)
    v = frangi_vesselness(image, (0.8, 0.8, 1.6), brain, "T2w", FrangiParameters(border_mm=0.0))
    assert v.shape == image.shape
    near = ndimage.binary_dilation(tube | blob, iterations=2)
    background = np.percentile(v[brain & ~near], 99.9)
    assert v[tube][4:-4].min() > 0.1 and v[tube][4:-4].min() > 5 * background
    restrict = np.zeros_like(brain)
    restrict[:, :15] = True
    v = frangi_vesselness(image, (1.0, 1.0, 1.0), brain, "T2w", FrangiParameters(border_mm=0.0), restrict)
    assert v[tube].max() == 0.0


def test_border_is_excluded():
    image, tube, _, brain = _phantom(bright=True)
    v = frangi_vesselness(image, (1.0, 1.0, 1.0), brain, "T2w", FrangiParameters(border_mm=3.0))
    assert v[2:5].max() == 0.0 and v[:, :, 35:].max() == 0.0
    assert v[tube][4:-4].min() > 0.4  # 15 voxels from the border: kept
