"""BIDS queries, derivative file names and the derivative dataset's description.

Entity order and names come from the BIDS schema (``bidsschematools``, a pybids dependency), so
output names follow the specification's ordering rather than a hand-kept list.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from mednet_pvs import __version__
from mednet_pvs.errors import MednetPVSError, UsageError
from mednet_pvs.utils.atomic import create_once, write_text

__all__ = [
    "CONTRASTS",
    "ImageRecord",
    "bids_uri",
    "build_layout",
    "collect_images",
    "dataset_description",
    "derivative_name",
    "derivative_path",
    "parse_entities",
    "select_participants",
    "validate_label",
    "write_derivative_dataset_files",
]

LOGGER = logging.getLogger(__name__)

#: Anatomical contrasts the pipeline accepts, in the order ``--contrast auto`` prefers them.
CONTRASTS = ("T2w", "T1w")
CODE_URL = "https://github.com/mednet-pvs/mednet-pvs"
_LABEL = re.compile(r"^[A-Za-z0-9]+$")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_DATABASE_FILE = "layout_index.sqlite"  # pybids' file name inside a database folder


@lru_cache(maxsize=1)
def _entity_schema() -> tuple[list[str], dict[str, str]]:
    """(ordered short keys, short key -> pybids long name) from the BIDS schema."""
    from bidsschematools import schema

    bids_schema = schema.load_schema()
    order = [bids_schema.objects.entities[name].name for name in bids_schema.rules.entities]
    long_names = {bids_schema.objects.entities[name].name: name for name in bids_schema.rules.entities}
    return order, long_names


def validate_label(value: str, what: str) -> str:
    """Strip a ``sub-``/``ses-`` prefix and check the label is BIDS-alphanumeric."""
    prefix = {"participant": "sub-", "session": "ses-"}.get(what, "")
    label = value[len(prefix) :] if prefix and value.startswith(prefix) else value
    if not _LABEL.match(label):
        raise UsageError(f"invalid {what} label {value!r}: BIDS labels contain only letters and digits")
    return label


def parse_entities(path: str | os.PathLike[str]) -> tuple[dict[str, str], str, str]:
    """(entities by short key, suffix, extension) of a BIDS file name."""
    name = Path(path).name
    extension = next((ext for ext in (".nii.gz", ".tsv.gz") if name.endswith(ext)), Path(name).suffix)
    stem = name[: len(name) - len(extension)]
    *pairs, suffix = stem.split("_")
    entities: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("-")
        if not sep or not value:
            raise MednetPVSError(f"{path}: {pair!r} is not a BIDS key-value entity")
        entities[key] = value
    return entities, suffix, extension


def derivative_name(source: str | os.PathLike[str], suffix: str, extension: str, **new_entities: str) -> str:
    """Derivative file name carrying the source's entities plus ``new_entities`` (short keys).

    ``derivative_name("sub-01_ses-1_acq-hr_T2w.nii.gz", "mask", ".nii.gz", desc="pvs")`` gives
    ``sub-01_ses-1_acq-hr_desc-pvs_mask.nii.gz``.
    """
    entities, _, _ = parse_entities(source)
    entities.update({k: v for k, v in new_entities.items() if v})
    order, _ = _entity_schema()
    unknown = sorted(set(entities) - set(order))
    if unknown:
        raise MednetPVSError(f"{source}: unknown BIDS entities {unknown}")
    parts = [f"{key}-{entities[key]}" for key in order if key in entities]
    return "_".join([*parts, suffix]) + extension


def derivative_path(
    output_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    suffix: str,
    extension: str,
    **entities: str,
) -> Path:
    """Where a derivative of ``source`` goes: ``output_dir/sub-X[/ses-Y]/anat/<name>``."""
    source_entities, _, _ = parse_entities(source)
    folder = Path(output_dir) / f"sub-{source_entities['sub']}"
    if "ses" in source_entities:
        folder /= f"ses-{source_entities['ses']}"
    return folder / "anat" / derivative_name(source, suffix, extension, **entities)


def bids_uri(path: str | os.PathLike[str], root: str | os.PathLike[str], dataset: str = "") -> str:
    """BIDS URI of ``path`` in the dataset at ``root`` (``bids:<dataset>:<relative path>``)."""
    relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    return f"bids:{dataset}:{relative.as_posix()}"


@dataclass(frozen=True)
class ImageRecord:
    """One anatomical image selected for processing."""

    path: Path
    subject: str
    session: str | None
    contrast: str
    entities: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        """A short identifier unique within a run, usable in Nipype node names."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.path.name.split(".")[0])


