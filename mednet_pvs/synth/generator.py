"""Generate one phantom subject: images per contrast plus the exact PVS ground truth.

Pipeline (see docs/synthetic.md): draw the participant (age, sex, burdens) -> warp a bundled
FreeSurfer-style anatomy with a random affine, a smooth deformation and age-related atrophy ->
place WMH, lacunes, PVS and vessels in subject space -> rasterise them with partial volumes on a
model grid that subdivides the output voxels -> per contrast: tissue intensities, lesion and PVS
mixing, then the acquisition (bias, PSF, slice profile, Rician noise, gamma, skull stripping).

Every random choice comes from a stream derived from the subject seed and a stream name, so the
same seed gives the same subject, and asking for fewer or more contrasts does not change the
anatomy, the lesions or the other contrasts.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from mednet_pvs.errors import UsageError
from mednet_pvs.regions.freesurfer import pvs_regions_from_freesurfer
from mednet_pvs.regions.lut import region_by_index
from mednet_pvs.synth.anatomy import TISSUE_CLASSES, Anatomy, freesurfer_labels, load_anatomy
from mednet_pvs.synth.config import SynthConfig
from mednet_pvs.synth.contrast import (
    CONTRASTS,
    ContrastModel,
    acquire,
    sample_acquisition,
    sample_contrast,
    smooth_multiplier,
)
from mednet_pvs.synth.geometry import Grid, SubjectTransform, fit_grid, sample_transform
from mednet_pvs.synth.lesions import Lacune, place_lacunes, place_vessels, wmh_field
from mednet_pvs.synth.placement import AnatomyContext, PlacedPVS, SpatialHash, place_pvs
from mednet_pvs.synth.shapes import Coverage, Tube, rasterize, supersample_factors

__all__ = ["DISTRACTOR_LABELS", "Phantom", "generate_subject", "ground_truth_mask", "subject_seed"]

LOGGER = logging.getLogger(__name__)

#: Labels of the distractor image (``desc-distractors_dseg``); PVS voxels are never distractors.
DISTRACTOR_LABELS = {1: "lacune", 2: "lacune_rim", 3: "wmh", 4: "vessel", 5: "csf"}
#: Whole-brain PVS counts per Potter-like grade 0-4 (design choice; Potter's grades count PVS on one
#: slice, these are 3-D totals over both hemispheres).
_BG_COUNTS = ((0, 0), (3, 10), (10, 25), (25, 50), (50, 90))
_WM_COUNTS = ((0, 0), (10, 40), (40, 100), (100, 200), (200, 350))
_CONTEXT_SPACING_MM = 2.0
_CSF_LABELS = TISSUE_CLASSES["ventricle"] + TISSUE_CLASSES["csf"]
_EXTRACEREBRAL_LABELS = TISSUE_CLASSES["csf"] + TISSUE_CLASSES["meninges"]


def subject_seed(base_seed: int, index: int) -> int:
    """The seed of subject ``index`` of a dataset generated with ``base_seed`` (uint32)."""
    return int(np.random.SeedSequence([base_seed, index]).generate_state(1, np.uint32)[0])


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(stream.encode())]))


@dataclass
class Phantom:
    """One generated subject. All images share ``grid`` (the output grid)."""

    seed: int
    config: SynthConfig
    grid: Grid
    images: dict[str, nib.Nifti1Image]  # contrast -> acquired image (float32)
    pvs_fraction: nib.Nifti1Image  # partial-volume fraction of PVS per voxel (float32)
    pvs_mask: nib.Nifti1Image  # uint8: fraction >= threshold
    pvs_instances: nib.Nifti1Image  # PVS id (table ``pvs_id``) of every mask voxel
    regions: nib.Nifti1Image  # PVS region labels (lut.py)
    aseg: nib.Nifti1Image  # FreeSurfer-style labels of the phantom anatomy
    distractors: nib.Nifti1Image  # DISTRACTOR_LABELS
    pvs_table: pd.DataFrame
    distractor_table: pd.DataFrame
    participant: dict[str, object]
    sidecars: dict[str, dict[str, object]]
    tubes: list[Tube] = field(repr=False)  # the high-resolution PVS definitions, id = index + 1


@dataclass(frozen=True)
class _Participant:
    age: float
    sex: str
    anatomy: str
    grade_bg: int
    grade_wm: int
    fazekas: int
    n_lacunes: int
    ventricle_scale_mm: float
    sulcal_scale_mm: float
    head_scale: float


def _draw_participant(config: SynthConfig, rng: np.random.Generator) -> _Participant:
    age = float(rng.uniform(*config.age_range))
    sex = str(rng.choice(["F", "M"]))
    latent = rng.normal((age - 40.0) / 50.0 * 3.0, 1.0)  # older subjects tend to carry more SVD burden

    def grade(spread: float, top: int) -> int:
        return int(np.clip(np.rint(latent + rng.normal(0, spread)), 0, top))

    grade_bg, grade_wm = grade(0.6, 4), grade(0.8, 4)
    if config.pvs_grade is not None:
        grade_bg = grade_wm = config.pvs_grade
    fazekas = int(np.clip(np.rint(0.6 * latent + rng.normal(0, 0.7)), 0, 3))
    n_lacunes = min(int(rng.poisson((0.1, 0.4, 1.2, 2.5)[fazekas])), 8) if config.distractors else 0
    atrophy = (age - 45.0) / 45.0
    return _Participant(
        age=round(age, 1),
        sex=sex,
        anatomy=str(rng.choice(list(config.anatomies))),
        grade_bg=grade_bg,
        grade_wm=grade_wm,
        fazekas=fazekas if config.distractors else 0,
        n_lacunes=n_lacunes,
        ventricle_scale_mm=float(max(0.0, 3.0 * atrophy + rng.normal(0, 0.7))) if config.atrophy else 0.0,
        sulcal_scale_mm=float(max(0.0, 0.8 * atrophy + rng.normal(0, 0.2))) if config.atrophy else 0.0,
        head_scale=float((1.03 if sex == "M" else 0.97) * rng.normal(1.0, 0.02)),
    )


def _voxel_size(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    if not config.random_voxel_size:
        return np.asarray(config.voxel_size, dtype=float)
    in_plane = rng.uniform(*config.in_plane_range_mm)
    thickness = max(in_plane, rng.uniform(*config.slice_range_mm))
    spacing = np.full(3, round(in_plane, 2))
    spacing[rng.choice(3, p=[0.15, 0.15, 0.7])] = round(thickness, 2)
    return spacing


def _labels_on(transform: SubjectTransform, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    coords = transform.anatomy_voxel_coordinates(grid)
    labels = ndimage.map_coordinates(transform.anatomy.labels, coords, order=0, mode="constant", cval=0)
    return labels.astype(np.uint16), coords


def _regions(labels: np.ndarray, grid: Grid) -> np.ndarray:
    return pvs_regions_from_freesurfer(freesurfer_labels(labels), grid.affine)


def _crop_grid(full: Grid, crop_mm: Sequence[float], centre: np.ndarray) -> Grid:
    size = np.minimum(np.maximum(np.rint(np.asarray(crop_mm) / full.spacing).astype(int), 1), full.shape)
    start = np.rint(full.index(centre[None])[0] - size / 2).astype(int)
    start = np.clip(start, 0, np.asarray(full.shape) - size)
    affine = full.affine.copy()
    affine[:3, 3] = full.world(start[None].astype(float))[0]
    return Grid(tuple(int(s) for s in size), affine)


def _head_axes(transform: SubjectTransform) -> np.ndarray:
    return np.stack([transform.subject_direction(axis) for axis in np.eye(3)])


def _image(data: np.ndarray, grid: Grid) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, grid.affine)
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _resample(field_grid: Grid, values: np.ndarray, grid: Grid, order: int) -> np.ndarray:
    """Resample a field between axis-aligned grids (spline ``order``, 0 outside)."""
    index = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in grid.shape), indexing="ij"))
    matrix = np.linalg.inv(field_grid.affine) @ grid.affine
    coords = np.einsum("ij,j...->i...", matrix[:3, :3], index) + matrix[:3, 3, None, None, None]
    return ndimage.map_coordinates(values, coords, order=order, mode="constant", cval=0)


def _block_mean(values: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    if factors == (1, 1, 1):
        return values
    shape = tuple(s // f for s, f in zip(values.shape, factors, strict=True))
    return values.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(
        axis=(1, 3, 5)
    )


def generate_subject(
    seed: int, contrasts: Sequence[str] = ("T2w",), config: SynthConfig | None = None
) -> Phantom:
    """Generate one phantom subject from ``seed`` with the given contrasts (BIDS suffixes).

    ``contrasts`` are any of :data:`~mednet_pvs.synth.contrast.CONTRASTS` (T2w, T1w, FLAIR, PDw), all
    rendered from the same anatomy on the same grid. For on-the-fly training use
    ``SynthConfig(crop_mm=...)`` (a box around PVS, a few times faster) and derive seeds with
    :func:`subject_seed`. Nothing is written; see :func:`mednet_pvs.synth.write_subject`.
    """
    config = config or SynthConfig()
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown or not contrasts:
        raise UsageError(
            f"unknown or no contrasts {unknown or list(contrasts)}; choose from {', '.join(CONTRASTS)}"
        )
    person = _draw_participant(config, _rng(seed, "participant"))
    anatomy = load_anatomy(person.anatomy)
    spatial = _rng(seed, "spatial")
    transform = sample_transform(
        anatomy,
        spatial,
        rotation_deg=config.rotation_deg,
        scaling=config.scaling_range,
        shear=config.shear,
        deformation_std_mm=config.deformation_std_mm,
        control_spacing_mm=config.deformation_spacing_mm,
        ventricle_scale_mm=person.ventricle_scale_mm,
        sulcal_scale_mm=person.sulcal_scale_mm,
        global_scale=person.head_scale,
    )
    spacing = _voxel_size(config, spatial)
    brain_points = Grid(anatomy.labels.shape, anatomy.affine).world(
        np.argwhere(anatomy.labels > 0)[::7].astype(float)
    )
    margin = config.fov_margin_mm + spatial.uniform(0, 4, 3)
    full_grid = fit_grid(transform.subject_points(brain_points), spacing, margin)
    context_grid = full_grid.resampled(_CONTEXT_SPACING_MM)
    context_labels, _ = _labels_on(transform, context_grid)
    context_regions = _regions(context_labels, context_grid)
    anterior_commissure = transform.subject_points(anatomy.anterior_commissure_mm[None], iterations=8)[0]

    if config.crop_mm is None:
        grid = full_grid
        labels, coords = _labels_on(transform, grid)
        regions = _regions(labels, grid)
        placement_grid, placement_regions = grid, regions
    else:
        placement_grid, placement_regions = context_grid, context_regions
    context = AnatomyContext.build(
        placement_grid,
        placement_regions,
        context_grid,
        context_labels,
        context_regions,
        _head_axes(transform),
    )

    lesion_rng = _rng(seed, "lesions")
    occupied = SpatialHash()
    # objects keep one voxel diagonal (+0.5 mm) apart, so their masks never touch (26-connectivity)
    gap_mm = float(np.linalg.norm(full_grid.spacing)) + 0.5
    wmh_context = wmh_field(context, person.fazekas, lesion_rng)
    lacunes = place_lacunes(context, person.n_lacunes, lesion_rng, occupied, gap_mm)
    pvs_rng = _rng(seed, "pvs")
    counts = {
        "white_matter": int(
            pvs_rng.integers(_WM_COUNTS[person.grade_wm][0], _WM_COUNTS[person.grade_wm][1] + 1)
        ),
        "basal_ganglia": int(
            pvs_rng.integers(_BG_COUNTS[person.grade_bg][0], _BG_COUNTS[person.grade_bg][1] + 1)
        ),
        "hippocampus": int(pvs_rng.integers(0, 5)) if person.grade_bg else 0,
        "midbrain": int(pvs_rng.integers(0, 4)) if person.grade_bg else 0,
    }
    placed = place_pvs(
        context,
        counts,
        pvs_rng,
        occupied,
        wmh_context > 0,
        anterior_commissure,
        config.pvs_diameter_range_mm,
        config.pvs_length_range_mm,
        gap_mm,
    )
    vessels = (
        place_vessels(context, int(lesion_rng.integers(15, 41)), _rng(seed, "vessels"), occupied, gap_mm)
        if config.distractors
        else []
    )

    if config.crop_mm is not None:
        crop_rng = _rng(seed, "crop")
        if placed and crop_rng.uniform() < 0.8:
            centre = placed[int(crop_rng.integers(len(placed)))].tube.centre
        else:
            brain = np.argwhere(context_labels > 0)
            centre = context_grid.world(brain[crop_rng.integers(len(brain))][None].astype(float))[0]
        grid = _crop_grid(full_grid, config.crop_mm, centre)
        labels, coords = _labels_on(transform, grid)
        regions = _resample(context_grid, context_regions, grid, order=0)

    factors = tuple(int(max(1, np.ceil(v / config.model_resolution_mm - 1e-6))) for v in grid.spacing)
    model_grid = grid.subdivided(factors)
    # intensities are interpolated from the anatomy at model-grid points; labels live on the output grid
    model_coords = coords if factors == (1, 1, 1) else transform.anatomy_voxel_coordinates(model_grid)
    supersample = supersample_factors(model_grid.spacing, config.supersample_mm)
    pvs_model = rasterize([p.tube for p in placed], model_grid, supersample)
    pvs_out = pvs_model.coarsened(grid, factors)
    cavity_model = rasterize([lac.cavity for lac in lacunes], model_grid, supersample)
    rim_model = rasterize([lac.rim for lac in lacunes], model_grid, supersample)
    vessel_model = rasterize(vessels, model_grid, supersample)
    wmh_model = _resample(context_grid, wmh_context, model_grid, order=1)

    fraction = pvs_out.dense_fraction()
    mask = ground_truth_mask(fraction, [p.tube for p in placed], grid, config)
    instance_dtype = np.uint16 if len(placed) < 65535 else np.uint32
    instances = np.where(mask, pvs_out.dense_owner(), 0).astype(instance_dtype)
    distractors = _distractor_labels(
        labels, mask, wmh_model, cavity_model, rim_model, vessel_model, vessels, grid, factors, config
    )

    brain_mask = _skull_strip_mask(labels, grid, context_labels, context_grid, _rng(seed, "brain-mask"))
    images, sidecars = {}, {}
    for name in contrasts:
        rng = _rng(seed, f"contrast-{name}")
        model = sample_contrast(name, rng)
        acquisition = sample_acquisition(
            name, rng, config.snr_scale, config.bias_std_max, config.gamma_std, config.psf_sigma_range
        )
        intensity = _render(
            anatomy, model, model_coords, rng, wmh_model, cavity_model, rim_model, vessel_model, pvs_model
        )
        # bias field and tissue texture: one smooth multiplicative field over the whole image
        intensity *= smooth_multiplier(intensity.shape, rng, acquisition.bias_std, model.texture_std)
        acquired = acquire(
            intensity, factors, brain_mask, model.class_means["white_matter"], acquisition, rng
        )
        images[name] = _image(acquired, grid)
        sidecars[name] = {"SyntheticSeed": seed, "SyntheticAnatomy": person.anatomy, **acquisition.sidecar()}

    pvs_table = _pvs_table(placed, context, instances)
    distractor_table = _distractor_table(lacunes, vessels, distractors, context, grid)
    voxel_volume = float(np.prod(grid.spacing))
    participant = {
        "age": person.age,
        "sex": person.sex,
        "anatomy": person.anatomy,
        "pvs_grade_bg": person.grade_bg,
        "pvs_grade_wm": person.grade_wm,
        "n_pvs": len(placed),
        "n_pvs_in_mask": len(np.unique(instances[instances > 0])),
        "pvs_volume_mm3": round(float(mask.sum()) * voxel_volume, 3),
        "wmh_fazekas": person.fazekas,
        "n_lacunes": len(lacunes),
        "n_vessels": len(vessels),
        "voxel_size_mm": "x".join(f"{v:g}" for v in grid.spacing),
        "seed": seed,
    }
    return Phantom(
        seed=seed,
        config=config,
        grid=grid,
        images=images,
        pvs_fraction=_image(fraction.astype(np.float32), grid),
        pvs_mask=_image(mask.astype(np.uint8), grid),
        pvs_instances=_image(instances, grid),
        regions=_image(regions.astype(np.uint8), grid),
        aseg=_image(freesurfer_labels(labels).astype(np.uint16), grid),
        distractors=_image(distractors, grid),
        pvs_table=pvs_table,
        distractor_table=distractor_table,
        participant=participant,
        sidecars=sidecars,
        tubes=[p.tube for p in placed],
    )


def ground_truth_mask(
    fraction: np.ndarray, tubes: Sequence[Tube], grid: Grid, config: SynthConfig
) -> np.ndarray:
    """The PVS ground truth on the output grid from the PVS partial-volume fraction.

    A voxel is PVS when (a) at least ``gt_fraction_threshold`` of it lies inside a PVS, or (b) the
    centreline of a *visible* PVS crosses it; a PVS is visible when the voxels its centreline
    crosses are on average at least ``gt_centreline_threshold`` inside PVS. Clause (b) keeps thin
    PVS continuous lines, as a rater traces them, instead of dashes; PVS too thin to fill that much
    of the voxels they cross stay out entirely.
    """
    mask = fraction >= config.gt_fraction_threshold
    flat_fraction = fraction.reshape(-1)
    flat_mask = mask.reshape(-1)
    for tube in tubes:
        voxels = tube.centreline_voxels(grid)
        if len(voxels) and flat_fraction[voxels].mean() >= config.gt_centreline_threshold:
            flat_mask[voxels] = True
    return mask


def _skull_strip_mask(
    labels: np.ndarray, grid: Grid, context_labels: np.ndarray, context_grid: Grid, rng: np.random.Generator
) -> np.ndarray:
    """Brain mask of a skull-stripped scan: the brain's hull plus a random 1-3.5 mm band of CSF.

    Skull-stripping tools keep the CSF inside the brain's outline (sulci, fissures, cisterns) and a
    variable rim outside it; the bundled anatomy's brain mask (FreeSurfer's) is generous, so the
    outer rim is cut to a random width here. The hull is a 6 mm morphological closing of the
    tissue, computed with distance transforms on the context grid.
    """
    extracerebral = (*_EXTRACEREBRAL_LABELS, 0)
    tissue = ~np.isin(context_labels, extracerebral)
    spacing = context_grid.spacing
    to_tissue = ndimage.distance_transform_edt(~tissue, sampling=spacing).astype(np.float32)
    closing_mm = 6.0
    dilated = to_tissue <= closing_mm
    hull = ndimage.binary_fill_holes(ndimage.distance_transform_edt(dilated, sampling=spacing) > closing_mm)
    keep = np.where(hull | tissue, 0.0, to_tissue).astype(np.float32)  # 0 inside the hull
    band = rng.uniform(1.0, 3.5)
    near = _resample(context_grid, keep, grid, order=1) <= band
    return (labels > 0) & (near | ~np.isin(labels, extracerebral))


def _mix(image: np.ndarray, coverage: Coverage, values: np.ndarray | float) -> None:
    """In place: image <- (1 - f) * image + f * value on the voxels ``coverage`` touches."""
    flat = image.reshape(-1)
    fraction = coverage.fraction
    flat[coverage.voxels] += fraction * (values - flat[coverage.voxels])


def _render(
    anatomy: Anatomy,
    model: ContrastModel,
    coords: np.ndarray,
    rng: np.random.Generator,
    wmh: np.ndarray,
    cavity: Coverage,
    rim: Coverage,
    vessels: Coverage,
    pvs: Coverage,
) -> np.ndarray:
    """Noise-free model-grid intensities of one contrast."""
    lut = model.label_lut(int(anatomy.labels.max()))
    tissue = lut[anatomy.labels]
    # trilinear sampling of the label intensities gives sub-voxel tissue boundaries on fine grids
    image = ndimage.map_coordinates(tissue, coords, order=1, mode="constant", cval=0.0).astype(np.float32)
    image *= 1 + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(model.grain_std)
    means = model.class_means
    image += wmh * (means["wmh"] * rng.uniform(0.95, 1.05) - image)
    _mix(image, rim, means["lacune_rim"])
    _mix(image, cavity, means["lacune"])
    _mix(image, vessels, means["flow_void"])
    per_tube = means["pvs"] * rng.uniform(0.92, 1.04, int(pvs.owner.max(initial=0)) + 1)
    _mix(image, pvs, per_tube[pvs.owner])
    return image


def _distractor_labels(
    labels: np.ndarray,
    pvs_mask: np.ndarray,
    wmh_model: np.ndarray,
    cavity: Coverage,
    rim: Coverage,
    vessels: Coverage,
    vessel_tubes: Sequence[Tube],
    grid: Grid,
    factors: tuple[int, int, int],
    config: SynthConfig,
) -> np.ndarray:
    """Distractor labels on the output grid (:data:`DISTRACTOR_LABELS`); later labels win.

    Lacunes, rims and WMH: voxels at least half inside; vessels: the PVS ground-truth rule, so a
    thin vessel is one continuous object too. PVS voxels are never distractors.
    """
    out = np.zeros(labels.shape, np.uint8)
    out[np.isin(labels, _CSF_LABELS)] = 5
    out[_block_mean(wmh_model, factors) >= 0.5] = 3
    for coverage, label in ((rim, 2), (cavity, 1)):
        out[coverage.coarsened(grid, factors).dense_fraction() >= 0.5] = label
    vessel_fraction = vessels.coarsened(grid, factors).dense_fraction()
    out[ground_truth_mask(vessel_fraction, vessel_tubes, grid, config)] = 4
    out[pvs_mask] = 0
    return out


def _region_name(context: AnatomyContext, point: np.ndarray) -> str:
    region = region_by_index(int(context.region_at(point[None])[0]))
    return region.name if region else "background"


def _pvs_table(placed: list[PlacedPVS], context: AnatomyContext, instances: np.ndarray) -> pd.DataFrame:
    in_mask = np.bincount(instances.ravel(), minlength=len(placed) + 1)
    rows = []
    for pvs_id, item in enumerate(placed, start=1):
        tube = item.tube
        centre = tube.centre
        rows.append(
            {
                "pvs_id": pvs_id,
                "location": item.location,
                "region": _region_name(context, centre),
                "length_mm": round(tube.length, 3),
                "diameter_mm": round(tube.diameter, 3),
                "volume_mm3": round(tube.volume, 3),
                "centre_x_mm": round(float(centre[0]), 2),
                "centre_y_mm": round(float(centre[1]), 2),
                "centre_z_mm": round(float(centre[2]), 2),
                "mask_voxels": int(in_mask[pvs_id]),
            }
        )
    columns = ["pvs_id", "location", "region", "length_mm", "diameter_mm", "volume_mm3",
               "centre_x_mm", "centre_y_mm", "centre_z_mm", "mask_voxels"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def _distractor_table(
    lacunes: list[Lacune], vessels: list[Tube], distractors: np.ndarray, context: AnatomyContext, grid: Grid
) -> pd.DataFrame:
    rows = []
    for lacune in lacunes:
        cavity = lacune.cavity
        rows.append(("lacune", cavity.centre, 2 * float(cavity.axes.max()), cavity.volume))
    for tube in vessels:
        rows.append(("vessel", tube.centre, tube.length, tube.volume))
    wmh, n = ndimage.label(distractors == 3, structure=np.ones((3, 3, 3)))
    if n:
        voxel_volume = float(np.prod(grid.spacing))
        sizes = np.bincount(wmh.ravel())[1:]
        centres = grid.world(np.asarray(ndimage.center_of_mass(wmh > 0, wmh, range(1, n + 1))))
        for centre, size in zip(centres, sizes, strict=True):
            rows.append(
                ("wmh", centre, float((size * voxel_volume * 6 / np.pi) ** (1 / 3)), size * voxel_volume)
            )
    records = [
        {
            "distractor_id": i,
            "type": kind,
            "region": _region_name(context, centre),
            "size_mm": round(size, 3),
            "volume_mm3": round(float(volume), 3),
            "centre_x_mm": round(float(centre[0]), 2),
            "centre_y_mm": round(float(centre[1]), 2),
            "centre_z_mm": round(float(centre[2]), 2),
        }
        for i, (kind, centre, size, volume) in enumerate(rows, start=1)
    ]
    columns = ["distractor_id", "type", "region", "size_mm", "volume_mm3", "centre_x_mm", "centre_y_mm",
               "centre_z_mm"]  # fmt: skip
    return pd.DataFrame(records, columns=columns)
