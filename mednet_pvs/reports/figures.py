"""Report figures (PNG, matplotlib without pyplot): mosaics, projections, histograms, rating slices.

Images are shown on the closest-RAS+ voxel grid (reordering only, no resampling), in neurological
convention: the subject's left on the left of each panel, anterior up in axial views, superior up
in coronal and sagittal views. Pixel aspect follows the voxel size, so anisotropic data look right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from nibabel.orientations import io_orientation

from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.reports.discovery import ImageOutputs
from mednet_pvs.stats.ratings import RATED_STRUCTURES, axial_axis
from mednet_pvs.utils.atomic import atomic_path

__all__ = [
    "DisplayVolumes",
    "plot_cluster_histograms",
    "plot_mosaic",
    "plot_projections",
    "plot_rating_slices",
    "save_figure",
]

LOGGER = logging.getLogger(__name__)

VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))
BACKGROUND = "#111111"
PVS_COLOR = "#39ff14"
REGION_COLORS = ListedColormap(["#00000000"] + [r.color for r in REGIONS], name="pvsregions")
REGION_GROUPS = (
    ("white matter", ("centrum_semiovale", "deep_white_matter"), "#f5c542"),
    ("basal ganglia", ("basal_ganglia",), "#1f8fe0"),
    ("other regions", None, "#b0b0b0"),
)


@dataclass
class DisplayVolumes:
    """An image's outputs on the closest-RAS+ grid, cropped to the brain, ready to draw."""

    background: np.ndarray
    zooms: tuple[float, float, float]
    brain: np.ndarray | None
    regions: np.ndarray | None
    probability: np.ndarray | None
    mask: np.ndarray | None
    clusters: np.ndarray | None
    native_affine: np.ndarray
    canonical_affine: np.ndarray
    crop_start: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @classmethod
    def load(cls, image: ImageOutputs) -> DisplayVolumes:
        loaded: dict[str, np.ndarray | None] = {}
        reference = None
        for kind in ("brain_mask", "regions", "probseg", "mask", "clusters"):
            path = image.path(kind)
            if path is None:
                loaded[kind] = None
                continue
            img = nib.load(path)
            if reference is None:
                reference = img
            loaded[kind] = np.asanyarray(nib.as_closest_canonical(img).dataobj)
        background = None
        if image.anatomical is not None:
            anatomical = nib.load(image.anatomical)
            if reference is None or anatomical.shape[:3] == reference.shape[:3]:
                background = np.asarray(nib.as_closest_canonical(anatomical).dataobj, np.float32)
                if reference is None:
                    reference = anatomical
                if background.ndim == 4:
                    background = background[..., 0]
            else:
                LOGGER.warning(
                    "%s: grid differs from the outputs; overlays drawn without it", image.anatomical
                )
        if reference is None:
            raise FileNotFoundError(f"{image.folder}: no image output of {image.prefix} to draw")
        canonical = nib.as_closest_canonical(reference)
        brain = None if loaded["brain_mask"] is None else loaded["brain_mask"] > 0
        if background is None:  # no anatomy: a flat brain silhouette keeps overlays readable
            shape = canonical.shape[:3]
            background = np.zeros(shape, np.float32) if brain is None else brain.astype(np.float32) * 0.3
        box = _bounding_box(brain if brain is not None and brain.any() else background != 0, margin=3)
        crop = tuple(slice(a, b) for a, b in box)

        def cropped(array: np.ndarray | None, dtype: type | None = None) -> np.ndarray | None:
            if array is None:
                return None
            return np.asarray(array[crop], dtype) if dtype else np.asarray(array[crop])

        return cls(
            background=cropped(background, np.float32),
            zooms=tuple(float(z) for z in canonical.header.get_zooms()[:3]),
            brain=cropped(brain),
            regions=cropped(loaded["regions"], np.uint8),
            probability=cropped(loaded["probseg"], np.float32),
            mask=None if loaded["mask"] is None else cropped(loaded["mask"]) > 0,
            clusters=cropped(loaded["clusters"], np.int32),
            native_affine=reference.affine,
            canonical_affine=canonical.affine,
            crop_start=tuple(int(a) for a, _ in box),
            full_shape=tuple(int(s) for s in canonical.shape[:3]),
        )

    def window(self) -> tuple[float, float]:
        """Display range of the background: 0.5th-99.5th percentile inside the brain."""
        values = (
            self.background[self.brain] if self.brain is not None and self.brain.any() else self.background
        )
        values = values[values != 0] if np.any(values != 0) else values
        low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
        return float(low), float(high if high > low else low + 1)

    def scanner_position(self, axis: int, index: int) -> float:
        """Scanner coordinate (mm) ``axis`` of the centre of cropped slice ``index`` along ``axis``."""
        voxel = np.array(self.crop_start, float) + np.array(self.background.shape, float) / 2
        voxel[axis] = index + self.crop_start[axis]
        return float(self.canonical_affine[axis, :3] @ voxel + self.canonical_affine[axis, 3])

    def canonical_axial_index(self, native_index: int) -> int | None:
        """Cropped axial (axis 2) index of a native-grid axial slice index (None if outside the crop)."""
        ornt = io_orientation(self.native_affine)
        flip = ornt[axial_axis(self.native_affine), 1] < 0
        index = self.full_shape[2] - 1 - native_index if flip else native_index
        index -= self.crop_start[2]
        return index if 0 <= index < self.background.shape[2] else None


