"""Participant-level orchestration: select images, check them, build and run the workflow.

Failures are isolated per participant: a bad image or a crashed node is reported (with a readable
file under ``sub-<label>/log/<run-id>/``) and the other participants go on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mednet_pvs.bids import (
    ImageRecord,
    build_layout,
    collect_images,
    select_participants,
    validate_label,
    write_derivative_dataset_files,
)
from mednet_pvs.config import Config
from mednet_pvs.errors import InputImageError, ModelError, UsageError
from mednet_pvs.regions.lut import write_lookup_table
from mednet_pvs.utils.atomic import remove_stale_temporaries, write_text

__all__ = ["RunSummary", "run_participants"]

LOGGER = logging.getLogger(__name__)
_NOT_RUN = "not run: --stop-on-first-crash stopped the run at the first failure"


@dataclass
class RunSummary:
    """What happened to each participant."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def log(self) -> None:
        LOGGER.info(
            "participants: %d completed, %d failed, %d skipped",
            len(self.done),
            len(self.failed),
            len(self.skipped),
        )
        for subject in self.done:
            LOGGER.info("  sub-%s: completed", subject)
        for subject, reasons in self.failed.items():
            LOGGER.error("  sub-%s: FAILED: %s", subject, " | ".join(reasons))
        for subject, reason in self.skipped.items():
            LOGGER.warning("  sub-%s: skipped: %s", subject, reason)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or not (self.done or self.skipped) else 0


def _log_dir(config: Config, subject: str) -> Path:
    from mednet_pvs.workflows.base import subject_log_dir

    return subject_log_dir(config, subject)


def _record_failure(config: Config, summary: RunSummary, subject: str, reason: str, name: str) -> None:
    summary.failed.setdefault(subject, []).append(reason)
    write_text(_log_dir(config, subject) / f"error-{name}.txt", reason + "\n")


def _check_sessions(layout: object, subjects: list[str], sessions: list[str]) -> None:
    if not sessions:
        return
    labels = [validate_label(s, "session") for s in sessions]
    available = set(layout.get_sessions(subject=subjects))  # type: ignore[attr-defined]
    unknown = [s for s in labels if s not in available]
    if unknown:
        raise UsageError(
            f"session label(s) not found for the selected participants: {', '.join(unknown)} "
            f"(available: {', '.join(sorted(available)) or 'none'})"
        )


def _resolve_model(config: Config) -> tuple[Path | None, bool, list[str]]:
    """(model directory, whether it runs on a GPU, the contrasts it reads, inverted ones included)."""
    if config.method != "mednext":
        return None, False, []
    from mednet_pvs.inference.engine import resolve_device
    from mednet_pvs.models.registry import resolve_model

    try:
        model = resolve_model(config.model)
        device = resolve_device(config.device)
        if config.tta:
            model.card.tta_mirror_axes(config.tta_mirroring)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc
    model.card.verify(model.path, folds=config.folds or None)
    LOGGER.info(
        "model %s %s from %s (%s); device %s",
        model.card.name,
        model.card.version,
        model.path,
        model.origin,
        device,
    )
    if model.card.inverted_contrasts:
        LOGGER.info(
            "the model reads %s images with inverted intensities", "/".join(model.card.inverted_contrasts)
        )
    return model.path, device.type == "cuda", [*model.card.contrasts, *model.card.inverted_contrasts]


def _preflight(
    config: Config, summary: RunSummary, records: list[ImageRecord], contrasts: list[str]
) -> list[ImageRecord]:
    """Keep the images that load and make sense; record the others as failures."""
    from mednet_pvs.preproc.conform import load_anatomical
    from mednet_pvs.preproc.contrast import warn_on_contrast_mismatch

    usable = []
    for record in records:
        try:
            img = load_anatomical(record.path)
        except InputImageError as exc:
            _record_failure(config, summary, record.subject, str(exc), record.key)
            continue
        warn_on_contrast_mismatch(img, record.contrast, record.path)
        if contrasts and record.contrast not in contrasts:
            LOGGER.warning(
                "%s: the model reads %s, not %s; results may be poor",
                record.path,
                "/".join(contrasts),
                record.contrast,
            )
        usable.append(record)
    return usable


def _nipype_setup(config: Config) -> None:
    from nipype import config as nipype_config
    from nipype import logging as nipype_logging

    log_dir = config.output_dir / "logs" / config.run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    nipype_config.update_config({
        "logging": {"log_directory": str(log_dir), "log_to_file": True},
        "execution": {
            "crashfile_format": "txt",
            "stop_on_first_crash": config.stop_on_first_crash,
            "remove_unnecessary_outputs": False,
            "check_version": False,
            "parameterize_dirs": False,
            "poll_sleep_duration": 0.2,
        },
        "monitoring": {"enabled": config.resource_monitor, "sample_frequency": "0.5"},
    })  # fmt: skip
    if config.resource_monitor:
        nipype_config.enable_resource_monitor()
    nipype_logging.update_logging(nipype_config)
    # Nipype's node messages go to logs/<run-id>/pypeline.log; the console shows them with -v.
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils", "nipype.filemanip"):
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
        logger.propagate = config.verbosity >= 1


