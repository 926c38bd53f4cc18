"""A whole training run: data, splits, folds, export to a model directory, validation and threshold.

Work folder (``--work-dir``, default ``<model>.work``): ``train_config.json``, ``splits.json``,
``generated/`` (phantoms), ``preprocessed/<key>/`` (cases in network space), ``fold_<k>/``
(checkpoints, ``progress.png``) and ``training_curves.png``. The model directory holds only what
DESIGN.md prescribes (``model.json`` and ``fold_<k>.safetensors``).

After training, every exported fold is validated through the inference engine itself
(:class:`mednet_pvs.inference.Segmenter` on the written model directory, on the full conformed
validation images, at the saved precision), so the recorded metrics are what users get. The
probability threshold with the best mean validation Dice or cluster F1 (pooled over folds) is
written to ``model.json``.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednet_pvs import __version__
from mednet_pvs.errors import ModelError, UsageError
from mednet_pvs.inference.engine import InferenceSettings, Segmenter, resolve_device
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.mednext import mednext_architecture
from mednet_pvs.models.networks import build_network
from mednet_pvs.models.store import write_model_dir
from mednet_pvs.train.checkpoint import checkpoint_json, load_checkpoint
from mednet_pvs.train.config import TrainConfig
from mednet_pvs.train.curves import plot_history
from mednet_pvs.train.data import (
    SampleGenerator,
    SampleStore,
    TrainingCase,
    find_labelled_images,
    generated_cases,
)
from mednet_pvs.train.prepare import Preprocessing, prepare_cached
from mednet_pvs.train.splits import SPLITS_NAME, load_or_create_splits
from mednet_pvs.train.thresholds import (
    DEFAULT_THRESHOLDS,
    ThresholdScores,
    choose_threshold,
    threshold_scores,
)
from mednet_pvs.train.trainer import Budget, FoldOutcome, FoldSetup, train_fold
from mednet_pvs.train.transfer import load_source_weights, upkern_architecture, upkern_state_dict
from mednet_pvs.utils.atomic import write_json

__all__ = [
    "CONFIG_NAME",
    "StartingPoint",
    "TrainingResult",
    "collect_cases",
    "initial_weights",
    "run_training",
    "starting_point",
]

LOGGER = logging.getLogger(__name__)

CONFIG_NAME = "train_config.json"
LABELS = {"0": "background", "1": "PVS"}


@dataclass
class TrainingResult:
    """What a run produced."""

    model_dir: Path | None
    complete: bool  # every requested fold trained to the last epoch
    outcomes: dict[int, FoldOutcome]
    threshold: float | None


# ------------------------------------------------------------------------------------------ setup
def _configure_torch(config: TrainConfig) -> torch.device:
    if config.threads:
        torch.set_num_threads(config.threads)
    # Adam's second moments decay into subnormal floats; on x86 CPUs that made its sqrt ~9x slower here
    torch.set_flush_denormal(True)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    try:
        return resolve_device(config.device)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc


def _check_work_dir(config: TrainConfig) -> None:
    """Refuse to mix runs: an existing run needs --resume, and a resume may not change what is trained."""
    assert config.work_dir is not None
    saved_path = config.work_dir / CONFIG_NAME
    if config.output_dir.exists() and not (config.resume or config.overwrite):
        raise UsageError(
            f"{config.output_dir} already exists; use --overwrite, --resume, or another output folder"
        )
    if not saved_path.is_file():
        if config.resume:
            LOGGER.info("--resume: nothing to resume in %s; starting a new run", config.work_dir)
        return
    if not config.resume:
        raise UsageError(
            f"{config.work_dir} holds a training run; add --resume to continue it, "
            "or choose another --work-dir"
        )
    conflicts = config.resume_conflicts(json.loads(saved_path.read_text(encoding="utf-8")))
    if conflicts:
        raise UsageError(f"--resume with different settings than {saved_path}: {', '.join(conflicts)}")


def collect_cases(config: TrainConfig) -> list[TrainingCase]:
    """Labelled BIDS images and/or generated phantom cases, in a stable order.

    With ``--train-inverted`` the images of the inverted contrasts follow, as cases read negated.
    """
    cases: list[TrainingCase] = []
    for contrasts, inverted in ((config.contrasts, False), (config.inverted_contrasts, True)):
        if inverted and not config.train_inverted:
            continue
        found: list[TrainingCase] = []
        if config.bids_dir is not None:
            assert config.labels_dir is not None
            found += find_labelled_images(
                config.bids_dir,
                config.labels_dir,
                contrasts,
                config.label_pattern,
                config.participants or None,
            )
        if config.synthetic > 0:
            from mednet_pvs.train.synthetic import phantom_seeds

            found += generated_cases(phantom_seeds(config.synthetic, config.synthetic_seed), contrasts)
        cases += [case.read_inverted() for case in found] if inverted else found
    duplicates = sorted(i for i, n in Counter(case.case_id for case in cases).items() if n > 1)
    if duplicates:
        raise UsageError(f"case names are not unique: {duplicates[:5]}")
    return cases


@dataclass
class StartingPoint:
    """Architecture, preprocessing and the source of the starting weights of a run."""

    architecture: dict[str, Any]
    axes: list[int]
    spacing: list[float] | None
    use_mask: bool
    method: str
    source: dict[str, Any] | None


def starting_point(config: TrainConfig) -> StartingPoint:
    """New MedNeXt, or the architecture, axes, spacing and normalisation of the UpKern/fine-tuning source."""
    source_name = config.upkern_from or config.finetune_from
    if source_name is None:
        arch = mednext_architecture(
            config.size, config.kernel_size, config.init_filters, deep_supervision=config.deep_supervision
        )
        return StartingPoint(arch, [0, 1, 2], config.spacing, config.use_mask_for_norm, "random", None)
    from mednet_pvs.models.registry import resolve_model

    try:
        resolved = resolve_model(source_name)
        arch = dict(resolved.card.architecture)
        if config.upkern_from:
            arch = upkern_architecture(arch, config.kernel_size)
    except ModelError as exc:
        raise UsageError(str(exc)) from exc
    LOGGER.info(
        "architecture, axes%s from %s (%s)",
        "" if config.spacing else ", spacing",
        resolved.card.name,
        resolved.path,
    )
    source = {
        "name": resolved.card.name,
        "version": resolved.card.version,
        "path": str(resolved.path),
        "files": resolved.card.files,
    }
    return StartingPoint(
        arch,
        list(resolved.card.axes),
        config.spacing or list(resolved.card.spacing),
        bool(resolved.card.normalization.get("use_mask", True)),
        "upkern" if config.upkern_from else "finetune",
        source,
    )


def initial_weights(start: StartingPoint, fold: int) -> dict[str, torch.Tensor] | None:
    """Fold ``fold``'s starting weights: None (random), UpKern-resampled or the source's own."""
    if start.source is None:
        return None
    _, state, _ = load_source_weights(start.source["path"], fold)
    if start.method == "upkern":
        return upkern_state_dict(state, build_network(start.architecture))
    return state


def _median_spacing(cases: Sequence[TrainingCase], store: SampleStore, axes: Sequence[int]) -> list[float]:
    spacings = np.array([store.spacing(case) for case in cases])[:, list(axes)]
    return [round(float(v), 4) for v in np.median(spacings, axis=0)]


# ------------------------------------------------------------------------------------------ export
def _export_states(
    config: TrainConfig, folds: Sequence[int]
) -> dict[int, tuple[dict[str, torch.Tensor], int]]:
    """(weights, epoch) per fold with a checkpoint; with ``--export best`` the best epoch if there is one."""
    assert config.work_dir is not None
    states = {}
    for fold in folds:
        folder = config.work_dir / f"fold_{fold}"
        tags = ["best", "latest"] if config.export == "best" else ["latest"]
        path = next(
            (checkpoint_json(folder, tag) for tag in tags if checkpoint_json(folder, tag).is_file()), None
        )
        if path is None:
            LOGGER.warning("fold %d has no completed epoch; it is not exported", fold)
            continue
        checkpoint = load_checkpoint(path)
        states[fold] = (checkpoint.model, checkpoint.epoch)
    return states


def _validate(
    model_dir: Path,
    card: ModelCard,
    fold: int,
    cases: Sequence[TrainingCase],
    store: SampleStore,
    config: TrainConfig,
) -> dict[str, ThresholdScores]:
    """Threshold scores of each validation case through the engine (full image, saved weights)."""
    from tqdm.auto import tqdm

    settings = InferenceSettings(
        device=config.device, tta=config.val_tta, folds=[fold], threads=config.threads, progress=False
    )
    segmenter = Segmenter(model_dir, card, settings)
    scores = {}
    for case in tqdm(cases, desc=f"validating fold {fold}", unit="case", disable=not config.progress):
        sample = store.load(case)
        # a case read inverted is loaded negated already: the engine must not negate it again
        contrast = None if case.inverted else case.contrast
        probability = segmenter.foreground_probability(sample.image, sample.spacing, contrast)
        scores[case.case_id] = threshold_scores(
            probability,
            sample.label,
            DEFAULT_THRESHOLDS,
            config.min_cluster_size,
            float(np.prod(sample.spacing)),
        )
    return scores


def _tune_threshold(
    per_fold: Mapping[int, Mapping[str, ThresholdScores]], card: ModelCard, config: TrainConfig
) -> tuple[float, dict[str, Any], dict[str, Any] | None]:
    """(threshold, validation metrics at it, how it was chosen) from the scores of every fold's cases."""
    pooled = [s for scores in per_fold.values() for s in scores.values()]
    threshold, selection = 0.5, None
    if config.threshold_criterion != "none":
        threshold, means = choose_threshold(pooled, config.threshold_criterion)
        selection = {
            "criterion": f"mean {config.threshold_criterion} over the validation cases of all folds",
            "thresholds": list(DEFAULT_THRESHOLDS),
            "means": [None if np.isnan(m) else round(float(m), 4) for m in means],
        }
    validation = {
        "engine": {"tta": config.val_tta, "step_size": card.step_size, "weights": config.save_dtype},
        "definitions": "voxel Dice/sensitivity/precision and 26-connected cluster detection (any-overlap "
        "rule) as mednet-pvs-eval, of the app's mask (clusters below min_cluster_size_mm3 dropped); "
        "means over the cases where each is defined",
        "min_cluster_size_mm3": config.min_cluster_size,
        "threshold": threshold,
        "folds": {str(k): _summaries(v, threshold) for k, v in per_fold.items()},
        "folds_at_0.5": {str(k): _summaries(s, 0.5, per_case=False) for k, s in per_fold.items()},
    }
    return threshold, validation, selection