def _bounding_box(mask: np.ndarray, margin: int) -> list[tuple[int, int]]:
    if not mask.any():
        return [(0, s) for s in mask.shape]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.nonzero(mask.any(axis=other))[0]
        box.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return box


def _plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2-D slice ready for ``imshow(origin="lower")``: rows run up, columns run to the subject's right.

    Contours of such a plane take matplotlib's default origin (element [0, 0] at (0, 0), the centre
    of the first pixel); ``origin="lower"`` would shift them by half a pixel.
    """
    return np.take(volume, index, axis=axis).T


def _aspect(zooms: tuple[float, float, float], axis: int) -> float:
    rows, cols = {2: (1, 0), 1: (2, 0), 0: (2, 1)}[axis]
    return zooms[rows] / zooms[cols]


def _slices(volumes: DisplayVolumes, axis: int, count: int, weights: np.ndarray | None) -> list[int]:
    """``count`` slice indices: quantiles of ``weights`` along ``axis`` when any, else evenly spread."""
    size = volumes.background.shape[axis]
    other = tuple(a for a in range(3) if a != axis)
    if weights is not None and weights.any():
        profile = weights.sum(axis=other).astype(float)
        cumulative = np.cumsum(profile) / profile.sum()
        picks = [int(np.searchsorted(cumulative, q)) for q in np.linspace(0.1, 0.9, count)]
    else:
        picks = [round(q * (size - 1)) for q in np.linspace(0.2, 0.8, count)]
    return sorted({min(max(p, 0), size - 1) for p in picks}) or [size // 2]


def _draw_background(ax: Axes, volumes: DisplayVolumes, axis: int, index: int) -> None:
    low, high = volumes.window()
    ax.imshow(
        _plane(volumes.background, axis, index),
        cmap="gray",
        vmin=low,
        vmax=high,
        origin="lower",
        aspect=_aspect(volumes.zooms, axis),
        interpolation="nearest",
    )
    ax.set_axis_off()


Overlay = Callable[[Axes, DisplayVolumes, int, int], None]


def overlay_regions(ax: Axes, volumes: DisplayVolumes, axis: int, index: int) -> None:
    """Region labels (look-up-table colours) and the brain-mask outline."""
    aspect = _aspect(volumes.zooms, axis)
    if volumes.regions is not None:
        labels = _plane(volumes.regions, axis, index)
        ax.imshow(
            np.ma.masked_equal(labels, 0),
            cmap=REGION_COLORS,
            vmin=0,
            vmax=len(REGIONS),
            alpha=0.55,
            origin="lower",
            aspect=aspect,
            interpolation="nearest",
        )
    if volumes.brain is not None:
        brain = _plane(volumes.brain, axis, index)
        if brain.any() and not brain.all():
            ax.contour(brain, levels=[0.5], colors=["#ff3b3b"], linewidths=0.8)


def overlay_probability(ax: Axes, volumes: DisplayVolumes, axis: int, index: int) -> None:
    """PVS probability (hot colour map) where it exceeds 0.05."""
    if volumes.probability is None:
        return
    prob = _plane(volumes.probability, axis, index)
    ax.imshow(
        np.ma.masked_less(prob, 0.05),
        cmap="hot",
        vmin=0,
        vmax=1,
        origin="lower",
        aspect=_aspect(volumes.zooms, axis),
        interpolation="nearest",
    )


def overlay_mask(ax: Axes, volumes: DisplayVolumes, axis: int, index: int) -> None:
    """The thresholded PVS mask in one bright colour."""
    if volumes.mask is None:
        return
    mask = _plane(volumes.mask, axis, index)
    ax.imshow(
        np.ma.masked_equal(mask.astype(np.uint8), 0),
        cmap=ListedColormap([PVS_COLOR]),
        vmin=0,
        vmax=1,
        origin="lower",
        aspect=_aspect(volumes.zooms, axis),
        interpolation="nearest",
    )


def save_figure(figure: Figure, path: Path) -> Path:
    """Save a figure as PNG atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=figure.dpi, facecolor=figure.get_facecolor())
    return path


