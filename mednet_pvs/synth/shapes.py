"""Geometric objects of the phantoms and their exact partial-volume rasterisation.

PVS and vessels are :class:`Tube` objects (the set of points within ``radius`` of a polyline
centreline); lacunes are :class:`Ellipsoid` objects and their gliotic rims :class:`Shell` objects.
:func:`rasterize` computes, for every voxel of a grid, the fraction of a regular sub-voxel lattice
(``supersample`` points per axis) that lies inside the union of the objects, and which object covers
most of it. This fraction is the partial-volume definition used for the images and the ground
truth. Hand-written because no maintained library rasterises analytic tubes with partial volumes;
only voxels near an object boundary are supersampled, voxels deep inside count as full.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.spatial import cKDTree

from mednet_pvs.synth.geometry import Grid

__all__ = ["Coverage", "Ellipsoid", "Shape", "Shell", "Tube", "rasterize", "supersample_factors"]


class Shape(Protocol):
    """An object that :func:`rasterize` can render."""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]: ...

    def sample_inside(
        self, centres: np.ndarray, offsets: np.ndarray, half_diagonal: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fully inside (P,), indices of partial voxels (C,), inside bits of their sub-points (C, M))."""
        ...


def _segment_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance from points (..., 3) to segments start-end (..., 3), broadcasting."""
    direction = end - start
    length2 = np.maximum((direction**2).sum(-1), 1e-12)
    t = np.clip(((points - start) * direction).sum(-1) / length2, 0.0, 1.0)
    closest = start + t[..., None] * direction
    return np.sqrt(((points - closest) ** 2).sum(-1))


@dataclass(frozen=True)
class Tube:
    """Points within ``radius`` (mm) of the polyline ``points`` (N, 3, world mm): a capsule chain."""

    points: np.ndarray
    radius: float

    #: segments either side of a voxel's nearest vertex tested for its sub-points (centrelines are
    #: traced in 1 mm steps, so this spans +-4 mm along the tube)
    _WINDOW = 4

    @property
    def length(self) -> float:
        """Arc length of the centreline (mm); the object extends ``radius`` beyond both ends."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())

    @property
    def diameter(self) -> float:
        return 2.0 * self.radius

    @property
    def centre(self) -> np.ndarray:
        """The centreline point at half the arc length."""
        steps = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        cumulative = np.concatenate([[0.0], np.cumsum(steps)])
        return np.array([np.interp(cumulative[-1] / 2, cumulative, self.points[:, k]) for k in range(3)])

    @property
    def volume(self) -> float:
        """Analytic volume (mm³) of the capsule chain, ignoring overlaps at bends."""
        return float(np.pi * self.radius**2 * self.length + 4.0 / 3.0 * np.pi * self.radius**3)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.points.min(0) - self.radius, self.points.max(0) + self.radius

    def centreline_voxels(self, grid: Grid) -> np.ndarray:
        """Flat indices of the voxels of ``grid`` the centreline passes through (sorted, unique).

        Exact: each segment is split where it crosses a voxel boundary (index + 0.5) and the voxel
        holding the middle of every piece is taken.
        """
        index = grid.index(self.points)
        voxels = [np.rint(index[:1]).astype(int)]
        for start, end in itertools.pairwise(index):
            delta = end - start
            crossings = [np.zeros(1), np.ones(1)]
            for axis in range(3):
                if abs(delta[axis]) > 1e-12:
                    low, high = sorted((start[axis], end[axis]))
                    planes = np.arange(np.floor(low - 0.5), np.ceil(high + 0.5)) + 0.5
                    t = (planes - start[axis]) / delta[axis]
                    crossings.append(t[(t > 0) & (t < 1)])
            t = np.unique(np.concatenate(crossings))
            middle = (t[:-1] + t[1:]) / 2
            voxels.append(np.rint(start + middle[:, None] * delta).astype(int))
        index = np.concatenate(voxels)
        inside = np.all((index >= 0) & (index < np.asarray(grid.shape)), axis=1)
        return np.unique(np.ravel_multi_index(tuple(index[inside].T), grid.shape))

    def _segments(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.points) == 1:
            return self.points, self.points
        return self.points[:-1], self.points[1:]

    def _window_distance(self, points: np.ndarray, nearest_vertex: np.ndarray) -> np.ndarray:
        """Distance of points (P, ..., 3) to the segments around their nearest vertex (P,)."""
        start, end = self._segments()
        window = np.clip(nearest_vertex[:, None] + np.arange(-self._WINDOW, self._WINDOW), 0, len(start) - 1)
        extra = points.ndim - 2  # sub-point axes between the point axis and the coordinates
        shape = (len(points),) + (1,) * extra + (window.shape[1], 3)
        d = _segment_distance(points[..., None, :], start[window].reshape(shape), end[window].reshape(shape))
        return d.min(-1)

    def sample_inside(
        self, centres: np.ndarray, offsets: np.ndarray, half_diagonal: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # A k-d tree of the centreline vertices discards far voxels; exact distances are then taken
        # to the few segments around each voxel's nearest vertex (the centreline is smooth).
        steps = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        reach = self.radius + half_diagonal + (steps.max(initial=0.0) / 2) + 1e-6
        vertex_distance, vertex = cKDTree(self.points).query(centres, distance_upper_bound=reach)
        near = np.nonzero(np.isfinite(vertex_distance))[0]
        distance = np.full(len(centres), np.inf)
        distance[near] = self._window_distance(centres[near], vertex[near])
        full = distance + half_diagonal < self.radius
        partial = np.nonzero(~full & (distance - half_diagonal <= self.radius))[0]
        sub = centres[partial, None, :] + offsets[None]  # (C, M, 3)
        return full, partial, self._window_distance(sub, vertex[partial]) <= self.radius


@dataclass(frozen=True)
class Ellipsoid:
    """A solid ellipsoid: ``centre`` (mm), semi-axes ``axes`` (mm), ``rotation`` (columns = axes)."""

    centre: np.ndarray
    axes: np.ndarray
    rotation: np.ndarray

    @property
    def volume(self) -> float:
        return float(4.0 / 3.0 * np.pi * np.prod(self.axes))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rotation * self.axes) ** 2).sum(1))
        return self.centre - half, self.centre + half

    def scale_factor(self, points: np.ndarray) -> np.ndarray:
        """k such that the point lies on the ellipsoid scaled by k about its centre."""
        local = (points - self.centre) @ self.rotation
        return np.sqrt(((local / self.axes) ** 2).sum(-1))

    def distance_bounds(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of the signed distance (negative inside) of points to the surface.

        A point on the ellipsoid scaled by k lies between (k-1)*min(axes) and (k-1)*max(axes) from
        it (E + tB lies inside (1 + t/min)E, and kE inside E + (k-1)max B, for convex E).
        """
        k = self.scale_factor(points) - 1.0
        small, large = self.axes.min(), self.axes.max()
        return np.where(k >= 0, k * small, k * large), np.where(k >= 0, k * large, k * small)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return self.scale_factor(points) <= 1.0

    def sample_inside(
        self, centres: np.ndarray, offsets: np.ndarray, half_diagonal: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _implicit_sample(self, centres, offsets, half_diagonal)


@dataclass(frozen=True)
class Shell:
    """The points of ``outer`` that are not in ``inner`` (a rim around a lacune)."""

    outer: Ellipsoid
    inner: Ellipsoid

    @property
    def volume(self) -> float:
        return self.outer.volume - self.inner.volume

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.outer.bounds()

    def distance_bounds(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outer_lo, outer_hi = self.outer.distance_bounds(points)
        inner_lo, inner_hi = self.inner.distance_bounds(points)
        return np.maximum(outer_lo, -inner_hi), np.maximum(outer_hi, -inner_lo)

    def contains(self, points: np.ndarray) -> np.ndarray:
        return self.outer.contains(points) & ~self.inner.contains(points)

    def sample_inside(
        self, centres: np.ndarray, offsets: np.ndarray, half_diagonal: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _implicit_sample(self, centres, offsets, half_diagonal)


def _implicit_sample(
    shape: Ellipsoid | Shell, centres: np.ndarray, offsets: np.ndarray, half_diagonal: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lower, upper = shape.distance_bounds(centres)
    full = upper < -half_diagonal
    partial = np.nonzero(~full & (lower <= half_diagonal))[0]
    sub = centres[partial, None, :] + offsets[None]
    return full, partial, shape.contains(sub.reshape(-1, 3)).reshape(len(partial), len(offsets))


def supersample_factors(spacing: np.ndarray, sub_spacing_mm: float) -> tuple[int, int, int]:
    """Sub-voxel lattice points per axis so that the lattice spacing is at most ``sub_spacing_mm``."""
    return tuple(int(max(1, np.ceil(s / sub_spacing_mm - 1e-9))) for s in spacing)


@dataclass(frozen=True)
class Coverage:
    """Sparse partial-volume coverage of a grid by numbered objects (ids 1..n)."""

    grid: Grid
    supersample: tuple[int, int, int]
    voxels: np.ndarray  # (V,) flat voxel indices, sorted, unique
    bits: np.ndarray  # (V, M) union of the objects at each sub-voxel lattice point
    owner: np.ndarray  # (V,) id of the object covering the most lattice points

    @property
    def fraction(self) -> np.ndarray:
        """Covered fraction (V,) of each listed voxel."""
        return self.bits.mean(1, dtype=np.float64).astype(np.float32)

    def dense_fraction(self) -> np.ndarray:
        out = np.zeros(int(np.prod(self.grid.shape)), np.float32)
        out[self.voxels] = self.fraction
        return out.reshape(self.grid.shape)

    def dense_owner(self) -> np.ndarray:
        out = np.zeros(int(np.prod(self.grid.shape)), np.int32)
        out[self.voxels] = self.owner
        return out.reshape(self.grid.shape)

    def coarsened(self, grid: Grid, factors: tuple[int, int, int]) -> Coverage:
        """The coverage of ``grid``, whose voxels are ``factors`` blocks of this grid's voxels."""
        supersample = tuple(int(s * f) for s, f in zip(self.supersample, factors, strict=True))
        if tuple(factors) == (1, 1, 1):
            return Coverage(grid, self.supersample, self.voxels, self.bits, self.owner)
        if not len(self.voxels):
            n_sub = int(np.prod(supersample))
            return Coverage(grid, supersample, self.voxels, np.zeros((0, n_sub), bool), self.owner)
        fine_index = np.stack(np.unravel_index(self.voxels, self.grid.shape), 1)
        coarse_index = fine_index // np.asarray(factors)
        position = fine_index - coarse_index * np.asarray(factors)  # block position of each fine voxel
        coarse_flat = np.ravel_multi_index(tuple(coarse_index.T), grid.shape)
        block = int(np.prod(factors))
        slot = np.ravel_multi_index(tuple(position.T), factors)
        voxels, inverse = np.unique(coarse_flat, return_inverse=True)
        bits = np.zeros((len(voxels), block, self.bits.shape[1]), bool)
        bits[inverse, slot] = self.bits
        counts = self.bits.sum(1)
        # owner of a coarse voxel: the object owning the most covered lattice points in its block
        pair_keys, pair_inverse = np.unique(np.stack([inverse, self.owner]), axis=1, return_inverse=True)
        pair_counts = np.bincount(pair_inverse.ravel(), weights=counts)
        order = np.lexsort((-pair_counts, pair_keys[0]))
        first = np.unique(pair_keys[0][order], return_index=True)[1]
        owner = pair_keys[1][order][first].astype(np.int32)
        return Coverage(grid, supersample, voxels, bits.reshape(len(voxels), -1), owner)


def _lattice_offsets(spacing: np.ndarray, supersample: tuple[int, int, int]) -> np.ndarray:
    axes = [(np.arange(m) + 0.5) / m - 0.5 for m in supersample]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    return grid * spacing


def rasterize(shapes: Sequence[Shape], grid: Grid, supersample: tuple[int, int, int]) -> Coverage:
    """Partial-volume coverage of ``grid`` by ``shapes`` (object ids are 1 + their position)."""
    spacing = grid.spacing
    offsets = _lattice_offsets(spacing, supersample)
    half_diagonal = float(np.linalg.norm(spacing) / 2)
    n_sub = len(offsets)
    voxel_parts: list[np.ndarray] = []
    bit_parts: list[np.ndarray] = []
    owner_parts: list[np.ndarray] = []
    shape_arr = np.asarray(grid.shape)
    for object_id, shape in enumerate(shapes, start=1):
        lo, hi = shape.bounds()
        corners = grid.index(np.array([lo, hi]))
        start = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, shape_arr)
        stop = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, shape_arr)
        if np.any(stop <= start):
            continue
        index = np.stack(
            np.meshgrid(*(np.arange(a, b) for a, b in zip(start, stop, strict=True)), indexing="ij"), -1
        ).reshape(-1, 3)
        centres = grid.world(index.astype(float))
        full, partial, bits = shape.sample_inside(centres, offsets, half_diagonal)
        hit = bits.any(1)
        chosen = np.concatenate([np.nonzero(full)[0], partial[hit]])
        if not len(chosen):
            continue
        voxel_parts.append(np.ravel_multi_index(tuple(index[chosen].T), grid.shape))
        bit_parts.append(np.concatenate([np.ones((int(full.sum()), n_sub), bool), bits[hit]]))
        owner_parts.append(np.full(len(chosen), object_id, np.int32))
    if not voxel_parts:
        return Coverage(
            grid, supersample, np.zeros(0, np.int64), np.zeros((0, n_sub), bool), np.zeros(0, np.int32)
        )
    voxels = np.concatenate(voxel_parts)
    bits = np.concatenate(bit_parts)
    owners = np.concatenate(owner_parts)
    counts = bits.sum(1)
    order = np.lexsort((-counts, voxels))  # by voxel, largest coverage first
    voxels, bits, owners = voxels[order], bits[order], owners[order]
    unique, starts = np.unique(voxels, return_index=True)
    union = np.logical_or.reduceat(bits, starts, axis=0)
    return Coverage(grid, supersample, unique, union, owners[starts])