def build_layout(bids_dir: Path, database_dir: Path | None = None) -> Any:
    """A pybids layout of the raw dataset (derivatives and non-BIDS folders not indexed).

    With ``database_dir`` one index serves many jobs: a missing index is built in a temporary sibling
    folder and renamed into place, so concurrent jobs never see a half-written index (the first
    rename wins; the other jobs open the winner's). An existing index is only read, never written,
    so any number of jobs can open it at once; it must index this same ``bids_dir``.
    """
    bids_dir = Path(bids_dir).resolve()
    if not (bids_dir / "dataset_description.json").is_file():
        LOGGER.warning(
            "%s: no dataset_description.json, so this is not a valid BIDS dataset (the BIDS validator "
            "refuses it); going on with the files that have BIDS names",
            bids_dir,
        )
    if database_dir is None:
        return _open_layout(bids_dir, None)
    database_dir = Path(database_dir).resolve()
    database_file = database_dir / _DATABASE_FILE
    if not database_file.is_file():
        _create_index(bids_dir, database_dir)
    indexed_root = _indexed_root(database_file)
    if indexed_root != bids_dir:
        raise UsageError(
            f"--bids-database-dir {database_dir} indexes {indexed_root}, not {bids_dir}; give a new "
            "(missing) folder to index this dataset there (inside a container, index with the same "
            "bind paths the jobs use)"
        )
    created = datetime.fromtimestamp(database_file.stat().st_mtime).isoformat(timespec="seconds")
    LOGGER.info(
        "pybids index %s (built %s; files added to %s since are not seen)", database_dir, created, bids_dir
    )
    return _open_layout(bids_dir, database_dir)


def _open_layout(bids_dir: Path, database_dir: Path | None, reset: bool = False) -> Any:
    from bids import BIDSLayout, BIDSLayoutIndexer

    indexer = BIDSLayoutIndexer(
        validate=False, ignore=[re.compile(r"^/(code|derivatives|sourcedata|stimuli|work)")]
    )
    kwargs: dict[str, Any] = {"validate": False, "indexer": indexer}
    if database_dir is not None:
        kwargs.update(database_path=database_dir, reset_database=reset)
    try:
        return BIDSLayout(str(bids_dir), **kwargs)
    except Exception as exc:  # pybids raises bare exceptions for missing description files etc.
        raise MednetPVSError(f"{bids_dir}: cannot be read as a BIDS dataset ({exc})") from exc


