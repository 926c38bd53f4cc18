"""Where phantom objects go: anatomical context fields, a spatial hash, and PVS tracing.

PVS follow the anatomy (Potter et al. 2015; Wardlaw et al. 2013 describe their appearance and
locations): in the white matter they run radially, along the gradient of the distance to the
lateral ventricles and, near the cortex, perpendicular to it; in the basal ganglia they are short,
roughly vertical (the lenticulostriate arteries enter from below) and clustered in the inferior
basal ganglia near the anterior commissure; a few lie in the hippocampi and the midbrain.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist

from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.synth.anatomy import TISSUE_CLASSES
from mednet_pvs.synth.geometry import Grid
from mednet_pvs.synth.shapes import Tube

__all__ = [
    "LOCATIONS",
    "AnatomyContext",
    "PlacedPVS",
    "SpatialHash",
    "distance_inside",
    "place_pvs",
    "trace_tubes",
]

LOGGER = logging.getLogger(__name__)
#: PVS location classes and the leaf regions (lut.py) a PVS of that class must stay in.
LOCATIONS: dict[str, tuple[int, ...]] = {
    "white_matter": tuple(
        r.index for r in REGIONS if r.structure in ("centrum_semiovale", "deep_white_matter")
    ),
    "basal_ganglia": tuple(r.index for r in REGIONS if r.structure == "basal_ganglia"),
    "hippocampus": tuple(r.index for r in REGIONS if r.structure == "hippocampus"),
    "midbrain": tuple(r.index for r in REGIONS if r.structure == "midbrain"),
}


def distance_inside(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel of ``mask`` to the nearest voxel outside it (0 outside).

    Computed on the bounding box of the mask only (much faster for small structures); the grid
    border counts as outside.
    """
    out = np.zeros(mask.shape, np.float32)
    if not mask.any():
        return out
    index = np.argwhere(mask)
    box = tuple(slice(max(a - 1, 0), b + 2) for a, b in zip(index.min(0), index.max(0), strict=True))
    out[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return out


def _unit_gradient(distance: np.ndarray, spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    smooth = ndimage.gaussian_filter(distance, sigma_mm / spacing)
    gradient = np.stack(np.gradient(smooth, *spacing))
    return (gradient / (np.sqrt((gradient**2).sum(0)) + 1e-6)).astype(np.float32)


@dataclass
class AnatomyContext:
    """Subject-space fields that guide placement, on a coarse context grid.

    ``regions`` (output grid) decide where objects may go; the context grid carries the radial
    direction field and the clearance (mm) of every location class to its class boundary.
    """

    grid: Grid  # output grid
    regions: np.ndarray  # PVS region labels on the output grid
    context: Grid
    context_labels: np.ndarray
    context_regions: np.ndarray
    away_from_ventricles: np.ndarray  # (3, ...) unit vectors
    toward_cortex: np.ndarray  # (3, ...) unit vectors
    cortex_distance: np.ndarray  # mm
    ventricle_distance: np.ndarray  # mm, to any ventricle
    clearance: dict[str, np.ndarray]  # location class -> distance to leaving the class (mm)
    up: np.ndarray  # subject-space superior direction of the head
    anterior: np.ndarray
    right: np.ndarray

    @classmethod
    def build(
        cls,
        grid: Grid,
        regions: np.ndarray,
        context: Grid,
        context_labels: np.ndarray,
        context_regions: np.ndarray,
        head_axes: np.ndarray,
    ) -> AnatomyContext:
        spacing = context.spacing
        ventricles = np.isin(context_labels, TISSUE_CLASSES["ventricle"])
        cortex = np.isin(context_labels, TISSUE_CLASSES["cortex"])
        ventricle_distance = ndimage.distance_transform_edt(~ventricles, sampling=spacing).astype(np.float32)
        cortex_distance = ndimage.distance_transform_edt(~cortex, sampling=spacing).astype(np.float32)
        clearance = {
            name: distance_inside(np.isin(context_regions, labels), spacing)
            for name, labels in LOCATIONS.items()
        }
        return cls(
            grid=grid,
            regions=regions,
            context=context,
            context_labels=context_labels,
            context_regions=context_regions,
            away_from_ventricles=_unit_gradient(ventricle_distance, spacing, 3.0),
            toward_cortex=-_unit_gradient(cortex_distance, spacing, 1.5),
            cortex_distance=cortex_distance,
            ventricle_distance=ventricle_distance,
            clearance=clearance,
            right=head_axes[0],
            anterior=head_axes[1],
            up=head_axes[2],
        )

    def region_at(self, points: np.ndarray) -> np.ndarray:
        """PVS region label (output grid, nearest voxel) at world points (N, 3); 0 outside the grid."""
        index = np.rint(self.grid.index(points)).astype(int)
        inside = np.all((index >= 0) & (index < np.asarray(self.grid.shape)), axis=1)
        out = np.zeros(len(points), np.uint8)
        out[inside] = self.regions[tuple(index[inside].T)]
        return out

    def sample_context(self, field: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Trilinear value of a context-grid field (..., shape) at world points (N, 3)."""
        coords = self.context.index(points).T
        if field.ndim == 4:
            return np.stack([ndimage.map_coordinates(f, coords, order=1, mode="nearest") for f in field], -1)
        return ndimage.map_coordinates(field, coords, order=1, mode="nearest")


class SpatialHash:
    """Spheres (centre, radius) bucketed in cubic cells, to keep objects apart."""

    def __init__(self, cell_mm: float = 4.0) -> None:
        self.cell = cell_mm
        self.cells: dict[tuple[int, ...], list[tuple[float, float, float, float]]] = defaultdict(list)
        self.max_radius = 0.0

    def add(self, points: np.ndarray, radius: float) -> None:
        for key, point in zip(map(tuple, np.floor(points / self.cell).astype(int)), points, strict=True):
            self.cells[key].append((*point, radius))
        self.max_radius = max(self.max_radius, radius)

    def is_free(self, points: np.ndarray, radius: float, gap: float) -> bool:
        """True when no stored sphere comes closer than ``gap`` to any sphere (points, radius)."""
        reach = radius + self.max_radius + gap
        lo = np.floor((points.min(0) - reach) / self.cell).astype(int)
        hi = np.floor((points.max(0) + reach) / self.cell).astype(int)
        keys = itertools.product(*(range(a, b + 1) for a, b in zip(lo, hi, strict=True)))
        rows = [row for key in keys for row in self.cells.get(key, ())]
        if not rows:
            return True
        stored = np.asarray(rows)
        return not np.any(cdist(points, stored[:, :3]) < radius + stored[:, 3] + gap)


def trace_tubes(
    seeds: np.ndarray,
    direction_at: Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray],
    allowed: Callable[[np.ndarray, np.ndarray], np.ndarray],
    lengths: np.ndarray,
    radii: np.ndarray,
    rng: np.random.Generator,
    tortuosity: float,
    step: float = 1.0,
) -> list[Tube | None]:
    """Grow centrelines both ways from ``seeds`` (N, 3), all tubes in lockstep.

    ``direction_at(points, previous, which)`` gives unit directions (n, 3) for the tubes ``which``
    (previous is None for the first step); ``allowed(points, radii)`` says where a tube may go
    (location class, clearance); growth stops where it may not. The centreline follows the field
    with a smooth random wander of amplitude ``tortuosity``. None for seeds that are not allowed.
    """
    n = len(seeds)
    every = np.arange(n)
    start_ok = allowed(seeds, radii)
    share = rng.uniform(0.3, 0.7, n)
    initial = direction_at(seeds, None, every)
    halves = []
    for sign, targets in ((1.0, lengths * share), (-1.0, lengths * (1 - share))):
        position = seeds.copy()
        previous = sign * initial
        wander = np.zeros((n, 3))
        travelled = np.zeros(n)
        active = start_ok & (targets > 1e-9)
        path = [seeds.copy()]
        counts = np.ones(n, int)
        while active.any():
            which = np.nonzero(active)[0]
            h = np.minimum(step, targets[which] - travelled[which])[:, None]
            wander[which] = 0.85 * wander[which] + rng.normal(0, 0.35, (len(which), 3))
            direction = direction_at(position[which], previous[which], which) + tortuosity * wander[which]
            direction /= np.linalg.norm(direction, axis=1, keepdims=True)
            candidate = position[which] + h * direction
            ok = allowed(candidate, radii[which])
            moved = which[ok]
            position[moved] = candidate[ok]
            previous[moved] = direction[ok]
            travelled[moved] += h[ok, 0]
            layer = np.full((n, 3), np.nan)
            layer[moved] = candidate[ok]
            path.append(layer)
            counts[moved] += 1
            active[which[~ok]] = False
            active &= travelled < targets - 1e-9
        stacked = np.stack(path)
        halves.append([stacked[:, i][~np.isnan(stacked[:, i, 0])] for i in range(n)])
    return [
        Tube(points=np.concatenate([halves[1][i][::-1], halves[0][i][1:]]), radius=float(radii[i]))
        if start_ok[i]
        else None
        for i in range(n)
    ]


@dataclass(frozen=True)
class _Morphology:
    """Log-normal diameter and length of the PVS of one location (medians in mm)."""

    diameter_median: float
    diameter_sigma: float
    length_median: float
    length_sigma: float
    length_cap: float


# Design choices (not fitted to data): white-matter PVS long and thin, basal-ganglia PVS short and
# wider, hippocampal and midbrain PVS short; all clipped to the configured ranges.
_MORPHOLOGY = {
    "white_matter": _Morphology(1.1, 0.35, 9.0, 0.5, 20.0),
    "basal_ganglia": _Morphology(1.5, 0.35, 4.0, 0.45, 10.0),
    "hippocampus": _Morphology(1.3, 0.3, 3.0, 0.3, 6.0),
    "midbrain": _Morphology(1.1, 0.3, 3.0, 0.3, 6.0),
}


@dataclass(frozen=True)
class PlacedPVS:
    """One drawn PVS: its tube and the location class it was drawn in."""

    tube: Tube
    location: str


def place_pvs(
    context: AnatomyContext,
    counts: dict[str, int],
    rng: np.random.Generator,
    occupied: SpatialHash,
    forbidden: np.ndarray,
    anterior_commissure: np.ndarray,
    diameter_range: tuple[float, float],
    length_range: tuple[float, float],
    gap_mm: float,
) -> list[PlacedPVS]:
    """Draw ``counts[location]`` PVS per location class, apart from each other and from ``forbidden``.

    ``forbidden`` (context grid, bool) marks lesions PVS must avoid (WMH); ``gap_mm`` is the least
    distance between the surfaces of two objects (chosen so their masks are not 26-connected).
    Basal-ganglia seeds are weighted toward the anterior commissure and the inferior basal ganglia.
    Candidates are traced in batches and accepted in order while they keep clear of everything
    placed before.
    """
    placed: list[PlacedPVS] = []
    forbidden_field = forbidden.astype(np.float32)
    for location, count in counts.items():
        if count <= 0:
            continue
        clearance = context.clearance[location]
        voxels = np.argwhere(np.isin(context.regions, LOCATIONS[location]))
        centres = context.grid.world(voxels.astype(float))
        # seeds only where the thinnest PVS fits and no lesion is near
        keep = (context.sample_context(clearance, centres) >= diameter_range[0] / 2 + 0.5) & (
            context.sample_context(forbidden_field, centres) < 0.01
        )
        centres = centres[keep]
        if not len(centres):
            continue
        weights = _seed_weights(
            location, centres, context.regions[tuple(voxels[keep].T)], context, anterior_commissure
        )
        morphology = _MORPHOLOGY[location]

        def allowed(points: np.ndarray, radii: np.ndarray, location: str = location, clearance=clearance):
            ok = np.isin(context.region_at(points), LOCATIONS[location])
            ok &= context.sample_context(clearance, points) >= radii + 0.5
            return ok & (context.sample_context(forbidden_field, points) < 0.01)

        done, attempts = 0, 0
        while done < count and attempts < 20 * count:
            batch = max(8, 2 * (count - done))
            attempts += batch
            seeds = centres[rng.choice(len(centres), batch, p=weights)]
            seeds = seeds + rng.uniform(-0.5, 0.5, (batch, 3)) * context.grid.spacing
            diameters = np.clip(
                rng.lognormal(np.log(morphology.diameter_median), morphology.diameter_sigma, batch),
                *diameter_range,
            )
            cap = min(length_range[1], morphology.length_cap)
            lengths = np.clip(
                rng.lognormal(np.log(morphology.length_median), morphology.length_sigma, batch),
                length_range[0],
                cap,
            )
            direction_at = _direction_field(location, seeds, context, anterior_commissure, rng)
            tubes = trace_tubes(seeds, direction_at, allowed, lengths, diameters / 2, rng, tortuosity=0.12)
            for tube in tubes:
                if done == count:
                    break
                if tube is None or tube.length < length_range[0]:
                    continue
                if not occupied.is_free(tube.points, tube.radius, gap_mm):
                    continue
                occupied.add(tube.points, tube.radius)
                placed.append(PlacedPVS(tube=tube, location=location))
                done += 1
        if done < count:
            LOGGER.debug("placed %d of %d %s PVS", done, count, location)
    return placed


def _seed_weights(
    location: str,
    centres: np.ndarray,
    regions: np.ndarray,
    context: AnatomyContext,
    anterior_commissure: np.ndarray,
) -> np.ndarray:
    """Seed probabilities of candidate voxel centres (N, 3) with PVS region labels (N,)."""
    if location == "basal_ganglia":
        offset = centres - anterior_commissure
        height = offset @ context.up
        weights = np.exp(-(offset**2).sum(1) / (2 * 16.0**2)) * np.exp(-np.maximum(height, 0) / 10.0)
    elif location == "white_matter":
        cso = np.isin(regions, [r.index for r in REGIONS if r.structure == "centrum_semiovale"])
        weights = np.where(cso, 3.0, 1.0)  # most white-matter PVS in the centrum semiovale
    else:
        weights = np.ones(len(centres))
    return weights / weights.sum()


def _direction_field(
    location: str,
    seeds: np.ndarray,
    context: AnatomyContext,
    anterior_commissure: np.ndarray,
    rng: np.random.Generator,
) -> Callable[[np.ndarray, np.ndarray | None, np.ndarray], np.ndarray]:
    """The direction function ``f(points, previous, which)`` PVS of ``location`` follow."""
    if location == "white_matter":

        def radial(points: np.ndarray, previous: np.ndarray | None, which: np.ndarray) -> np.ndarray:
            away = context.sample_context(context.away_from_ventricles, points)
            toward = context.sample_context(context.toward_cortex, points)
            weight = np.exp(-context.sample_context(context.cortex_distance, points) / 4.0)
            return _unit(away + weight[:, None] * toward, previous)

        return radial
    n = len(seeds)
    if location == "basal_ganglia":
        lateral = np.sign((seeds - anterior_commissure) @ context.right)[:, None] * context.right
        fixed = context.up + 0.3 * lateral + rng.normal(0, 0.15, (n, 3))
    elif location == "hippocampus":
        fixed = context.anterior + 0.4 * rng.normal(0, 1, (n, 3))
    else:
        fixed = context.up + rng.normal(0, 0.15, (n, 3))

    def constant(points: np.ndarray, previous: np.ndarray | None, which: np.ndarray) -> np.ndarray:
        return _unit(fixed[which], previous)

    return constant


def _unit(directions: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Normalised directions, flipped to continue ``previous`` where given."""
    directions = directions / (np.linalg.norm(directions, axis=1, keepdims=True) + 1e-9)
    if previous is not None:
        directions *= np.where((directions * previous).sum(1) < 0, -1.0, 1.0)[:, None]
    return directions