def _native_validation(run: _Run, fold: int) -> list[TrainingCase]:
    """Fold ``fold``'s validation cases of the trained contrasts (those read inverted are scored apart)."""
    return [case for case in run.validation_cases(fold) if not case.inverted]


def _fold_scores(validation: Mapping[str, Any]) -> str:
    folds = validation["folds"].items()
    return "validation Dice / cluster F1 per fold: " + ", ".join(
        f"{k}: {v['dice']} / {v['cluster_f1']}" for k, v in folds
    )


def _inverted_validation_cases(run: _Run, folds: Sequence[int]) -> dict[str, dict[int, list[TrainingCase]]]:
    """contrast -> fold -> labelled images, of a contrast read inverted, of the validation subjects.

    With ``--train-inverted`` these are the inverted cases of each fold's validation split (BIDS
    images and phantoms). Otherwise only images of the BIDS dataset count (phantoms are generated
    for the trained contrasts alone). A contrast without such images keeps the main threshold.
    """
    config = run.config
    if config.train_inverted:
        split: dict[str, dict[int, list[TrainingCase]]] = {}
        for fold in folds:
            for case in (c for c in run.validation_cases(fold) if c.inverted):
                split.setdefault(case.contrast, {}).setdefault(fold, []).append(case)
        return split
    if not config.inverted_contrasts or config.bids_dir is None:
        return {}
    assert config.labels_dir is not None
    validation_subjects = {fold: {case.subject for case in run.validation_cases(fold)} for fold in folds}
    found: dict[str, dict[int, list[TrainingCase]]] = {}
    for contrast in config.inverted_contrasts:
        try:
            images = find_labelled_images(
                config.bids_dir,
                config.labels_dir,
                [contrast],
                config.label_pattern,
                config.participants or None,
            )
        except UsageError as exc:
            LOGGER.warning("%s is not validated read inverted: %s", contrast, exc)
            continue
        per_fold = {}
        for fold, subjects in validation_subjects.items():
            listed = [case for case in images if case.subject in subjects]
            if listed:
                per_fold[fold] = listed
        if per_fold:
            found[contrast] = per_fold
        else:
            LOGGER.warning(
                "%s: no labelled images of the validation subjects; it takes the main threshold", contrast
            )
    return found


