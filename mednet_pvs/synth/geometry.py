"""Grids and random spatial transforms of the phantom generator.

Coordinates: every phantom lives in its own "subject" world space (mm, RAS). A
:class:`SubjectTransform` maps subject points to anatomy points (a random affine, a smooth random
deformation and an age-dependent enlargement of ventricles and sulci), so label maps are sampled
by pulling anatomy labels back to any subject grid. Output grids are axis-aligned (closest RAS+),
which is what :func:`mednet_pvs.regions.freesurfer.pvs_regions_from_freesurfer` expects.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mednet_pvs.synth.anatomy import CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL, TISSUE_CLASSES, Anatomy

__all__ = ["Grid", "SubjectTransform", "atrophy_fields", "fit_grid", "sample_transform"]


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and voxel-to-world affine (axis-aligned, positive spacing)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates (N, 3) of voxel indices (N, 3) (fractional indices allowed)."""
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    @functools.cached_property
    def _inverse(self) -> np.ndarray:
        return np.linalg.inv(self.affine)

    def index(self, world: np.ndarray) -> np.ndarray:
        """Fractional voxel indices (N, 3) of world points (N, 3)."""
        return world @ self._inverse[:3, :3].T + self._inverse[:3, 3]

    def subdivided(self, factors: tuple[int, int, int]) -> Grid:
        """A finer grid whose ``factors`` blocks of voxels tile this grid's voxels exactly."""
        factors_arr = np.asarray(factors, dtype=float)
        affine = self.affine.copy()
        affine[:3, :3] = self.affine[:3, :3] / factors_arr
        affine[:3, 3] = self.world(np.atleast_2d(-0.5 + 0.5 / factors_arr))[0]
        return Grid(tuple(int(s * f) for s, f in zip(self.shape, factors, strict=True)), affine)

    def resampled(self, spacing: float) -> Grid:
        """A grid covering the same field of view with isotropic ``spacing`` (mm)."""
        extent = self.spacing * np.asarray(self.shape)
        shape = tuple(int(v) for v in np.maximum(np.ceil(extent / spacing), 1))
        corner = self.world(np.full((1, 3), -0.5))[0]
        affine = np.diag([spacing, spacing, spacing, 1.0])
        affine[:3, 3] = corner + spacing / 2
        return Grid(shape, affine)