def _create_index(bids_dir: Path, database_dir: Path) -> None:
    """Index ``bids_dir`` into a temporary sibling of ``database_dir``, then rename it into place."""
    try:
        database_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(prefix=f".{database_dir.name}.", suffix=".partial", dir=database_dir.parent)
        )
    except OSError as exc:
        raise UsageError(f"--bids-database-dir {database_dir}: cannot be created ({exc.strerror})") from exc
    try:
        LOGGER.info("indexing %s into %s", bids_dir, database_dir)
        layout = _open_layout(bids_dir, staging, reset=True)
        layout.connection_manager.session.close()
        staging.chmod(0o755)
        # read-only file: jobs that open the shared index can only read it
        (staging / _DATABASE_FILE).chmod(0o444)
        try:
            staging.rename(database_dir)  # atomic; refused when another job's index is already there
        except OSError as exc:
            if not (database_dir / _DATABASE_FILE).is_file():
                raise UsageError(
                    f"--bids-database-dir {database_dir}: exists and holds no pybids index "
                    f"({_DATABASE_FILE}); give a new or empty folder"
                ) from exc
            LOGGER.info("another job indexed %s first; using its index", bids_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _indexed_root(database_file: Path) -> Path:
    """The dataset root a pybids index was built for (read without opening it for writing)."""
    try:
        with closing(sqlite3.connect(f"{database_file.as_uri()}?mode=ro", uri=True)) as connection:
            (root,) = connection.execute("SELECT root FROM layout_info").fetchone()
    except (sqlite3.Error, TypeError) as exc:
        raise UsageError(f"{database_file}: not a readable pybids index ({exc})") from exc
    return Path(root).resolve()


def select_participants(layout: Any, requested: Iterable[str] | None) -> list[str]:
    """The participants to process; unknown requested labels are a usage error naming them."""
    available = sorted(layout.get_subjects())
    if not requested:
        if not available:
            raise UsageError(f"{layout.root}: no participants (sub-*) found")
        return available
    labels = list(dict.fromkeys(validate_label(label, "participant") for label in requested))
    unknown = [label for label in labels if label not in available]
    if unknown:
        raise UsageError(
            f"participant label(s) not found in {layout.root}: {', '.join(unknown)} "
            f"(available: {', '.join(available) or 'none'})"
        )
    return labels


def _query(
    layout: Any, subject: str, session: str | None, contrast: str, filters: Mapping[str, Any]
) -> list[Path]:
    query: dict[str, Any] = {
        "subject": subject,
        "datatype": "anat",
        "suffix": contrast,
        "extension": list(_NIFTI_EXTENSIONS),
        "return_type": "file",
    }
    if session is not None:
        query["session"] = session
    query.update(filters.get(contrast.lower(), {}))
    return [Path(p) for p in sorted(layout.get(**query))]


def collect_images(
    layout: Any,
    subject: str,
    sessions: Iterable[str] | None,
    contrast: str,
    filters: Mapping[str, Any] | None = None,
) -> list[ImageRecord]:
    """Images of ``subject`` to process: per session, the requested contrast (``auto``: T2w if
    present, else T1w). Every matching run/acquisition is returned as its own record."""
    filters = filters or {}
    subject_sessions = sorted(layout.get_sessions(subject=subject))
    if sessions:
        wanted = [validate_label(s, "session") for s in sessions]
        groups: list[str | None] = [s for s in wanted if s in subject_sessions]
    else:
        groups = list(subject_sessions) or [None]
    records: list[ImageRecord] = []
    for session in groups:
        for candidate in CONTRASTS if contrast == "auto" else (contrast,):
            paths = _query(layout, subject, session, candidate, filters)
            if paths:
                records += [ImageRecord(p, subject, session, candidate, parse_entities(p)[0]) for p in paths]
                break
    return records


def container_info() -> dict[str, str] | None:
    """``GeneratedBy.Container`` from the environment the image sets (None outside containers)."""
    for variable, kind in (("APPTAINER_CONTAINER", "apptainer"), ("SINGULARITY_CONTAINER", "singularity")):
        if os.environ.get(variable):
            return {
                "Type": kind,
                "Tag": os.environ.get("MEDNET_PVS_CONTAINER_TAG", Path(os.environ[variable]).name),
            }
    if os.environ.get("MEDNET_PVS_CONTAINER_TYPE"):
        return {
            "Type": os.environ["MEDNET_PVS_CONTAINER_TYPE"],
            "Tag": os.environ.get("MEDNET_PVS_CONTAINER_TAG", ""),
        }
    return None


def dataset_description(bids_dir: Path) -> dict[str, Any]:
    """The derivative dataset's ``dataset_description.json`` content."""
    generated_by: dict[str, Any] = {"Name": "mednet-pvs", "Version": __version__, "CodeURL": CODE_URL}
    container = container_info()
    if container:
        generated_by["Container"] = container
    source: dict[str, Any] = {"URL": Path(bids_dir).resolve().as_uri()}
    raw_description = Path(bids_dir) / "dataset_description.json"
    try:
        raw = json.loads(raw_description.read_text())
        if raw.get("DatasetDOI"):
            source["DOI"] = raw["DatasetDOI"]
    except (OSError, ValueError):
        pass
    return {
        "Name": "mednet-pvs: perivascular space segmentation and statistics",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": Path(bids_dir).resolve().as_uri()},
        "HowToAcknowledge": "Please cite mednet-pvs and the methods listed in the subject reports.",
    }


_BIDSIGNORE = """\
*.html
*_morph.tsv
*_morph.json
sub-*/log
sub-*/figures
logs
"""

_README = """\
# mednet-pvs derivatives

Perivascular space (PVS) masks, probabilities, region maps, statistics and reports written by
mednet-pvs. See each subject's HTML report for the methods and the software versions used.
Tables not yet covered by the BIDS specification (``*_morph.tsv``) and the reports are listed in
``.bidsignore``.
"""


def write_derivative_dataset_files(output_dir: Path, bids_dir: Path) -> None:
    """Create ``dataset_description.json``, ``README`` and ``.bidsignore`` once (safe under races).

    An existing description written by another mednet-pvs version is kept, with a warning.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    description = dataset_description(bids_dir)
    path = output_dir / "dataset_description.json"
    if not create_once(path, json.dumps(description, indent=2) + "\n"):
        try:
            existing = json.loads(path.read_text())
            versions = {
                g.get("Version") for g in existing.get("GeneratedBy", []) if g.get("Name") == "mednet-pvs"
            }
        except (OSError, ValueError):
            versions = set()
        if __version__ not in versions:
            LOGGER.warning(
                "%s was written by mednet-pvs %s; this is %s. Outputs of both versions now share the folder.",
                path,
                ", ".join(sorted(str(v) for v in versions)) or "another tool",
                __version__,
            )
    create_once(output_dir / "README", _README)
    bidsignore = output_dir / ".bidsignore"
    if not bidsignore.exists():
        write_text(bidsignore, _BIDSIGNORE)
