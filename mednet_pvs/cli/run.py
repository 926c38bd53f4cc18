"""``mednet-pvs bids_dir output_dir {participant,group}``: the BIDS App entry point.

Exit codes: 0 everything done, 1 at least one participant failed (the others completed),
2 usage error (bad options, unknown labels, no model).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from mednet_pvs.cli.parser import build_parser
from mednet_pvs.config import Config
from mednet_pvs.errors import MednetPVSError, UsageError
from mednet_pvs.utils.environment import ensure_matplotlib_config_dir
from mednet_pvs.utils.resources import available_memory_gb, usable_cpus

__all__ = ["main"]

LOGGER = logging.getLogger("mednet_pvs")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_WORK_MARKER = ".mednet-pvs-work"
_VALIDATORS = ("bids-validator-deno", "bids-validator")


def setup_logging(verbosity: int) -> None:
    """Console logging: INFO by default, DEBUG with -v; -vv also shows Nipype's details."""
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    logging.getLogger("nipype").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    for noisy in ("bids", "bidsschematools", "matplotlib", "PIL", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config_file:
        try:
            defaults = Config.read_toml(args.config_file)
        except UsageError as exc:
            parser.error(str(exc))
        parser.set_defaults(**{k: v for k, v in defaults.items() if k not in ("run_id",)})
        args = parser.parse_args(argv)
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = _parse(argv)
    setup_logging(args.verbosity)
    ensure_matplotlib_config_dir()  # before any worker starts: HOME may be read-only
    options = {k: v for k, v in vars(args).items() if k != "config_file"}
    try:
        config = Config(**options)
        config.resolve_paths()
        if config.analysis_level == "group":
            return run_group(config)
        return run_participant_level(config)
    except UsageError as exc:
        parser.error(str(exc))
    except MednetPVSError as exc:
        LOGGER.error("%s", exc)
        return EXIT_FAILED
    return EXIT_OK


# ---------------------------------------------------------------------------------------- checks
def run_bids_validator(bids_dir: Path) -> None:
    """Run the first BIDS validator found on PATH; errors stop the run (``--skip-bids-validation``)."""
    executable = next((shutil.which(name) for name in _VALIDATORS if shutil.which(name)), None)
    if executable is None:
        LOGGER.warning("no BIDS validator installed (%s); validation skipped", " or ".join(_VALIDATORS))
        return
    name = Path(executable).name
    env = {**os.environ, "DENO_NO_UPDATE_CHECK": "1", "NO_COLOR": "1"}
    started = time.perf_counter()
    result = subprocess.run([executable, str(bids_dir)], capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        errors = [line.strip() for line in result.stdout.splitlines() if "[ERROR]" in line]
        detail = "\n  ".join(errors[:10]) or result.stdout[-2000:] or result.stderr[-2000:]
        raise MednetPVSError(
            f"BIDS validation of {bids_dir} with {name} failed:\n  {detail}\n"
            "Fix the dataset, or use --skip-bids-validation to run anyway."
        )
    LOGGER.info("BIDS validation with %s passed (%.1f s)", name, elapsed)


def _prepare_work_dir(config: Config) -> None:
    work = config.work_dir
    assert work is not None
    if config.clean_workdir and work.exists():
        if not (work / _WORK_MARKER).exists():
            raise UsageError(
                f"--clean-workdir: {work} is not a mednet-pvs work folder; refusing to delete it"
            )
        LOGGER.info("removing work folder %s (--clean-workdir)", work)
        shutil.rmtree(work)
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / _WORK_MARKER).touch()
    except OSError as exc:
        raise UsageError(f"work dir {work} cannot be created or written ({exc.strerror})") from exc


def _check_output_dir(config: Config) -> None:
    try:
        config.output_dir.mkdir(parents=True, exist_ok=True)
        probe = config.output_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output_dir {config.output_dir} cannot be written ({exc.strerror})") from exc


# ---------------------------------------------------------------------------------- participant
def run_participant_level(config: Config) -> int:
    from mednet_pvs.pipeline import run_participants

    if config.omp_nthreads and config.nprocs and config.omp_nthreads > config.nprocs:
        raise UsageError(f"--omp-nthreads {config.omp_nthreads} exceeds --nprocs {config.nprocs}")
    config.nprocs = config.nprocs or usable_cpus()
    config.omp_nthreads = config.omp_nthreads or min(config.nprocs, 8)
    config.mem_gb = config.mem_gb or available_memory_gb()
    # ITK reads its thread count once, when antspyx is first imported (in the workers)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(config.omp_nthreads))
    _check_output_dir(config)
    if config.reports_only:
        return run_participants(config, reports_only=True)
    _prepare_work_dir(config)
    if not config.skip_bids_validation:
        run_bids_validator(config.bids_dir)
    else:
        LOGGER.info("BIDS validation skipped (--skip-bids-validation)")
    return run_participants(config)


def run_group(config: Config) -> int:
    from mednet_pvs.reports.group import write_group_outputs

    participants = config.bids_dir / "participants.tsv"
    written = write_group_outputs(config.output_dir, participants if participants.is_file() else None)
    for path in written:
        LOGGER.info("wrote %s", path)
    return EXIT_OK