def _summaries(
    scores: Mapping[str, ThresholdScores], threshold: float, per_case: bool = True
) -> dict[str, Any]:
    """Mean scores over the cases where they are defined (None when nowhere), and each case's scores."""
    values = {case: s.at(threshold) for case, s in scores.items()}
    summary: dict[str, Any] = {}
    for metric in next(iter(values.values())):
        defined = [v[metric] for v in values.values() if not np.isnan(v[metric])]
        summary[metric] = round(float(np.mean(defined)), 4) if defined else None
    summary["n_cases"] = len(values)
    if per_case:
        summary["cases"] = {
            case: {
                k: None if np.isnan(x) else round(x, 4) for k, x in v.items() if k in ("dice", "cluster_f1")
            }
            for case, v in values.items()
        }
    return summary


def _dataset_name(bids_dir: Path) -> str:
    try:
        return str(
            json.loads((bids_dir / "dataset_description.json").read_text(encoding="utf-8")).get("Name", "")
        )
    except (OSError, json.JSONDecodeError):
        return ""


@dataclass
class _Run:
    """Everything fixed before the folds train: data, splits, architecture and preprocessing."""

    config: TrainConfig
    cases: list[TrainingCase]
    start: StartingPoint
    spacing: list[float]
    splits: list[dict[str, list[str]]]
    store: SampleStore
    device: torch.device
    custom_generators: bool

    @functools.cached_property
    def _cases_by_id(self) -> dict[str, TrainingCase]:
        return {case.case_id: case for case in self.cases}

    def validation_cases(self, fold: int) -> list[TrainingCase]:
        """Fold ``fold``'s validation cases, in the order of the splits file."""
        return [self._cases_by_id[c] for c in self.splits[fold]["val"]]


