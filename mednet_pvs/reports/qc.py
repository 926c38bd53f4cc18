"""Quality-control flags shown at the top of each image's report section.

The thresholds are screening heuristics meant to catch failures (a skull left in the mask, a
segmentation that found nothing or everything, a misregistered atlas, a model run on the wrong
contrast), not normative limits; docs/reports.md gives the rationale of each value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mednet_pvs.stats.tables import WHOLE_BRAIN

__all__ = ["QCFlag", "QCThresholds", "qc_flags"]


@dataclass(frozen=True)
class QCThresholds:
    """Limits beyond which a QC flag is raised (see docs/reports.md for the rationale)."""

    brain_volume_min_cm3: float = 800.0
    brain_volume_max_cm3: float = 2000.0
    pvs_count_min: int = 5
    pvs_volume_fraction_max: float = 0.05
    largest_pvs_max_mm3: float = 1000.0
    unassigned_fraction_max: float = 0.05
    registration_overlap_min: float = 0.85
    slice_thickness_max_mm: float = 2.0
    voxel_anisotropy_max: float = 3.0


@dataclass(frozen=True)
class QCFlag:
    """One finding: ``level`` is 'warning' (check before trusting numbers) or 'info'."""

    level: str
    code: str
    message: str


def qc_flags(
    region_table: pd.DataFrame,
    census: pd.DataFrame | None,
    facts: Mapping[str, Any],
    zooms: Sequence[float] | None = None,
    thresholds: QCThresholds = QCThresholds(),
) -> list[QCFlag]:
    """Flags for one image from its region table, census, processing facts and voxel size."""
    flags: list[QCFlag] = []
    brain = region_table[
        (region_table["region"] == WHOLE_BRAIN) & (region_table["hemisphere"] == "bilateral")
    ]
    whole = brain.iloc[0] if len(brain) else None
    t = thresholds

    def flag(level: str, code: str, message: str) -> None:
        flags.append(QCFlag(level, code, message))

    if whole is not None and whole["region_volume_mm3"] > 0:
        brain_cm3 = float(whole["region_volume_mm3"]) / 1000.0
        if brain_cm3 < t.brain_volume_min_cm3:
            flag(
                "warning",
                "brain_volume_low",
                f"Brain volume {brain_cm3:.0f} cm³ is below {t.brain_volume_min_cm3:.0f} cm³: a cropped "
                "field of view, an over-eroded brain mask, or a child's or severely atrophic brain. "
                "Check the mask overlay.",
            )
        if brain_cm3 > t.brain_volume_max_cm3:
            flag(
                "warning",
                "brain_volume_high",
                f"Brain volume {brain_cm3:.0f} cm³ exceeds {t.brain_volume_max_cm3:.0f} cm³: skull, neck "
                "or other tissue is probably inside the brain mask. Check the mask overlay.",
            )
    if whole is not None:
        count = int(whole["count"])
        if count < t.pvs_count_min:
            flag(
                "warning",
                "pvs_burden_low",
                f"Only {count} PVS detected: check the contrast, the model and the threshold; a model "
                "applied to an unsuitable image often finds nothing.",
            )
        fraction = whole["volume_fraction"]
        if pd.notna(fraction) and fraction > t.pvs_volume_fraction_max:
            flag(
                "warning",
                "pvs_burden_high",
                f"PVS occupy {100 * fraction:.1f}% of the brain "
                f"(limit {100 * t.pvs_volume_fraction_max:.0f}%): likely false positives (CSF, lesions, "
                "noise, artefacts). Check the PVS overlays.",
            )
    if census is not None and len(census):
        largest = float(census["volume_mm3"].max())
        if largest > t.largest_pvs_max_mm3:
            flag(
                "warning",
                "large_cluster",
                f"The largest PVS measures {largest:.0f} mm³ (limit {t.largest_pvs_max_mm3:.0f}): probably "
                "a lacune, ventricle, cyst or merged PVS. Look it up in the cluster census and the overlays.",
            )
        unassigned = float((census["region_index"] == 0).mean())
        if unassigned > t.unassigned_fraction_max:
            flag(
                "warning",
                "unassigned_pvs",
                f"{100 * unassigned:.0f}% of PVS lie outside every labelled region: the region map does "
                "not cover the brain mask (registration or label problem).",
            )
    overlap = facts.get("registration_overlap")
    if isinstance(overlap, (int, float)) and overlap < t.registration_overlap_min:
        flag(
            "warning",
            "registration",
            f"Atlas-to-subject overlap {overlap:.2f} is below {t.registration_overlap_min:.2f}: regions may "
            "be misplaced. Check the region overlay.",
        )
    elif facts.get("registration_passed") is False:
        flag(
            "warning",
            "registration",
            "The atlas registration failed its own QC (see the regions sidecar): regions may be misplaced. "
            "Check the region overlay.",
        )
    contrast, trained_on = facts.get("contrast"), facts.get("model_contrasts")
    known = contrast and isinstance(trained_on, (list, tuple)) and trained_on
    trained_inverted = contrast in (facts.get("model_trained_inverted") or ())
    if known and contrast not in trained_on and not trained_inverted:
        read_inverted = contrast in (facts.get("model_inverted_contrasts") or ())
        how = (
            "reads it with inverted intensities, less accurately"
            if read_inverted
            else "is not validated for it"
        )
        flag(
            "warning",
            "contrast_mismatch",
            f"The image is {contrast} but the model was trained on {', '.join(map(str, trained_on))}: "
            f"it {how}.",
        )
    if zooms is not None:
        zooms = np.asarray(zooms, float)
        if zooms.max() > t.slice_thickness_max_mm or zooms.max() / zooms.min() > t.voxel_anisotropy_max:
            flag(
                "info",
                "resolution",
                f"Voxel size {' x '.join(f'{z:.2g}' for z in zooms)} mm: PVS 1-3 mm wide are partly lost or "
                "merged at this resolution; counts and lengths are not comparable with those of thinner "
                "slices.",
            )
    return flags