def plot_mosaic(
    volumes: DisplayVolumes,
    overlay: Overlay,
    path: Path,
    title: str,
    columns: int = 7,
    panel_inches: float = 1.9,
    weighted: bool = False,
) -> Path:
    """Rows of axial, coronal and sagittal slices with ``overlay`` drawn on the background.

    With ``weighted`` the slices follow the PVS (quantiles of the mask along each axis). PVS are
    1-3 voxels wide, so their mosaics need larger panels (``panel_inches`` at 100 dpi).
    """
    figure = Figure(figsize=(columns * panel_inches, 3 * panel_inches * 1.1), dpi=100, facecolor=BACKGROUND)
    figure.suptitle(title, color="white", fontsize=11)
    weights = volumes.mask if weighted else None
    for row, (_, axis) in enumerate(VIEWS):
        indices = _slices(volumes, axis, columns, weights)
        for col, index in enumerate(indices):
            ax = figure.add_subplot(3, columns, row * columns + col + 1)
            _draw_background(ax, volumes, axis, index)
            overlay(ax, volumes, axis, index)
            position = volumes.scanner_position(axis, index)
            ax.set_title(f"{'xyz'[axis]} = {position:.0f} mm", color="#cccccc", fontsize=7, pad=2)
            if col == 0 and axis != 0:
                ax.text(0.02, 0.02, "L", color="white", fontsize=8, transform=ax.transAxes)
                ax.text(0.9, 0.02, "R", color="white", fontsize=8, transform=ax.transAxes)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.01, wspace=0.03, hspace=0.12)
    return save_figure(figure, path)


def _projection(volume: np.ndarray, axis: int) -> np.ndarray:
    return volume.max(axis=axis).T


def plot_projections(volumes: DisplayVolumes, path: Path, title: str) -> Path:
    """Maximum-intensity projections: PVS probability (top) and the PVS mask coloured by region (bottom)."""
    figure = Figure(figsize=(12, 7.5), dpi=100, facecolor=BACKGROUND)
    figure.suptitle(title, color="white", fontsize=11)
    region_of_pvs = None
    if volumes.mask is not None:
        labels = volumes.regions if volumes.regions is not None else np.zeros(volumes.mask.shape, np.uint8)
        region_of_pvs = np.where(volumes.mask, np.maximum(labels, 0), 0).astype(np.uint8)
    prob, vmax, shown = volumes.probability, 1.0, None
    if prob is not None:
        prob = prob if volumes.brain is None else np.where(volumes.brain, prob, 0)
        # Colour range up to the 99.9th percentile of the visible probabilities (at least 0.1), so weak
        # maps (e.g. vesselness) stay visible; the colour bar gives the scale.
        visible = prob[prob > 0.01]
        vmax = float(np.clip(np.percentile(visible, 99.9), 0.1, 1.0)) if visible.size else 1.0
    for col, (view, axis) in enumerate(VIEWS):
        aspect = _aspect(volumes.zooms, axis)
        ax = figure.add_subplot(2, 3, col + 1)
        if volumes.brain is not None:
            ax.contour(_projection(volumes.brain, axis), levels=[0.5], colors=["#666666"], linewidths=0.8)
        if prob is not None:
            shown = ax.imshow(
                _projection(prob, axis), cmap="inferno", vmin=0, vmax=vmax, origin="lower", aspect=aspect
            )
        ax.set_title(f"{view}: probability MIP", color="#cccccc", fontsize=9)
        ax.set_facecolor("black")
        ax.set_axis_off()
        ax = figure.add_subplot(2, 3, col + 4)
        if volumes.brain is not None:
            ax.contour(_projection(volumes.brain, axis), levels=[0.5], colors=["#666666"], linewidths=0.8)
        ax.set_facecolor("black")
        if region_of_pvs is not None:
            projected = _projection(region_of_pvs, axis)
            unlabelled_pvs = _projection(volumes.mask, axis) & (projected == 0)
            ax.imshow(
                np.ma.masked_equal(np.where(unlabelled_pvs, len(REGIONS), projected), 0),
                cmap=REGION_COLORS,
                vmin=0,
                vmax=len(REGIONS),
                origin="lower",
                aspect=aspect,
                interpolation="nearest",
            )
        ax.set_title(f"{view}: PVS mask by region", color="#cccccc", fontsize=9)
        ax.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.93, top=0.9, bottom=0.02, wspace=0.04, hspace=0.12)
    if shown is not None:
        colorbar = figure.colorbar(shown, cax=figure.add_axes((0.945, 0.53, 0.012, 0.35)))
        colorbar.ax.tick_params(colors="#cccccc", labelsize=7)
        colorbar.set_label("PVS probability", color="#cccccc", fontsize=8)
    return save_figure(figure, path)


