"""Partial-volume rasterisation of phantom objects: exact against brute force and analytic volumes."""

from __future__ import annotations

import numpy as np
import pytest

from mednet_pvs.synth.geometry import Grid
from mednet_pvs.synth.shapes import Ellipsoid, Shell, Tube, rasterize, supersample_factors

IDENTITY = Grid((40, 40, 40), np.eye(4))


def _curved_tube(radius: float) -> Tube:
    t = np.linspace(0, 1, 28)[:, None]
    points = (
        np.array([5.3, 6.1, 7.2]) + t * np.array([20.0, 10.0, 15.0]) + np.sin(t * 6) * np.array([0, 3.0, 0])
    )
    return Tube(points, radius)


def test_tube_fractions_equal_a_brute_force_lattice_count():
    tube = _curved_tube(0.8)
    fraction = rasterize([tube], IDENTITY, (5, 5, 5)).dense_fraction()
    # every voxel near the tube, every one of its 125 lattice points, every segment
    axes = [(np.arange(5) + 0.5) / 5 - 0.5] * 3
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    lo, hi = tube.bounds()
    index = np.argwhere(np.ones(IDENTITY.shape, bool))
    index = index[np.all((index > lo - 1.5) & (index < hi + 1.5), axis=1)]
    points = index[:, None, :] + offsets[None]  # (V, 125, 3), world = index here
    a, b = tube.points[:-1], tube.points[1:]
    d = b - a
    t = np.clip(((points[..., None, :] - a) * d).sum(-1) / (d * d).sum(-1), 0, 1)
    distance = np.linalg.norm(points[..., None, :] - (a + t[..., None] * d), axis=-1).min(-1)
    expected = np.zeros(IDENTITY.shape)
    expected[tuple(index.T)] = (distance <= 0.8).mean(1)
    np.testing.assert_allclose(fraction, expected, atol=1e-6)
    assert fraction.sum() == pytest.approx(tube.volume, rel=0.02)


def test_ellipsoid_and_shell_fractions_sum_to_their_volumes():
    centre = np.array([20.2, 20.4, 20.1])
    rotation = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    cavity = Ellipsoid(centre, np.array([5.0, 3.0, 2.0]), rotation)
    shell = Shell(Ellipsoid(centre, cavity.axes + 1.0, rotation), cavity)
    assert rasterize([cavity], IDENTITY, (5, 5, 5)).fraction.sum() == pytest.approx(cavity.volume, rel=0.01)
    assert rasterize([shell], IDENTITY, (5, 5, 5)).fraction.sum() == pytest.approx(shell.volume, rel=0.01)


def test_coarsening_a_fine_grid_equals_rasterising_the_coarse_grid():
    tube = _curved_tube(1.1)
    coarse = Grid((20, 20, 20), np.diag([2.0, 2.0, 2.0, 1.0]))
    fine = coarse.subdivided((2, 2, 1))
    np.testing.assert_allclose(fine.spacing, (1.0, 1.0, 2.0))
    from_fine = rasterize([tube], fine, (4, 4, 8)).coarsened(coarse, (2, 2, 1))
    direct = rasterize([tube], coarse, (8, 8, 8))
    np.testing.assert_allclose(from_fine.dense_fraction(), direct.dense_fraction(), atol=1e-6)
    np.testing.assert_array_equal(from_fine.dense_owner(), direct.dense_owner())


def test_overlapping_objects_count_once_and_the_larger_share_owns_the_voxel():
    big = Tube(np.array([[10.0, 10.0, 10.0], [20.0, 10.0, 10.0]]), 1.5)
    small = Tube(np.array([[15.0, 8.0, 10.0], [15.0, 12.0, 10.0]]), 0.5)
    coverage = rasterize([big, small], IDENTITY, (4, 4, 4))
    alone = rasterize([big], IDENTITY, (4, 4, 4))
    fraction = coverage.dense_fraction()
    assert fraction.max() <= 1.0
    assert fraction[15, 10, 10] == 1.0 and coverage.dense_owner()[15, 10, 10] == 1
    assert fraction[15, 12, 10] > alone.dense_fraction()[15, 12, 10]


def test_centreline_voxels_are_the_voxels_a_segment_crosses():
    straight = Tube(np.array([[0.2, 0.1, 0.0], [3.2, 0.1, 0.0]]), 0.3)
    np.testing.assert_array_equal(
        straight.centreline_voxels(IDENTITY),
        np.ravel_multi_index(([0, 1, 2, 3], [0] * 4, [0] * 4), IDENTITY.shape),
    )
    # from (0,0) to (2,1): crossings at x=0.5 (t=.25), y=0.5 (t=.5), x=1.5 (t=.75)
    diagonal = Tube(np.array([[0.0, 0.0, 5.0], [2.0, 1.0, 5.0]]), 0.3)
    expected = np.ravel_multi_index(([0, 1, 1, 2], [0, 0, 1, 1], [5] * 4), IDENTITY.shape)
    np.testing.assert_array_equal(diagonal.centreline_voxels(IDENTITY), np.sort(expected))


def test_supersampling_keeps_the_lattice_at_most_the_requested_spacing():
    assert supersample_factors(np.array([1.0, 1.0, 1.0]), 0.2) == (5, 5, 5)
    assert supersample_factors(np.array([0.5, 0.5, 2.0]), 0.2) == (3, 3, 10)
