"""The bundled PVS-region atlas in MNI space (MNI152NLin2009cAsym, 1 mm).

Built by ``scripts/build_region_atlas.py`` from permissively licensed sources (see
``mednet_pvs/data/NOTICE.md`` and ``docs/regions.md``). The folder holds TemplateFlow-style files:
a T1w brain template, its brain mask, the PVS region labels (:mod:`mednet_pvs.regions.lut`), the
FreeSurfer-id labels they derive from, a CSF/GM/WM tissue map for registration QC, anatomical
landmarks in MNI millimetres, and ``atlas.json`` (provenance and a SHA-256 per file, checked on
loading).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mednet_pvs.errors import MednetPVSError

__all__ = [
    "ATLAS_FILES",
    "SPACE",
    "TISSUE_LABELS",
    "AtlasError",
    "RegionAtlas",
    "atlas_directory",
    "load_region_atlas",
    "plot_regions",
]

#: Template space of the atlas (TemplateFlow identifier).
SPACE = "MNI152NLin2009cAsym"
_PREFIX = f"tpl-{SPACE}_res-01"
#: File of each atlas component, inside the atlas folder.
ATLAS_FILES: dict[str, str] = {
    "template": f"{_PREFIX}_T1w.nii.gz",
    "brain_mask": f"{_PREFIX}_desc-brain_mask.nii.gz",
    "regions": f"{_PREFIX}_atlas-pvsregions_dseg.nii.gz",
    "aseg": f"{_PREFIX}_desc-aseg_dseg.nii.gz",
    "tissue": f"{_PREFIX}_desc-tissue_dseg.nii.gz",
    "landmarks": f"tpl-{SPACE}_desc-landmarks.json",
}
#: Labels of the tissue map.
TISSUE_LABELS: dict[int, str] = {1: "CSF", 2: "GM", 3: "WM"}
_DESCRIPTION = "atlas.json"


class AtlasError(MednetPVSError):
    """The bundled atlas is missing or does not match its recorded checksums."""


@dataclass(frozen=True)
class RegionAtlas:
    """The atlas images (all on one MNI grid) and its landmarks (MNI mm, RAS)."""

    directory: Path
    template: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    regions: nib.Nifti1Image
    #: FreeSurfer-id labels the regions were derived from (registration warps these, then maps them).
    aseg: nib.Nifti1Image
    tissue: nib.Nifti1Image
    landmarks: dict[str, tuple[float, float, float]]
    description: dict[str, Any]

    def path(self, component: str) -> Path:
        """File of ``component`` (a key of :data:`ATLAS_FILES`)."""
        return self.directory / ATLAS_FILES[component]


def atlas_directory() -> Path:
    """Folder of the atlas shipped in the package."""
    return Path(__file__).resolve().parents[1] / "data" / "atlas"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=4)
def load_region_atlas(directory: Path | None = None) -> RegionAtlas:
    """Load the atlas in ``directory`` (default: the bundled one), verifying every file's SHA-256."""
    directory = Path(directory) if directory is not None else atlas_directory()
    description_file = directory / _DESCRIPTION
    if not description_file.is_file():
        raise AtlasError(
            f"{description_file}: atlas description not found; is the package installed completely?"
        )
    description = json.loads(description_file.read_text(encoding="utf-8"))
    checksums = description.get("sha256", {})
    for name in ATLAS_FILES.values():
        path = directory / name
        if not path.is_file():
            raise AtlasError(f"{path}: atlas file missing")
        if checksums.get(name) != _sha256(path):
            raise AtlasError(
                f"{path}: SHA-256 differs from {description_file}; the file is corrupt or was changed"
            )
    images = {
        key: nib.load(str(directory / ATLAS_FILES[key]))
        for key in ("template", "brain_mask", "regions", "aseg", "tissue")
    }
    landmarks_mm = json.loads((directory / ATLAS_FILES["landmarks"]).read_text(encoding="utf-8"))
    landmarks = {name: tuple(float(v) for v in entry["mni_mm"]) for name, entry in landmarks_mm.items()}
    return RegionAtlas(directory=directory, landmarks=landmarks, description=description, **images)


def plot_regions(
    background: str | Path | nib.Nifti1Image,
    regions: str | Path | nib.Nifti1Image,
    path: str | Path,
    title: str = "",
) -> Path:
    """Render PVS regions over ``background`` as a PNG: axial through the basal ganglia, axial through
    the centrum semiovale rating level, coronal and sagittal through the left basal ganglia."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from nilearn import image, plotting

    from mednet_pvs.regions.lut import REGIONS
    from mednet_pvs.utils.atomic import atomic_path

    regions_img = image.load_img(regions)
    labels = np.asarray(regions_img.dataobj)

    def centre(structure: str, hemisphere: str | None = None) -> np.ndarray:
        ids = [r.index for r in REGIONS if r.structure == structure and hemisphere in (None, r.hemisphere)]
        return nib.affines.apply_affine(regions_img.affine, np.argwhere(np.isin(labels, ids)))

    basal_ganglia = centre("basal_ganglia").mean(axis=0)
    left_bg = centre("basal_ganglia", "left").mean(axis=0)
    cso_z = centre("centrum_semiovale")[:, 2].min() + 10.0
    views = [
        ("z", [float(basal_ganglia[2])], "axial, basal ganglia"),
        ("z", [float(cso_z)], "axial, centrum semiovale (+10 mm)"),
        ("y", [float(left_bg[1])], "coronal"),
        ("x", [float(left_bg[0])], "sagittal, left"),
    ]
    cmap = ListedColormap(["#000000", *(r.color for r in REGIONS)])
    fig, axes = plt.subplots(2, 2, figsize=(10, 9), facecolor="black")
    for ax, (mode, cut, label) in zip(axes.ravel(), views, strict=True):
        plotting.plot_roi(
            regions_img,
            bg_img=background,
            display_mode=mode,
            cut_coords=cut,
            axes=ax,
            cmap=cmap,
            vmin=0,
            vmax=len(REGIONS),
            alpha=0.45,
            resampling_interpolation="nearest",
            draw_cross=False,
            black_bg=True,
            colorbar=False,
        )
        ax.set_title(label, color="white", fontsize=10)
    if title:
        fig.suptitle(title, color="white")
    handles = [matplotlib.patches.Patch(color=r.color, label=r.name) for r in REGIONS]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, facecolor="black", labelcolor="white")
    fig.subplots_adjust(bottom=0.12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, facecolor="black", format="png")
    plt.close(fig)
    return Path(path)