def _provenance(
    run: _Run, outcomes: Mapping[int, FoldOutcome], exported: Mapping[int, int], seconds: float
) -> dict[str, Any]:
    import monai

    config, cases = run.config, run.cases
    training: dict[str, Any] = {
        "tool": "mednet-pvs-train",
        "mednet_pvs_version": __version__,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "device": str(run.device),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds_this_invocation": round(seconds, 1),
        # the epochs of every invocation (a resume that trains nothing still reports the whole run)
        "training_seconds": {str(k): round(float(sum(o.history["seconds"])), 1) for k, o in outcomes.items()},
        "contrasts": sorted({case.contrast for case in cases if not case.inverted}),
        "contrasts_trained_inverted": sorted({case.contrast for case in cases if case.inverted}),
        "n_cases": len(cases),
        "subjects": sorted({case.subject for case in cases}),
        "initialisation": {
            "method": run.start.method,
            "source": run.start.source,
            "trainable_decoder_layers": config.trainable_decoder_layers,
        },
        "epochs_completed": {str(k): o.epochs_completed for k, o in outcomes.items()},
        "exported_epoch": {str(k): e for k, e in exported.items()},
        "complete": all(o.finished for o in outcomes.values()),
        "splits": {
            "file": SPLITS_NAME,
            "grouped_by": "subject",
            "validation": {str(k): run.splits[k]["val"] for k in exported},
        },
        "config": config.to_dict(),
    }
    if config.bids_dir is not None:
        training["dataset"] = {
            "path": str(config.bids_dir),
            "name": _dataset_name(config.bids_dir),
            "labels": str(config.labels_dir),
            "label_pattern": config.label_pattern,
            "cases": [case.describe() for case in cases if case.seed is None],
        }
    if config.synthetic:
        from mednet_pvs.synth import SynthConfig

        custom = run.custom_generators
        training["synthetic"] = {
            "count": config.synthetic,
            "base_seed": config.synthetic_seed,
            "seeds": sorted({case.seed for case in cases if case.seed is not None}),
            "generator": "custom (Python API)" if custom else "mednet_pvs.synth.generate_subject",
            "settings": None if custom else SynthConfig.from_dict(config.synthetic_config).to_dict(),
        }
    return {"source": "mednet-pvs-train", "licence": config.licence, "training": training}