def plot_cluster_histograms(census: pd.DataFrame, path: Path, title: str) -> Path:
    """Histograms of PVS volume (log scale) and length, stacked by region group."""
    figure = Figure(figsize=(12, 3.6), dpi=100)
    figure.suptitle(title, fontsize=11)
    volume_ax, length_ax = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    groups, colors, labels = [], [], []
    assigned = set()
    for label, members, color in REGION_GROUPS:
        selected = census["region"].isin(members) if members else ~census["region"].isin(assigned)
        assigned |= set(members or ())
        groups.append(census[selected])
        colors.append(color)
        labels.append(f"{label} ({int(selected.sum())})")
    if len(census):
        low = max(float(census["volume_mm3"].min()), 1e-3)
        high = max(float(census["volume_mm3"].max()), low * 10)
        bins = np.geomspace(low * 0.999, high * 1.001, 30)
        volume_ax.hist([g["volume_mm3"] for g in groups], bins=bins, stacked=True, color=colors, label=labels)
        length_ax.hist([g["length_mm"] for g in groups], bins=30, stacked=True, color=colors, label=labels)
        volume_ax.set_xscale("log")
        volume_ax.legend(fontsize=8, frameon=False)
    else:
        for ax in (volume_ax, length_ax):
            ax.text(0.5, 0.5, "no PVS detected", ha="center", va="center", transform=ax.transAxes)
    volume_ax.set_xlabel("PVS volume (mm³, log scale)")
    length_ax.set_xlabel("PVS length along the principal axis (mm)")
    for ax in (volume_ax, length_ax):
        ax.set_ylabel("number of PVS")
        ax.spines[["top", "right"]].set_visible(False)
    figure.subplots_adjust(left=0.06, right=0.99, top=0.86, bottom=0.16, wspace=0.2)
    return save_figure(figure, path)


def plot_rating_slices(
    volumes: DisplayVolumes, region_table: pd.DataFrame, path: Path, title: str
) -> Path | None:
    """The basal-ganglia and centrum-semiovale rating slices, PVS counted there highlighted.

    None when no rating slice is defined (no region map).
    """
    rows = region_table.set_index(["region", "hemisphere"])
    panels = []
    for structure in RATED_STRUCTURES:
        key = (structure, "bilateral")
        if key not in rows.index or pd.isna(rows.loc[key, "epvs_slice_index"]):
            continue
        index = volumes.canonical_axial_index(int(rows.loc[key, "epvs_slice_index"]))
        if index is not None:
            panels.append((structure, index))
    if not panels or volumes.regions is None:
        return None
    figure = Figure(figsize=(6 * len(panels), 6.3), dpi=100, facecolor=BACKGROUND)
    figure.suptitle(title, color="white", fontsize=11)
    indices = {r.structure: [x.index for x in REGIONS if x.structure == r.structure] for r in REGIONS}
    for col, (structure, index) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), col + 1)
        _draw_background(ax, volumes, 2, index)
        region = np.isin(_plane(volumes.regions, 2, index), indices[structure])
        if region.any():
            ax.contour(region, levels=[0.5], colors=["#4fc3f7"], linewidths=1.0)
        if volumes.mask is not None:
            pvs = _plane(volumes.mask, 2, index)
            shown = np.zeros(pvs.shape, np.uint8)
            shown[pvs & ~region] = 1
            shown[pvs & region] = 2
            ax.imshow(
                np.ma.masked_equal(shown, 0),
                cmap=ListedColormap([to_rgba("#ff9800", 0.9), to_rgba(PVS_COLOR)]),
                vmin=1,
                vmax=2,
                origin="lower",
                aspect=_aspect(volumes.zooms, 2),
                interpolation="nearest",
            )
        left, right = (
            int(rows.loc[(structure, side), "epvs_slice_count_auto"]) for side in ("left", "right")
        )
        method = rows.loc[(structure, "bilateral"), "epvs_slice_method"]
        ax.set_title(
            f"{structure.replace('_', ' ')}: L {left} / R {right} PVS (automated)\n"
            f"slice {int(rows.loc[(structure, 'bilateral'), 'epvs_slice_index'])}, "
            f"{method.replace('_', ' ')}",
            color="white",
            fontsize=9,
        )
        ax.text(0.01, 0.01, "L", color="white", fontsize=10, transform=ax.transAxes)
        ax.text(0.97, 0.01, "R", color="white", fontsize=10, transform=ax.transAxes)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.01, wspace=0.04)
    return save_figure(figure, path)
