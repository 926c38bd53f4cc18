"""The PVS region label set shared by atlases, FreeSurfer mapping, statistics and phantoms.

Leaf labels are disjoint; ``GROUPS`` defines the reported aggregates (white matter is the union of
its centrum semiovale and deep parts). The BIDS look-up table ``seg-pvsregions_dseg.tsv`` is
generated from this module, so this is the single source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mednet_pvs.utils.atomic import write_json, write_tsv

__all__ = [
    "GROUPS",
    "REGIONS",
    "REGION_SET",
    "Region",
    "lookup_table",
    "region_by_index",
    "structures",
    "write_lookup_table",
]

#: Name of the label set, used in output names: ``_seg-pvsregions_dseg.nii.gz``.
REGION_SET = "pvsregions"


@dataclass(frozen=True)
class Region:
    """One leaf label of the PVS region set."""

    index: int
    structure: str
    hemisphere: str  # "left", "right" or "bilateral"
    color: str

    @property
    def name(self) -> str:
        return self.structure if self.hemisphere == "bilateral" else f"{self.structure}_{self.hemisphere}"


REGIONS: tuple[Region, ...] = (
    Region(1, "centrum_semiovale", "left", "#f5c542"),
    Region(2, "centrum_semiovale", "right", "#e0a800"),
    Region(3, "deep_white_matter", "left", "#f7e7a6"),
    Region(4, "deep_white_matter", "right", "#d9c77a"),
    Region(5, "basal_ganglia", "left", "#3fa7f5"),
    Region(6, "basal_ganglia", "right", "#1f6fc4"),
    Region(7, "thalamus", "left", "#46c96b"),
    Region(8, "thalamus", "right", "#2a8f47"),
    Region(9, "hippocampus", "left", "#e86cc7"),
    Region(10, "hippocampus", "right", "#b0378f"),
    Region(11, "midbrain", "bilateral", "#ff7f50"),
    Region(12, "other", "bilateral", "#9e9e9e"),
)

#: Reported aggregates of leaf structures (beside every leaf structure itself).
GROUPS: dict[str, tuple[str, ...]] = {"white_matter": ("centrum_semiovale", "deep_white_matter")}


def structures() -> list[str]:
    """Leaf structure names in label order, without duplicates."""
    return list(dict.fromkeys(r.structure for r in REGIONS))


def region_by_index(index: int) -> Region | None:
    """The region with label ``index`` (None for background or unknown labels)."""
    return next((r for r in REGIONS if r.index == index), None)


def lookup_table() -> pd.DataFrame:
    """BIDS ``dseg.tsv`` look-up table (index, name, structure, hemisphere, color)."""
    rows = [
        {"index": 0, "name": "background", "structure": "background", "hemisphere": "n/a", "color": "#000000"}
    ]
    rows += [
        {
            "index": r.index,
            "name": r.name,
            "structure": r.structure,
            "hemisphere": r.hemisphere,
            "color": r.color,
        }
        for r in REGIONS
    ]
    return pd.DataFrame(rows)


def write_lookup_table(folder: str | Path) -> list[Path]:
    """Write ``seg-<REGION_SET>_dseg.tsv`` and its JSON sidecar (every non-standard column described).

    The sidecar holds column descriptions only: by BIDS inheritance it also applies to every
    ``*_seg-<REGION_SET>_dseg.json`` below it, whose own ``Description`` it must not override.
    """
    stem = Path(folder) / f"seg-{REGION_SET}_dseg"
    sidecar = {
        "structure": {"Description": "Anatomical structure of the label (left and right parts share it)."},
        "hemisphere": {"Description": "left, right, bilateral, or n/a for the background."},
    }
    return [
        write_tsv(stem.with_suffix(".tsv"), lookup_table()),
        write_json(stem.with_suffix(".json"), sidecar),
    ]
