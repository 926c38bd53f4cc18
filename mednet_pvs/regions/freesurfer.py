"""Map FreeSurfer aseg / aparc+aseg / SynthSeg labels to the PVS region set.

Label ids follow FreeSurferColorLUT.txt; SynthSeg uses the same ids for the structures it labels.
Cortical parcels (1000-2999, 11100-12999) and white-matter parcels (3000-4999, 5001/5002) are
folded into cortex and white matter. The brainstem label is split: its top ``MIDBRAIN_HEIGHT_MM``
is the midbrain (FreeSurfer's aseg has no separate midbrain label).
"""

from __future__ import annotations

import numpy as np

from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.regions.rules import (
    assign_hemisphere,
    basal_ganglia_with_internal_capsule,
    centrum_semiovale,
    world_coordinate,
)

__all__ = ["MIDBRAIN_HEIGHT_MM", "freesurfer_tissue_masks", "pvs_regions_from_freesurfer"]

#: Height of the midbrain above the pontomesencephalic junction (~2 cm in adults).
MIDBRAIN_HEIGHT_MM = 20.0

_LEFT = {
    "white_matter": (2, 78, 5001),
    "lateral_ventricle": (4,),
    "caudate": (11,),
    "putamen": (12,),
    "pallidum": (13,),
    "accumbens": (26,),
    "vessel": (30,),
    "thalamus": (9, 10),
    "hippocampus": (17,),
}
_RIGHT = {
    "white_matter": (41, 79, 5002),
    "lateral_ventricle": (43,),
    "caudate": (50,),
    "putamen": (51,),
    "pallidum": (52,),
    "accumbens": (58,),
    "vessel": (62,),
    "thalamus": (48, 49),
    "hippocampus": (53,),
}
_UNLATERALISED_WM = (77, 251, 252, 253, 254, 255)
_BRAINSTEM = (16, 173, 174, 175)
_MIDBRAIN = (173,)


def _wm_parcels(labels: np.ndarray, side: str) -> np.ndarray:
    low = 3000 if side == "left" else 4000
    return (labels >= low) & (labels < low + 1000)


def freesurfer_tissue_masks(labels: np.ndarray, side: str) -> dict[str, np.ndarray]:
    """Boolean masks of the structures of one hemisphere (``side`` 'left' or 'right')."""
    table = _LEFT if side == "left" else _RIGHT
    masks = {name: np.isin(labels, ids) for name, ids in table.items()}
    masks["white_matter"] |= _wm_parcels(labels, side)
    return masks


def pvs_regions_from_freesurfer(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """PVS region labels (uint8, see :mod:`mednet_pvs.regions.lut`) from FreeSurfer labels.

    ``labels`` must be on a conformed (closest RAS+) grid with ``affine``. FreeSurfer's 'vessel'
    labels sit among the lenticulostriate vessels of the basal ganglia and are counted there.
    """
    labels = np.asarray(labels)
    index = {(r.structure, r.hemisphere): r.index for r in REGIONS}
    out = np.zeros(labels.shape, dtype=np.uint8)
    brain = labels > 0
    out[brain] = index[("other", "bilateral")]

    sides = {side: freesurfer_tissue_masks(labels, side) for side in ("left", "right")}
    left_any = np.zeros(labels.shape, bool)
    right_any = np.zeros(labels.shape, bool)
    for name, mask in sides["left"].items():
        if name != "white_matter":
            left_any |= mask
    for name, mask in sides["right"].items():
        if name != "white_matter":
            right_any |= mask
    left_any |= sides["left"]["white_matter"]
    right_any |= sides["right"]["white_matter"]
    extra_left, extra_right = assign_hemisphere(np.isin(labels, _UNLATERALISED_WM), left_any, right_any)
    sides["left"]["white_matter"] |= extra_left
    sides["right"]["white_matter"] |= extra_right

    ventricles = sides["left"]["lateral_ventricle"] | sides["right"]["lateral_ventricle"]
    for side, masks in sides.items():
        wm = masks["white_matter"]
        nuclei = masks["caudate"] | masks["putamen"] | masks["pallidum"] | masks["accumbens"] | masks["vessel"]
        exclude = masks["thalamus"] | ventricles
        bg = basal_ganglia_with_internal_capsule(nuclei, wm, exclude)
        cso = centrum_semiovale(wm & ~bg, ventricles, affine)
        out[wm & ~bg & ~cso] = index[("deep_white_matter", side)]
        out[cso] = index[("centrum_semiovale", side)]
        out[bg] = index[("basal_ganglia", side)]
        out[masks["thalamus"]] = index[("thalamus", side)]
        out[masks["hippocampus"]] = index[("hippocampus", side)]

    out[_midbrain(labels, affine)] = index[("midbrain", "bilateral")]
    return out


def _midbrain(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    explicit = np.isin(labels, _MIDBRAIN)
    if explicit.any():
        return explicit
    brainstem = np.isin(labels, _BRAINSTEM)
    if not brainstem.any():
        return brainstem
    z = world_coordinate(labels.shape, affine, 2)
    top = float(z[brainstem].max())
    return brainstem & (z > top - MIDBRAIN_HEIGHT_MM)