def _plugin_args(config: Config, use_gpu: bool = False) -> dict:
    """Nipype plugin arguments: ``--plugin-args`` win over the defaults from --nprocs and --mem."""
    args = dict(config.plugin_args)
    if config.nipype_plugin == "MultiProc":
        args.setdefault("n_procs", config.nprocs)
        args.setdefault("memory_gb", config.mem_gb)
        args.setdefault("raise_insufficient", False)
        # forking a process that already runs threads (pybids, torch) can deadlock the workers;
        # fMRIPrep uses a fork server for the same reason
        args.setdefault("mp_context", "forkserver")
        if use_gpu:
            # every segmentation node uses the same device (--device), so one at a time by default;
            # nipype would allow as many as nvidia-smi lists, ignoring CUDA_VISIBLE_DEVICES
            args.setdefault("n_gpu_procs", 1)
    return args


def _crash_files(config: Config, subject: str) -> list[Path]:
    return sorted(_log_dir(config, subject).glob("crash-*"))


def run_participants(config: Config, reports_only: bool = False) -> int:
    """Process (or, with ``reports_only``, re-report) the selected participants; return the exit code."""
    layout = build_layout(config.bids_dir, config.bids_database_dir)
    subjects = select_participants(layout, config.participant_label)
    _check_sessions(layout, subjects, config.session_label)
    if reports_only:
        return _reports_only(config, subjects)

    model_dir, use_gpu, contrasts = _resolve_model(config)
    # temporaries of killed runs: outputs are renamed into place whole, so only these can be left over
    remove_stale_temporaries(config.output_dir, recursive=False)
    for subject in subjects:
        remove_stale_temporaries(config.output_dir / f"sub-{subject}")
    summary = RunSummary()
    images: dict[str, list[ImageRecord]] = {}
    for subject in subjects:
        records = collect_images(layout, subject, config.session_label, config.contrast, config.bids_filters)
        if not records:
            wanted = "T2w or T1w" if config.contrast == "auto" else config.contrast
            summary.skipped[subject] = f"no {wanted} image found"
            continue
        usable = _preflight(config, summary, records, contrasts)
        if usable:
            images[subject] = usable
        if config.stop_on_first_crash and summary.failed:
            break
    if config.stop_on_first_crash and summary.failed:
        images.clear()
        summary.skipped.update({s: _NOT_RUN for s in subjects if s not in summary.failed | summary.skipped})

    write_derivative_dataset_files(config.output_dir, config.bids_dir)
    write_lookup_table(config.output_dir)
    for subject in images:
        write_text(_log_dir(config, subject) / "mednet-pvs.toml", config.to_toml())

    if images:
        _run_workflow(config, images, model_dir, use_gpu, summary)
    summary.log()
    return summary.exit_code


def _run_workflow(
    config: Config,
    images: dict[str, list[ImageRecord]],
    model_dir: Path | None,
    use_gpu: bool,
    summary: RunSummary,
) -> None:
    from mednet_pvs.workflows.base import init_mednet_pvs_wf

    _nipype_setup(config)
    workflow = init_mednet_pvs_wf(config, images, model_dir, use_gpu)
    n_images = sum(len(v) for v in images.values())
    LOGGER.info(
        "running %d image(s) of %d participant(s) with %s; work dir %s",
        n_images,
        len(images),
        config.nipype_plugin,
        config.work_dir,
    )
    for subject in images:  # the report always runs: a result left from an earlier run means nothing
        _report_result(workflow, subject).unlink(missing_ok=True)
    try:
        # Nipype drops helper files (resource-monitor samples) in the current folder: use the work dir
        with _working_directory(config.work_dir):
            workflow.run(plugin=config.nipype_plugin, plugin_args=_plugin_args(config, use_gpu))
    except Exception as exc:  # nipype raises RuntimeError when any node crashed
        LOGGER.debug("workflow ended with errors: %s", exc)
        if not any(_crash_files(config, s) for s in images):
            raise
    for subject in images:
        crashes = _crash_files(config, subject)
        if crashes:
            reasons = [f"{_crash_reason(c)} (see {c})" for c in crashes]
            summary.failed.setdefault(subject, []).extend(reasons)
        elif not _report_result(workflow, subject).is_file():  # --stop-on-first-crash ended the run
            summary.skipped[subject] = _NOT_RUN
        elif subject not in summary.failed:
            summary.done.append(subject)


def _report_result(workflow: object, subject: str) -> Path:
    """The Nipype result file of the participant's last node (its report) in the work dir."""
    node = workflow.get_node(f"sub_{subject}_wf.report")  # type: ignore[attr-defined]
    folder = Path(workflow.base_dir, workflow.name, *node.fullname.split("."))  # type: ignore[attr-defined]
    return folder / f"result_{node.name}.pklz"


@contextlib.contextmanager
def _working_directory(path: Path | None) -> Iterator[None]:
    previous = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _crash_reason(crash_file: Path) -> str:
    """The last line of the traceback in a Nipype crash file (the error message)."""
    try:
        lines = [line.strip() for line in crash_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "crashed"
    errors = [line for line in lines if "Error:" in line or "Exception:" in line]
    return errors[-1] if errors else (lines[-1] if lines else "crashed")


def _reports_only(config: Config, subjects: list[str]) -> int:
    from mednet_pvs.reports.subject import write_subject_report

    summary = RunSummary()
    for subject in subjects:
        try:
            path = write_subject_report(config.output_dir, subject)
        except Exception as exc:
            summary.failed.setdefault(subject, []).append(f"report failed: {exc}")
            LOGGER.debug("%s", traceback.format_exc())
            continue
        LOGGER.info("wrote %s", path)
        summary.done.append(subject)
    summary.log()
    return summary.exit_code
