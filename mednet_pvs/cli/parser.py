"""The ``mednet-pvs`` argument parser, following the BIDS-Apps specification.

Every long option accepts both spellings (``--participant-label`` and ``--participant_label``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from mednet_pvs import __version__
from mednet_pvs.config import Config
from mednet_pvs.models.card import TTA_MIRRORINGS

__all__ = ["build_parser", "parse_memory_gb", "read_filter_file", "read_plugin_args"]

_PLUGINS = (
    "MultiProc",
    "Linear",
    "SLURM",
    "SLURMGraph",
    "SGE",
    "SGEGraph",
    "PBS",
    "PBSGraph",
    "LSF",
    "Condor",
)
_FILTER_KEYS = ("t2w", "t1w")


def _add(group: argparse._ActionsContainer, *flags: str, **kwargs: Any) -> None:
    """Add an option under its hyphen spelling and its underscore twin."""
    names: list[str] = []
    for flag in flags:
        names.append(flag)
        if flag.startswith("--") and "-" in flag[2:]:
            names.append("--" + flag[2:].replace("-", "_"))
    group.add_argument(*names, **kwargs)


def parse_memory_gb(text: str) -> float:
    """``16``, ``16G``, ``16GB``, ``16000MB`` -> GB (float)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)[bB]?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"cannot read memory size {text!r} (examples: 16, 16GB, 16000MB)")
    value, unit = float(match.group(1)), match.group(2).upper() or "G"
    gb = value * {"K": 1e-6, "M": 1e-3, "G": 1.0, "T": 1e3}[unit]
    if gb <= 0:
        raise argparse.ArgumentTypeError("memory must be positive")
    return gb


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1)")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def read_filter_file(path: str) -> dict[str, Any]:
    """Read and check a ``--bids-filter-file``: {"t2w": {entity: value}, "t1w": {...}}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"--bids-filter-file {path}: cannot be read as JSON ({exc})"
        ) from exc
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(f"--bids-filter-file {path}: must hold a JSON object")
    filters: dict[str, Any] = {}
    for key, query in data.items():
        if key.lower() not in _FILTER_KEYS:
            raise argparse.ArgumentTypeError(
                f"--bids-filter-file {path}: unknown key {key!r} (use {', '.join(_FILTER_KEYS)})"
            )
        if not isinstance(query, dict):
            raise argparse.ArgumentTypeError(
                f"--bids-filter-file {path}: {key!r} must map entities to values"
            )
        for entity, value in query.items():
            if not re.fullmatch(r"[a-z]+", entity):
                raise argparse.ArgumentTypeError(f"--bids-filter-file {path}: invalid entity name {entity!r}")
            values = value if isinstance(value, list) else [value]
            for item in values:
                if item is not None and not (
                    isinstance(item, (int, bool)) or re.fullmatch(r"[A-Za-z0-9]+", str(item))
                ):
                    raise argparse.ArgumentTypeError(
                        f"--bids-filter-file {path}: value {item!r} of {entity!r} is not a BIDS label"
                    )
        filters[key.lower()] = query
    return filters


def read_plugin_args(text: str) -> dict[str, Any]:
    """``--plugin-args``: a YAML/JSON file, or an inline YAML/JSON mapping."""
    candidate = Path(text)
    source = candidate.read_text(encoding="utf-8") if candidate.is_file() else text
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"--plugin-args: cannot be read as YAML ({exc})") from exc
    if isinstance(data, dict) and "plugin_args" in data:
        data = data["plugin_args"]
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError(
            "--plugin-args must be a mapping (file or inline), e.g. '{n_gpu_procs: 1}'"
        )
    return data


def build_parser() -> argparse.ArgumentParser:
    """The full ``mednet-pvs`` parser."""
    parser = argparse.ArgumentParser(
        prog="mednet-pvs",
        description="Segment perivascular spaces (PVS) in BIDS anatomical MRI with MedNeXt and report "
        "their count and volume per brain region (BIDS App).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="the root folder of a BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="the output (derivative dataset) folder")
    parser.add_argument(
        "analysis_level",
        choices=["participant", "group"],
        help="'participant' processes images; 'group' aggregates",
    )
    parser.add_argument("--version", action="version", version=f"mednet-pvs {__version__}")

    bids = parser.add_argument_group("BIDS selection")
    _add(
        bids,
        "--participant-label",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="participants to process (with or without 'sub-'); default all",
    )
    _add(
        bids,
        "--session-label",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="sessions to process (with or without 'ses-'); default all",
    )
    _add(
        bids,
        "--bids-filter-file",
        type=read_filter_file,
        default={},
        dest="bids_filters",
        metavar="FILE",
        help='JSON file with pybids filters per contrast, e.g. {"t2w": {"acquisition": "hr"}}',
    )
    _add(bids, "--skip-bids-validation", action="store_true", help="do not run the BIDS validator")
    _add(
        bids,
        "--bids-database-dir",
        type=Path,
        metavar="DIR",
        help="pybids index folder shared by many jobs: built atomically when missing, then only read "
        "(see docs/hpc.md)",
    )
    _add(
        bids,
        "--contrast",
        choices=["auto", "T2w", "T1w"],
        default="auto",
        help="input contrast; 'auto' takes T2w when present, else T1w (per participant and session)",
    )

    prep = parser.add_argument_group("Preprocessing")
    _add(prep, "--skip-n4", action="store_true", help="skip N4 bias-field correction")
    _add(
        prep,
        "--skip-skull-strip",
        action="store_true",
        help="skip skull stripping (inputs already brain-extracted: the brain is their non-zero region)",
    )

    seg = parser.add_argument_group("Segmentation")
    _add(
        seg,
        "--method",
        choices=["mednext", "frangi"],
        default="mednext",
        help="'mednext' runs a model; 'frangi' is the classical vesselness baseline (no weights)",
    )
    _add(
        seg, "--model", metavar="NAME|PATH", help="model name (see mednet-pvs-models list) or model directory"
    )
    _add(seg, "--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'")
    _add(
        seg,
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mirroring test-time augmentation",
    )
    _add(
        seg,
        "--tta-mirroring",
        choices=TTA_MIRRORINGS,
        default=Config.tta_mirroring,
        help="mirrorings TTA averages: 'all' of the model card's (8 passes for 3 axes) or "
        "'left-right' (2 passes, 3-4 times faster on a CPU; docs/models.md gives what it costs in accuracy)",
    )
    _add(
        seg,
        "--folds",
        nargs="+",
        type=int,
        default=[],
        metavar="K",
        help="model folds to ensemble (default all)",
    )
    _add(
        seg,
        "--threshold",
        type=_probability,
        default=None,
        help="PVS probability threshold (default: the model card's, or the Frangi default)",
    )
    _add(
        seg,
        "--min-cluster-size",
        type=_non_negative,
        default=Config.min_cluster_size,
        metavar="MM3",
        help="drop PVS clusters smaller than this volume (mm^3)",
    )

    regions = parser.add_argument_group("Regions")
    _add(
        regions,
        "--regions",
        default="atlas",
        metavar="atlas|aseg|none|PATH",
        help="'atlas': bundled MNI atlas registered to the subject; 'aseg': FreeSurfer labels from "
        "--fs-subjects-dir; PATH: a label file or a derivatives folder with aseg/SynthSeg files; 'none'",
    )
    _add(
        regions,
        "--fs-subjects-dir",
        type=Path,
        metavar="DIR",
        help="FreeSurfer SUBJECTS_DIR (with --regions aseg)",
    )

    perf = parser.add_argument_group("Performance and execution")
    _add(
        perf,
        "--nprocs",
        "--n-cpus",
        type=_positive_int,
        default=0,
        metavar="N",
        help="maximum number of processes (default: all CPUs)",
    )
    _add(
        perf,
        "--omp-nthreads",
        type=_positive_int,
        default=0,
        metavar="N",
        help="threads per process for N4, registration and segmentation (default: min(nprocs, 8))",
    )
    _add(
        perf,
        "--mem",
        "--mem-gb",
        type=parse_memory_gb,
        default=None,
        dest="mem_gb",
        metavar="SIZE",
        help="memory limit for the scheduler, e.g. 16GB (default: available memory)",
    )
    _add(
        perf,
        "-w",
        "--work-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="work folder (cache: a rerun with the same folder resumes)",
    )
    _add(perf, "--clean-workdir", action="store_true", help="empty the work folder first")
    _add(perf, "--nipype-plugin", choices=_PLUGINS, default="MultiProc", help="Nipype execution plugin")
    _add(
        perf,
        "--plugin-args",
        type=read_plugin_args,
        default={},
        metavar="YAML",
        help="plugin arguments: a YAML file or an inline mapping",
    )
    _add(perf, "--stop-on-first-crash", action="store_true", help="stop at the first failure")

    other = parser.add_argument_group("Other")
    _add(other, "--reports-only", action="store_true", help="only regenerate reports from existing outputs")
    _add(
        other,
        "--resource-monitor",
        action="store_true",
        help="record each node's run time and peak memory (Nipype resource monitor; in the node results)",
    )
    _add(
        other, "--config-file", type=Path, metavar="TOML", help="options from a TOML file (command line wins)"
    )
    other.add_argument(
        "-v", "--verbose", dest="verbosity", action="count", default=0, help="more log output (-v, -vv)"
    )
    return parser