def fit_grid(points: np.ndarray, spacing: np.ndarray, margin_mm: np.ndarray) -> Grid:
    """The axis-aligned grid with ``spacing`` covering ``points`` (N, 3) plus ``margin_mm`` per side."""
    lo = points.min(0) - margin_mm
    hi = points.max(0) + margin_mm
    shape = tuple(int(v) for v in np.ceil((hi - lo) / spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = lo + spacing / 2
    return Grid(shape, affine)


@functools.lru_cache(maxsize=4)
def atrophy_fields(anatomy: Anatomy) -> tuple[np.ndarray, np.ndarray]:
    """Unit-scale displacement fields (3, *anatomy shape, mm) that enlarge ventricles and sulci.

    Each field points toward the structure (lateral ventricles, or extracerebral CSF) with a
    magnitude decaying as exp(-distance / length); pulling labels along it grows the structure by
    about the chosen scale (mm) at its boundary. Cached per anatomy.
    """
    ventricles = np.isin(anatomy.labels, TISSUE_CLASSES["ventricle"])
    sulci = np.isin(anatomy.labels, (CSF_EXTRACEREBRAL, HEAD_EXTRACEREBRAL, 24))
    return (
        _toward(ventricles, anatomy.spacing, length_mm=8.0),
        _toward(sulci, anatomy.spacing, length_mm=2.0),
    )


def _toward(mask: np.ndarray, spacing: np.ndarray, length_mm: float) -> np.ndarray:
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing).astype(np.float32)
    potential = ndimage.gaussian_filter(np.exp(-distance / length_mm), 1.0)
    gradient = np.stack(np.gradient(potential, *spacing))
    norm = np.sqrt((gradient**2).sum(0)) + 1e-6
    magnitude = np.exp(-distance / length_mm) * (~mask)
    return (gradient / norm * magnitude).astype(np.float32)


@dataclass(frozen=True)
class SubjectTransform:
    """Map from subject world points to anatomy world points (mm).

    ``p0 = anatomy_centre + matrix @ x``; ``p = p0 + deformation(p0) + ventricle_scale * V(p0) +
    sulcal_scale * S(p0)`` with V, S from :func:`atrophy_fields` and a smooth random deformation
    given on a coarse control grid in anatomy space.
    """

    anatomy: Anatomy
    matrix: np.ndarray  # 3x3: subject direction -> anatomy direction
    anatomy_centre: np.ndarray
    control_points: np.ndarray  # (3, cx, cy, cz) displacement (mm) on the control grid
    control_spacing_mm: float
    ventricle_scale_mm: float
    sulcal_scale_mm: float

    def anatomy_points(self, points: np.ndarray) -> np.ndarray:
        """Anatomy world points (N, 3) of subject world points (N, 3)."""
        p0 = points @ self.matrix.T + self.anatomy_centre
        vox = Grid(self.anatomy.labels.shape, self.anatomy.affine).index(p0).T
        control_index = (p0 - self._control_origin()).T / self.control_spacing_mm
        displacement = np.stack(
            [ndimage.map_coordinates(c, control_index, order=3, mode="nearest") for c in self.control_points]
        )
        if self.ventricle_scale_mm or self.sulcal_scale_mm:
            ventricles, sulci = atrophy_fields(self.anatomy)
            for field, scale in ((ventricles, self.ventricle_scale_mm), (sulci, self.sulcal_scale_mm)):
                if scale:
                    displacement += scale * np.stack(
                        [ndimage.map_coordinates(c, vox, order=1, mode="constant") for c in field]
                    )
        return p0 + displacement.T

    def _control_origin(self) -> np.ndarray:
        extent = (np.asarray(self.control_points.shape[1:]) - 1) * self.control_spacing_mm
        return self.anatomy_centre - extent / 2

    def subject_direction(self, anatomy_direction: np.ndarray) -> np.ndarray:
        """Unit subject-space direction of an anatomy-space direction (ignores the deformation)."""
        direction = np.linalg.solve(self.matrix, anatomy_direction)
        return direction / np.linalg.norm(direction)

    def subject_points(self, anatomy_points: np.ndarray, iterations: int = 0) -> np.ndarray:
        """Subject points (N, 3) of anatomy points (N, 3).

        ``iterations=0`` inverts the affine part only; each fixed-point iteration then corrects
        for the deformation (it converges because the deformation is small and smooth).
        """
        inverse = np.linalg.inv(self.matrix)
        points = (anatomy_points - self.anatomy_centre) @ inverse.T
        for _ in range(iterations):
            points = points - (self.anatomy_points(points) - anatomy_points) @ inverse.T
        return points

    def anatomy_voxel_coordinates(self, grid: Grid, stride_mm: float = 4.0) -> np.ndarray:
        """Fractional anatomy voxel indices (3, *grid.shape) of every voxel centre of ``grid``.

        The map is evaluated exactly on a lattice of about ``stride_mm`` and linearly interpolated
        in between (the map is smooth, so the error is far below a voxel).
        """
        axes = [
            np.linspace(0, n - 1, max(2, int(np.ceil((n - 1) * s / stride_mm)) + 1))
            for n, s in zip(grid.shape, grid.spacing, strict=True)
        ]
        lattice = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        anatomy_world = self.anatomy_points(grid.world(lattice))
        coarse = Grid(self.anatomy.labels.shape, self.anatomy.affine).index(anatomy_world)
        coarse = coarse.T.reshape(3, *(len(a) for a in axes)).astype(np.float32)
        zoom = [n / len(a) for n, a in zip(grid.shape, axes, strict=True)]
        # mode="nearest": rounding can put the last output sample a hair beyond the last input one
        return np.stack([ndimage.zoom(c, zoom, order=1, grid_mode=False, mode="nearest") for c in coarse])


def sample_transform(
    anatomy: Anatomy,
    rng: np.random.Generator,
    rotation_deg: float,
    scaling: tuple[float, float],
    shear: float,
    deformation_std_mm: float,
    control_spacing_mm: float,
    ventricle_scale_mm: float,
    sulcal_scale_mm: float,
    global_scale: float = 1.0,
) -> SubjectTransform:
    """Draw a random subject transform (rotations in degrees, per-axis scaling, shear)."""
    rotation = Rotation.from_euler(
        "xyz", rng.uniform(-rotation_deg, rotation_deg, 3), degrees=True
    ).as_matrix()
    scale = rng.uniform(*scaling, 3) * global_scale
    shear_matrix = np.eye(3) + np.triu(rng.uniform(-shear, shear, (3, 3)), 1)
    # subject -> anatomy is the inverse of the head's pose: a larger head means smaller steps in anatomy
    matrix = np.linalg.inv(rotation @ shear_matrix @ np.diag(scale))
    brain = np.argwhere(anatomy.labels > 0)
    centre = Grid(anatomy.labels.shape, anatomy.affine).world((brain.min(0) + brain.max(0)) / 2)
    extent = (brain.max(0) - brain.min(0)) * anatomy.spacing + 4 * control_spacing_mm
    n_control = np.maximum(np.ceil(extent / control_spacing_mm).astype(int) + 1, 4)
    control = rng.normal(0, deformation_std_mm, (3, *n_control)).astype(np.float32)
    return SubjectTransform(
        anatomy=anatomy,
        matrix=matrix,
        anatomy_centre=centre,
        control_points=control,
        control_spacing_mm=control_spacing_mm,
        ventricle_scale_mm=ventricle_scale_mm,
        sulcal_scale_mm=sulcal_scale_mm,
    )