def _default_description(arch: Mapping[str, Any]) -> str:
    size, kernel, width = arch.get("size"), arch["kernel_size"], arch["init_filters"]
    return f"MedNeXt-{size} k{kernel} (width {width}) from mednet-pvs-train"


def _export(
    run: _Run, outcomes: Mapping[int, FoldOutcome], seconds: float
) -> tuple[Path | None, float | None]:
    """Write the model directory, validate each fold through the engine, record threshold and metrics."""
    config, cases = run.config, run.cases
    states = _export_states(config, sorted(outcomes))
    if not states:
        LOGGER.warning("no fold completed an epoch; no model written (rerun with --resume to continue)")
        return None, None
    arch = run.start.architecture
    card = ModelCard(
        name=config.model_name,
        version=config.model_version,
        architecture=arch,
        contrasts=sorted({case.contrast for case in cases if not case.inverted}, key=config.contrasts.index),
        inverted_contrasts=list(config.inverted_contrasts),
        labels=dict(LABELS),
        spacing=[float(s) for s in run.spacing],
        patch_size=list(config.patch_size),
        folds=sorted(states),
        axes=list(run.start.axes),
        normalization={"scheme": "zscore", "use_mask": run.start.use_mask},
        mirror_axes=[0, 1, 2],
        description=config.description or _default_description(arch),
        provenance=_provenance(run, outcomes, {k: e for k, (_, e) in states.items()}, seconds),
    )
    dtype = torch.float16 if config.save_dtype == "float16" else None
    write_model_dir(config.output_dir, card, [states[k][0] for k in card.folds], overwrite=True, dtype=dtype)
    LOGGER.info("wrote %s (folds %s)", config.output_dir, card.folds)

    native = {fold: _native_validation(run, fold) for fold in card.folds}
    per_fold = {
        fold: _validate(config.output_dir, card, fold, native[fold], run.store, config)
        for fold in card.folds
        if native[fold]
    }
    if not per_fold:
        return config.output_dir, None
    threshold, card.metrics["validation"], selection = _tune_threshold(per_fold, card, config)
    if selection:
        card.metrics["threshold_selection"] = selection
    card.threshold = threshold
    for contrast, fold_cases in _inverted_validation_cases(run, card.folds).items():
        scores = {
            fold: _validate(config.output_dir, card, fold, listed, run.store, config)
            for fold, listed in fold_cases.items()
        }
        own, validation, selection = _tune_threshold(scores, card, config)
        card.contrast_thresholds[contrast] = own
        card.metrics.setdefault("validation_inverted", {})[contrast] = {
            **validation,
            **({"threshold_selection": selection} if selection else {}),
        }
        LOGGER.info("%s read inverted: threshold %.2f; %s", contrast, own, _fold_scores(validation))
    card.save(config.output_dir)
    LOGGER.info("threshold %.2f; %s", threshold, _fold_scores(card.metrics["validation"]))
    return config.output_dir, threshold


