"""Group level: gather every image's region table from an output folder into long and wide tables.

Only ``output_dir``'s ``sub-*/**/*_desc-pvs_morph.tsv`` files are read (with the entities parsed
from their names), so the group step needs nothing but the participant-level outputs and, when
given, ``participants.tsv``. Robust z-scores (median / MAD) flag images to look at first.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mednet_pvs.errors import MednetPVSError
from mednet_pvs.stats.columns import GROUP_ID_COLUMNS, REGION_COLUMNS, ROBUST_Z_COLUMNS, column_sidecar
from mednet_pvs.stats.outputs import DERIVATIVE_SUFFIXES, write_table
from mednet_pvs.stats.tables import region_rows

__all__ = [
    "GROUP_LONG_NAME",
    "GROUP_WIDE_NAME",
    "OUTLIER_Z",
    "GroupInputError",
    "GroupTables",
    "aggregate_group",
    "find_region_tables",
    "robust_z",
    "write_group_tables",
]

LOGGER = logging.getLogger(__name__)

GROUP_LONG_NAME = "group_desc-pvs_morph.tsv"
GROUP_WIDE_NAME = "group_desc-pvswide_morph.tsv"
#: |robust z| above this flags a potential outlier (Iglewicz and Hoaglin 1993).
OUTLIER_Z = 3.5
#: Fewer images than this in a protocol: no z-scores (a median of 4 values says little).
MIN_IMAGES_FOR_Z = 5
#: Values spread into the wide table, per region and hemisphere.
WIDE_METRICS = (
    "count",
    "volume_mm3",
    "volume_fraction",
    "epvs_slice_count_auto",
    "epvs_slice_rating_auto",
    "epvs_maxslice_count_auto",
    "epvs_maxslice_rating_auto",
)
_NOT_PROTOCOL = ("sub", "ses", "run", "desc")


class GroupInputError(MednetPVSError):
    """Nothing (usable) to aggregate at the group level; the message names the folder and the reason."""


@dataclass
class GroupTables:
    """The long table (one row per image, region and hemisphere) and the wide table (one row per image)."""

    long: pd.DataFrame
    wide: pd.DataFrame
    participant_columns: list[str] = field(default_factory=list)
    participant_descriptions: dict[str, Any] = field(default_factory=dict)


def find_region_tables(output_dir: Path) -> list[Path]:
    """Every image's region table under ``output_dir/sub-*``, sorted by path."""
    suffix = DERIVATIVE_SUFFIXES["morph"]
    return sorted(p for p in Path(output_dir).glob(f"sub-*/**/*{suffix}") if p.is_file())


def _entities(path: Path) -> dict[str, str] | None:
    stem = path.name[: -len(DERIVATIVE_SUFFIXES["morph"])]
    entities = {}
    for pair in stem.split("_"):
        key, sep, value = pair.partition("-")
        if not sep or not value or not key.isalnum() or not value.isalnum():
            return None
        entities[key] = value
    return entities if "sub" in entities else None


def robust_z(values: pd.Series) -> pd.Series:
    """(x - median) / (1.4826 MAD); mean absolute deviation * 1.2533 as the scale when MAD is 0.

    1.4826 and 1.2533 (sqrt(pi/2)) make both scales estimate the standard deviation of normal data
    (Iglewicz and Hoaglin 1993). n/a when there are fewer than ``MIN_IMAGES_FOR_Z`` values or no spread.
    """
    finite = values.dropna()
    if len(finite) < MIN_IMAGES_FOR_Z:
        return pd.Series(np.nan, index=values.index)
    median = finite.median()
    deviation = (finite - median).abs()
    scale = 1.4826 * deviation.median()
    if scale == 0:
        scale = 1.2533 * deviation.mean()
    if scale == 0:
        return pd.Series(np.nan, index=values.index)
    return (values - median) / scale


