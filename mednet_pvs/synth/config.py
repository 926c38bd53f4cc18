"""Parameters of the phantom generator (all ranges are inclusive; lengths in mm)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mednet_pvs.errors import UsageError

__all__ = ["SynthConfig"]


@dataclass(frozen=True)
class SynthConfig:
    """Generator settings; the defaults give 1 mm isotropic, whole-brain, realistic phantoms.

    Grids: ``voxel_size`` fixes the output voxel size; ``random_voxel_size`` draws one per subject
    (in-plane from ``in_plane_range_mm``, slice thickness from ``slice_range_mm``, slice axis at
    random, axial most often). The anatomy is rendered on a model grid that subdivides each output
    voxel to at most ``model_resolution_mm`` and PVS partial volumes are evaluated on a sub-voxel
    lattice of at most ``supersample_mm``. ``crop_mm`` (fast path for training) restricts the output
    to a random box of that size inside the brain, biased toward PVS.
    """

    # anatomy and spatial augmentation
    anatomies: tuple[str, ...] = ("fs-subject", "fs-subject-mirrored")
    rotation_deg: float = 10.0
    scaling_range: tuple[float, float] = (0.93, 1.07)
    shear: float = 0.02
    deformation_std_mm: float = 1.5
    deformation_spacing_mm: float = 24.0
    atrophy: bool = True
    # grid
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    random_voxel_size: bool = False
    in_plane_range_mm: tuple[float, float] = (0.45, 1.2)
    slice_range_mm: tuple[float, float] = (0.8, 3.0)
    model_resolution_mm: float = 1.0
    supersample_mm: float = 0.2
    fov_margin_mm: float = 6.0
    crop_mm: tuple[float, float, float] | None = None
    # ground truth: a voxel is PVS when at least gt_fraction_threshold of it lies inside a PVS, or when
    # the centreline of a PVS crosses it and that PVS's centreline voxels are on average at least
    # gt_centreline_threshold inside PVS (see generator.ground_truth_mask)
    gt_fraction_threshold: float = 0.5
    gt_centreline_threshold: float = 0.25
    # population and lesions
    age_range: tuple[float, float] = (40.0, 90.0)
    pvs_grade: int | None = None  # fixed Potter-like grade 0-4 for both BG and WM; None = random
    pvs_diameter_range_mm: tuple[float, float] = (0.5, 3.0)
    pvs_length_range_mm: tuple[float, float] = (1.0, 20.0)
    distractors: bool = True
    # contrast and acquisition
    snr_scale: float = 1.0
    bias_std_max: float = 0.15
    gamma_std: float = 0.12
    psf_sigma_range: tuple[float, float] = (0.3, 0.6)

    def __post_init__(self) -> None:
        checks = {
            "voxel_size": all(v > 0 for v in self.voxel_size) and len(self.voxel_size) == 3,
            "gt_fraction_threshold": 0 < self.gt_fraction_threshold <= 1,
            "gt_centreline_threshold": 0 < self.gt_centreline_threshold <= 1,
            "pvs_grade": self.pvs_grade is None or 0 <= self.pvs_grade <= 4,
            "pvs_diameter_range_mm": 0 < self.pvs_diameter_range_mm[0] <= self.pvs_diameter_range_mm[1],
            "pvs_length_range_mm": 0 < self.pvs_length_range_mm[0] <= self.pvs_length_range_mm[1],
            "supersample_mm": self.supersample_mm > 0,
            "model_resolution_mm": self.model_resolution_mm > 0,
            "crop_mm": self.crop_mm is None or (len(self.crop_mm) == 3 and all(v > 0 for v in self.crop_mm)),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise UsageError(
                f"invalid phantom settings: {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (recorded in the dataset description)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SynthConfig:
        """Settings from :meth:`to_dict` output; unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown phantom settings: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