# ------------------------------------------------------------------------------------------ run
def run_training(
    config: TrainConfig,
    generators: Mapping[str, SampleGenerator] | None = None,
    stop_after_epochs: int | None = None,
) -> TrainingResult:
    """Train the requested folds, export the model directory, validate it and tune its threshold.

    ``generators`` (contrast -> seed -> (image, label, spacing)) replace the phantom generator for
    ``config.synthetic`` cases. ``stop_after_epochs`` ends each fold's training in this invocation
    after that many epochs (resume later), as ``max_minutes`` does by time.
    """
    began = time.monotonic()
    deadline = None if config.max_minutes is None else began + 60.0 * config.max_minutes
    device = _configure_torch(config)
    _check_work_dir(config)
    assert config.work_dir is not None
    work = config.work_dir
    work.mkdir(parents=True, exist_ok=True)
    start = starting_point(config)

    cases = collect_cases(config)
    custom_generators = generators is not None
    if config.synthetic and generators is None:
        from mednet_pvs.train.synthetic import phantom_generators

        inverted = config.inverted_contrasts if config.train_inverted else []
        generators = phantom_generators([*config.contrasts, *inverted], config.synthetic_config)
    store = SampleStore(work / "generated", generators)
    splits = load_or_create_splits(
        work / SPLITS_NAME, {c.case_id: c.subject for c in cases}, config.folds, config.split_seed
    )
    spacing = start.spacing or _median_spacing(cases, store, start.axes)
    run = _Run(config, cases, start, list(spacing), splits, store, device, custom_generators)
    LOGGER.info(
        "%d cases (%d subjects); network spacing %s mm", len(cases), len({c.subject for c in cases}), spacing
    )
    prepared = prepare_cached(
        cases,
        store.load,
        Preprocessing(tuple(start.axes), tuple(spacing), start.use_mask),
        work / "preprocessed",
        config.progress,  # type: ignore[arg-type]
    )
    write_json(work / CONFIG_NAME, config.to_dict())

    outcomes: dict[int, FoldOutcome] = {}
    budget = Budget(max_epochs=stop_after_epochs)
    for position, fold in enumerate(config.fold_ids):
        if deadline is not None:  # share what is left equally among the folds still to train
            budget.deadline = time.monotonic() + (deadline - time.monotonic()) / (
                len(config.fold_ids) - position
            )
        setup = FoldSetup(
            fold,
            start.architecture,
            [prepared[c] for c in splits[fold]["train"]],
            [prepared[c.case_id] for c in _native_validation(run, fold)],
            work / f"fold_{fold}",
            initial_weights(start, fold),
            config.trainable_decoder_layers,
        )
        budget.epochs_run = 0
        outcomes[fold] = train_fold(setup, config, device, budget)
    histories = {k: o.history for k, o in outcomes.items() if o.history["epoch"]}
    if histories:
        plot_history(histories, work / "training_curves.png")
    model_dir, threshold = _export(run, outcomes, time.monotonic() - began)
    complete = all(o.finished for o in outcomes.values())
    if not complete:
        LOGGER.info(
            "training is not finished (%s); continue with --resume",
            ", ".join(f"fold {k}: {o.epochs_completed}/{config.epochs} epochs" for k, o in outcomes.items()),
        )
    return TrainingResult(model_dir, complete, outcomes, threshold)