def _read_participants(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    try:
        table = pd.read_csv(
            path, sep="\t", na_values="n/a", keep_default_na=False, dtype={"participant_id": str}
        )
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise GroupInputError(f"{path}: cannot be read as a TSV file ({exc})") from exc
    if "participant_id" not in table.columns:
        raise GroupInputError(f"{path}: has no participant_id column")
    table["participant_id"] = [p if p.startswith("sub-") else f"sub-{p}" for p in table["participant_id"]]
    table = table.drop_duplicates("participant_id")
    descriptions: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            loaded = json.loads(sidecar.read_text(encoding="utf-8"))
            descriptions = {k: v for k, v in loaded.items() if isinstance(v, dict)}
        except (OSError, ValueError, AttributeError) as exc:
            LOGGER.warning("%s: ignored, not readable JSON (%s)", sidecar, exc)
    return table, descriptions


def _read_tables(paths: list[Path]) -> tuple[pd.DataFrame, list[str]] | None:
    """All readable region tables in one frame with id and entity columns, and the entity columns.

    Files sharing a header are concatenated as text and parsed once: one ``read_csv`` per file costs
    more than reading the file itself, and a group may hold thousands of images.
    """
    bodies: dict[str, list[str]] = {}
    ids = []
    for path in tqdm(paths, desc="reading region tables", unit="image", disable=len(paths) < 200):
        entities = _entities(path)
        if entities is None:
            LOGGER.warning("%s: skipped, its name has no BIDS sub-<label> entities", path)
            continue
        try:
            header, _, body = path.read_text(encoding="utf-8").partition("\n")
        except (OSError, UnicodeDecodeError) as exc:
            LOGGER.warning("%s: skipped, unreadable (%s)", path, exc)
            continue
        if not {"region", "hemisphere", "count", "volume_mm3"} <= set(header.split("\t")):
            LOGGER.warning("%s: skipped, not a mednet-pvs region table", path)
            continue
        number = len(ids)
        bodies.setdefault(f"_row\t{header}", []).extend(
            f"{number}\t{line}" for line in body.splitlines() if line.strip()
        )
        protocol = "_".join(f"{k}-{v}" for k, v in entities.items() if k not in _NOT_PROTOCOL) or "default"
        ids.append(
            {
                "participant_id": f"sub-{entities['sub']}",
                "session_id": f"ses-{entities['ses']}" if "ses" in entities else np.nan,
                "image": path.name[: -len(DERIVATIVE_SUFFIXES["morph"])],
                "protocol": protocol,
                **{k: v for k, v in entities.items() if k not in ("sub", "ses")},
            }
        )
    if not ids:
        return None
    frames = []
    for header, lines in bodies.items():
        text = io.StringIO(header + "\n" + "\n".join(lines) + "\n")
        frames.append(pd.read_csv(text, sep="\t", na_values="n/a", keep_default_na=False))
    tables = pd.concat(frames, ignore_index=True).sort_values("_row", kind="stable")
    identifiers = pd.DataFrame(ids)
    entity_columns = [c for c in identifiers.columns if c not in GROUP_ID_COLUMNS]
    frame = tables.join(identifiers, on="_row").drop(columns="_row").reset_index(drop=True)
    return frame, entity_columns


def aggregate_group(output_dir: Path, participants_tsv: Path | None = None) -> GroupTables:
    """Long and wide group tables from every ``*_desc-pvs_morph.tsv`` in ``output_dir``.

    Raises :class:`GroupInputError` when there is none, or none is readable.
    """
    output_dir = Path(output_dir)
    paths = find_region_tables(output_dir)
    if not paths:
        raise GroupInputError(
            f"{output_dir}: no participant-level statistics (sub-*/**/*{DERIVATIVE_SUFFIXES['morph']}) to "
            "aggregate; run the participant level first"
        )
    read = _read_tables(paths)
    if read is None:
        raise GroupInputError(f"{output_dir}: none of the {len(paths)} region tables could be read")
    long, entity_columns = read

    id_columns = [*GROUP_ID_COLUMNS, *entity_columns]
    participant_columns: list[str] = []
    descriptions: dict[str, Any] = {}
    if participants_tsv is not None:
        participants, descriptions = _read_participants(Path(participants_tsv))
        participant_columns = [
            c for c in participants.columns if c != "participant_id" and c not in id_columns
        ]
        missing = sorted(set(long["participant_id"]) - set(participants["participant_id"]))
        if missing:
            LOGGER.warning(
                "%d participant(s) not in %s: %s", len(missing), participants_tsv, ", ".join(missing[:10])
            )
        long = long.merge(
            participants[["participant_id", *participant_columns]], on="participant_id", how="left"
        )

    grouped = long.groupby(["protocol", "region", "hemisphere"], sort=False)
    long["count_robust_z"] = grouped["count"].transform(robust_z)
    long["volume_mm3_robust_z"] = grouped["volume_mm3"].transform(robust_z)
    region_columns = [c for c in REGION_COLUMNS if c in long.columns]
    long = long[[*id_columns, *participant_columns, *region_columns, *ROBUST_Z_COLUMNS]]
    wide = _wide(long, [*id_columns, *participant_columns])
    return GroupTables(long, wide, participant_columns, descriptions)


def _wide(long: pd.DataFrame, id_columns: list[str]) -> pd.DataFrame:
    """One row per image; ``<region>_<hemisphere>_<metric>`` columns in region-table order."""
    metrics = [m for m in WIDE_METRICS if m in long.columns]
    spread = long.pivot(index="image", columns=["region", "hemisphere"], values=metrics)
    columns = []
    for row in region_rows():
        for metric in metrics:
            key = (metric, row.region, row.hemisphere)
            if key in spread.columns and spread[key].notna().any():
                columns.append(key)
    spread = spread[columns]
    spread.columns = [f"{region}_{hemisphere}_{metric}" for metric, region, hemisphere in columns]
    ids = long.drop_duplicates("image").set_index("image")[[c for c in id_columns if c != "image"]]
    return ids.join(spread).reset_index()[[*id_columns, *spread.columns]]


def _wide_specs(tables: GroupTables) -> dict[str, dict[str, str]]:
    specs = {}
    for row in region_rows():
        for metric in WIDE_METRICS:
            name = f"{row.region}_{row.hemisphere}_{metric}"
            if name in tables.wide.columns:
                spec = dict(REGION_COLUMNS[metric])
                spec["LongName"] = f"{spec['LongName']}, {row.region} ({row.hemisphere})"
                specs[name] = spec
    return specs


def write_group_tables(output_dir: Path, tables: GroupTables) -> list[Path]:
    """Write ``group_desc-pvs_morph.tsv`` and ``group_desc-pvswide_morph.tsv`` with their sidecars."""
    output_dir = Path(output_dir)
    base = {**GROUP_ID_COLUMNS, **tables.participant_descriptions}
    long_specs = {**base, **REGION_COLUMNS, **ROBUST_Z_COLUMNS}
    written = write_table(
        output_dir / GROUP_LONG_NAME, tables.long, column_sidecar(tables.long.columns, long_specs)
    )
    wide_specs = {**base, **_wide_specs(tables)}
    written += write_table(
        output_dir / GROUP_WIDE_NAME, tables.wide, column_sidecar(tables.wide.columns, wide_specs)
    )
    return written
