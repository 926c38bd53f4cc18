"""One run's configuration: built from the command line, saved as TOML next to the logs."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from mednet_pvs.errors import UsageError

__all__ = ["Config", "default_work_dir", "new_run_id"]


def new_run_id() -> str:
    """A sortable, unique run identifier (UTC time + random suffix), as fMRIPrep uses."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{uuid.uuid4().hex[:8]}"


def default_work_dir(output_dir: Path) -> Path:
    """A work folder outside the dataset that is stable for a given output folder (so reruns resume)."""
    digest = hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / "mednet-pvs-work" / digest


@dataclass
class Config:
    """Every option of a run. Paths are absolute once :meth:`resolve_paths` ran."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    bids_filters: dict[str, Any] = field(default_factory=dict)
    skip_bids_validation: bool = False
    bids_database_dir: Path | None = None
    contrast: str = "auto"
    skip_n4: bool = False
    skip_skull_strip: bool = False
    method: str = "mednext"
    model: str | None = None
    device: str = "auto"
    tta: bool = True
    tta_mirroring: str = "all"
    folds: list[int] = field(default_factory=list)
    threshold: float | None = None
    min_cluster_size: float = 2.0
    regions: str = "atlas"
    fs_subjects_dir: Path | None = None
    nprocs: int = 0
    omp_nthreads: int = 0
    mem_gb: float | None = None
    work_dir: Path | None = None
    clean_workdir: bool = False
    nipype_plugin: str = "MultiProc"
    plugin_args: dict[str, Any] = field(default_factory=dict)
    stop_on_first_crash: bool = False
    reports_only: bool = False
    resource_monitor: bool = False
    verbosity: int = 0
    run_id: str = field(default_factory=new_run_id)

    def resolve_paths(self) -> None:
        """Make paths absolute and apply the placement rules of the BIDS-Apps specification."""
        self.bids_dir = Path(self.bids_dir).expanduser().resolve()
        self.output_dir = Path(self.output_dir).expanduser().resolve()
        if not self.bids_dir.is_dir():
            raise UsageError(f"bids_dir {self.bids_dir} does not exist or is not a folder")
        raw_derivatives = self.bids_dir / "derivatives"
        if self.output_dir == self.bids_dir or (
            self.output_dir.is_relative_to(self.bids_dir)
            and not self.output_dir.is_relative_to(raw_derivatives)
        ):
            raise UsageError(
                f"output_dir {self.output_dir} is (inside) the raw dataset {self.bids_dir}; "
                f"write derivatives elsewhere or under {raw_derivatives}"
            )
        self.work_dir = (
            Path(self.work_dir).expanduser().resolve() if self.work_dir else default_work_dir(self.output_dir)
        )
        if self.work_dir.is_relative_to(self.bids_dir):
            raise UsageError(
                f"work dir {self.work_dir} is inside the BIDS dataset {self.bids_dir}; choose another -w"
            )
        if self.output_dir.is_relative_to(self.work_dir):
            raise UsageError(f"output_dir {self.output_dir} is inside the work dir {self.work_dir}")
        for name in ("bids_database_dir", "fs_subjects_dir"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value).expanduser().resolve())
        self._check_regions()

    def _check_regions(self) -> None:
        if self.regions == "aseg":
            if self.fs_subjects_dir is None or not self.fs_subjects_dir.is_dir():
                raise UsageError(
                    "--regions aseg needs --fs-subjects-dir pointing to an existing FreeSurfer folder"
                )
        elif self.regions not in ("atlas", "none"):
            path = Path(self.regions).expanduser().resolve()
            if not path.exists():
                raise UsageError(
                    f"--regions {self.regions}: no such file or folder (use atlas, aseg, none or a path)"
                )
            self.regions = str(path)

    # ------------------------------------------------------------------ TOML
    def to_toml(self) -> str:
        data = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            data[f.name] = str(value) if isinstance(value, Path) else value
        return tomli_w.dumps(data)

    @staticmethod
    def read_toml(path: Path) -> dict[str, Any]:
        """Options from a ``--config-file`` (a TOML file as written next to the logs)."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"--config-file {path}: cannot be read ({exc})") from exc
        known = {f.name for f in dataclasses.fields(Config)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"--config-file {path}: unknown options {unknown}")
        return data
