"""Distractors a PVS model must not segment: WMH, lacunes with gliotic rims, and flow voids.

Definitions follow STRIVE (Wardlaw et al. 2013): lacunes are round or ovoid, CSF-filled cavities
of 3-15 mm in the basal ganglia, thalamus or white matter, often with a hyperintense FLAIR rim;
white matter hyperintensities (WMH) are bright on T2w/FLAIR and iso- to hypointense on T1w, as
periventricular caps and bands and deep punctate to confluent patches (graded here with a
Fazekas-like 0-3 score). Vessels with flow voids are thin dark tubes along the cortical surface and
the ventricle walls, longer and more tortuous than PVS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.synth.anatomy import CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL, TISSUE_CLASSES
from mednet_pvs.synth.placement import AnatomyContext, SpatialHash, distance_inside, trace_tubes
from mednet_pvs.synth.shapes import Ellipsoid, Shell, Tube

__all__ = ["Lacune", "place_lacunes", "place_vessels", "wmh_field"]

_WHITE_MATTER = TISSUE_CLASSES["white_matter"]
_LATERAL_VENTRICLES = (4, 43)
_THALAMUS = tuple(r.index for r in REGIONS if r.structure == "thalamus")
_LACUNE_SITES = {"basal_ganglia": 0.5, "thalamus": 0.15, "white_matter": 0.35}


def wmh_field(context: AnatomyContext, fazekas: int, rng: np.random.Generator) -> np.ndarray:
    """Soft WMH map in [0, 1] on the context grid (0 everywhere for Fazekas grade 0).

    Periventricular WMH: a lining of the lateral ventricles plus caps at the frontal and occipital
    horns, thicker with the grade; deep WMH: irregular punctate (grade 1) to confluent (grade 3)
    patches in the white matter. Edges are made irregular by smooth noise.
    """
    labels = context.context_labels
    white_matter = np.isin(labels, _WHITE_MATTER)
    if fazekas == 0 or not white_matter.any():
        return np.zeros(labels.shape, np.float32)
    spacing = context.context.spacing
    ventricles = np.isin(labels, _LATERAL_VENTRICLES)
    distance = ndimage.distance_transform_edt(~ventricles, sampling=spacing)
    field = np.exp(-distance / (1.0, 2.0, 3.5)[fazekas - 1])
    # caps at the frontal and occipital horns: ventricle voxels at the anterior/posterior extremes
    index = np.argwhere(ventricles)
    if len(index):
        world = context.context.world(index.astype(float))
        along = world @ context.anterior
        side = world @ context.right
        for hemisphere in (side < np.median(side), side >= np.median(side)):
            for pick in (np.argmax, np.argmin):
                tip = world[hemisphere][pick(along[hemisphere])]
                field = np.maximum(field, _gaussian_blob(context, tip, (2.5, 4.0, 6.0)[fazekas - 1]))
    n_deep = int(rng.integers(*((1, 6), (4, 14), (10, 30))[fazekas - 1]))
    candidates = np.argwhere(white_matter & (distance > 6))
    if len(candidates):
        for voxel in candidates[rng.integers(0, len(candidates), n_deep)]:
            centre = context.context.world(voxel[None].astype(float))[0]
            size = rng.uniform(1.0, (2.0, 3.0, 4.5)[fazekas - 1])
            field = np.maximum(field, 1.3 * _gaussian_blob(context, centre, size))
    irregular = ndimage.gaussian_filter(rng.normal(0, 1, labels.shape), 1.5 / spacing)
    irregular /= irregular.std() + 1e-6
    field *= 1 + 0.45 * irregular
    soft = np.clip((field - 0.5) / 0.25 + 0.5, 0, 1) * white_matter
    return ndimage.gaussian_filter(soft.astype(np.float32), 0.6)


def _gaussian_blob(context: AnatomyContext, centre: np.ndarray, sigma_mm: float) -> np.ndarray:
    grid = context.context
    axes = [
        grid.affine[k, k] * np.arange(n) + grid.affine[k, 3] - centre[k] for k, n in enumerate(grid.shape)
    ]
    profiles = [np.exp(-(a**2) / (2 * sigma_mm**2)) for a in axes]
    return profiles[0][:, None, None] * profiles[1][None, :, None] * profiles[2][None, None, :]


@dataclass(frozen=True)
class Lacune:
    """A lacune: the CSF-filled cavity and its gliotic rim."""

    cavity: Ellipsoid
    rim: Shell
    site: str


def place_lacunes(
    context: AnatomyContext, count: int, rng: np.random.Generator, occupied: SpatialHash, gap_mm: float
) -> list[Lacune]:
    """Place ``count`` lacunes (3-15 mm) in the basal ganglia, thalamus and white matter.

    A lacune and its rim stay inside brain tissue (never touching CSF) and apart from other objects.
    """
    if count <= 0:
        return []
    labels = context.context_labels
    csf = np.isin(labels, TISSUE_CLASSES["ventricle"] + TISSUE_CLASSES["csf"])
    tissue_clearance = distance_inside((labels > 0) & ~csf, context.context.spacing)
    sites = {k: v for k, v in context.clearance.items() if k in _LACUNE_SITES}
    sites["thalamus"] = distance_inside(np.isin(context.context_regions, _THALAMUS), context.context.spacing)
    lacunes: list[Lacune] = []
    for _ in range(count * 20):
        if len(lacunes) == count:
            break
        site = str(rng.choice(list(_LACUNE_SITES), p=list(_LACUNE_SITES.values())))
        diameter = float(np.clip(rng.lognormal(np.log(6.0), 0.4), 3.0, 15.0))
        axes = diameter / 2 * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)])
        rim = float(rng.uniform(0.6, 1.5))
        candidates = np.argwhere(sites[site] > axes.max() / 2)
        if not len(candidates):
            continue
        centre = context.context.world(candidates[rng.integers(len(candidates))][None].astype(float))[0]
        centre += rng.uniform(-0.5, 0.5, 3) * context.context.spacing
        reach = axes.max() + rim
        if context.sample_context(tissue_clearance, centre[None])[0] < reach:
            continue
        if not occupied.is_free(centre[None], reach, gap_mm):
            continue
        rotation = Rotation.random(random_state=rng).as_matrix()
        cavity = Ellipsoid(centre=centre, axes=axes, rotation=rotation)
        shell = Shell(outer=Ellipsoid(centre=centre, axes=axes + rim, rotation=rotation), inner=cavity)
        occupied.add(centre[None], reach)
        lacunes.append(Lacune(cavity=cavity, rim=shell, site=site))
    return lacunes


@dataclass(frozen=True)
class _VesselKind:
    seeds: np.ndarray  # context voxel indices
    allowed: np.ndarray  # context mask the vessel may run in
    normal: np.ndarray  # (3, ...) unit field the vessel runs perpendicular to
    length_mm: tuple[float, float]
    radius_mm: tuple[float, float]


def place_vessels(
    context: AnatomyContext, count: int, rng: np.random.Generator, occupied: SpatialHash, gap_mm: float
) -> list[Tube]:
    """Place ``count`` flow-void vessels: cortical surface vessels (3/4) and subependymal veins."""
    labels = context.context_labels
    extracerebral = np.isin(labels, (CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL, 24))
    white_matter = np.isin(labels, _WHITE_MATTER)
    ventricles = np.isin(labels, TISSUE_CLASSES["ventricle"])
    near_ventricle = white_matter & ndimage.binary_dilation(ventricles, iterations=2) & ~ventricles
    kinds = {
        "surface": _VesselKind(
            np.argwhere(extracerebral & (context.cortex_distance <= 2.0)),
            extracerebral | np.isin(labels, TISSUE_CLASSES["cortex"]),
            context.toward_cortex,
            (10.0, 40.0),
            (0.35, 1.0),
        ),
        "subependymal": _VesselKind(
            np.argwhere(near_ventricle),
            white_matter | np.isin(labels, TISSUE_CLASSES["caudate"]),
            context.away_from_ventricles,
            (8.0, 25.0),
            (0.35, 0.6),
        ),
    }
    n_surface = int(rng.binomial(count, 0.75))
    vessels: list[Tube] = []
    for name, target in (("surface", n_surface), ("subependymal", count - n_surface)):
        kind = kinds[name]
        if not len(kind.seeds):
            continue
        done, attempts = 0, 0
        while done < target and attempts < 30 * target:
            batch = max(8, 2 * (target - done))
            attempts += batch
            seeds = context.context.world(kind.seeds[rng.integers(len(kind.seeds), size=batch)].astype(float))
            normals = context.sample_context(kind.normal, seeds)
            tangents = np.cross(normals, rng.normal(0, 1, (batch, 3)))

            def along_surface(points, previous, which, kind=kind, tangents=tangents):
                normal = context.sample_context(kind.normal, points)
                heading = tangents[which] if previous is None else previous
                direction = heading - (heading * normal).sum(1, keepdims=True) * normal
                return direction / (np.linalg.norm(direction, axis=1, keepdims=True) + 1e-9)

            def allowed(points, radii, kind=kind):
                return _lookup(context, kind.allowed, points)

            lengths = rng.uniform(*kind.length_mm, batch)
            radii = rng.uniform(*kind.radius_mm, batch)
            for tube in trace_tubes(seeds, along_surface, allowed, lengths, radii, rng, tortuosity=0.35):
                if done == target:
                    break
                if tube is None or tube.length < kind.length_mm[0] / 2:
                    continue
                if not occupied.is_free(tube.points, tube.radius, gap_mm):
                    continue
                occupied.add(tube.points, tube.radius)
                vessels.append(tube)
                done += 1
    return vessels


def _lookup(context: AnatomyContext, mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Nearest-voxel value of a context-grid mask at world points (False outside the grid)."""
    index = np.rint(context.context.index(points)).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(mask.shape)), axis=1)
    out = np.zeros(len(points), bool)
    out[inside] = mask[tuple(index[inside].T)]
    return out
