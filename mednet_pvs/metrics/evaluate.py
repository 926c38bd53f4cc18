"""Evaluate predicted PVS masks against reference masks, per subject and per region.

Inputs are files or folders. Folders are searched for ``*_desc-pvs_mask.nii.gz``; a prediction is
paired with the reference whose BIDS entities (``desc`` aside) are all present in its name, so a
mednet-pvs derivatives folder pairs with a ``mednet-pvs-synth`` ground-truth folder. Beside each
reference mask the evaluation uses, when present, the PVS instances
(``*_desc-pvsinstances_dseg``: reference objects; otherwise 26-connected clusters), the PVS
regions (``*_seg-pvsregions_dseg``; or ``--regions``) and the distractors
(``*_desc-distractors_dseg`` with its ``desc-distractors_dseg.tsv`` look-up table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm import tqdm

from mednet_pvs.bids import parse_entities
from mednet_pvs.errors import InputImageError, MednetPVSError, UsageError
from mednet_pvs.metrics.agreement import lin_ccc, spearman
from mednet_pvs.metrics.detection import DetectionCounts, match_any_overlap, match_iou, overlaps
from mednet_pvs.metrics.voxel import hd95, voxel_counts
from mednet_pvs.regions.lut import region_by_index
from mednet_pvs.stats.clusters import label_clusters, voxel_volume
from mednet_pvs.stats.tables import WHOLE_BRAIN, region_rows

__all__ = [
    "CASE_COLUMNS",
    "DISTRACTOR_COLUMNS",
    "GROUP_COLUMNS",
    "Case",
    "EvaluationResult",
    "evaluate",
    "evaluate_case",
    "find_cases",
    "group_agreement",
    "with_pvs",
]

LOGGER = logging.getLogger(__name__)

MASK_PATTERN = "*_desc-pvs_mask.nii.gz"
_SIBLINGS = {
    "instances": "desc-pvsinstances_dseg",
    "regions": "seg-pvsregions_dseg",
    "distractors": "desc-distractors_dseg",
}
#: Largest affine difference (mm at a voxel index step) still accepted as the same grid.
_AFFINE_TOLERANCE = 1e-3

CASE_COLUMNS: dict[str, str] = {
    "participant_id": "Participant (sub-<label>) of the reference.",
    "session_id": "Session (ses-<label>) of the reference, n/a without sessions.",
    "prediction": "Predicted mask file (relative to the prediction folder).",
    "reference": "Reference mask file (relative to the reference folder).",
    "region": "Region (PVS region set of mednet_pvs.regions.lut; whole_brain = every voxel).",
    "hemisphere": "left, right or bilateral.",
    "volume_ref_mm3": "Reference PVS volume in the region (mm^3).",
    "volume_pred_mm3": "Predicted PVS volume in the region (mm^3).",
    "volume_difference_mm3": "volume_pred_mm3 - volume_ref_mm3.",
    "abs_volume_difference_mm3": "Absolute volume difference (mm^3).",
    "dice": "Voxel Dice 2TP / (2TP + FP + FN) in the region (1 when both masks are empty there).",
    "sensitivity": "Voxel sensitivity TP / (TP + FN) (n/a without reference voxels unless both are empty).",
    "precision": "Voxel precision TP / (TP + FP) (n/a without predicted voxels unless both are empty).",
    "hd95_mm": "95th-percentile symmetric Hausdorff distance between mask surfaces in mm (MONAI; 0 when both "
    "are empty, n/a when one is).",
    "n_ref": "Reference PVS in the region (26-connected clusters, or instances with --reference-objects "
    "instances; majority-region rule).",
    "n_pred": "Predicted 26-connected clusters in the region (majority-region rule).",
    "count_difference": "n_pred - n_ref.",
    "abs_count_difference": "Absolute count difference.",
    "any_detected": "Reference PVS overlapped by at least one predicted cluster.",
    "any_false_positives": "Predicted clusters overlapping no reference PVS.",
    "any_sensitivity": "any_detected / n_ref.",
    "any_precision": "(n_pred - any_false_positives) / n_pred.",
    "any_f1": "Harmonic mean of any_sensitivity and any_precision (any-overlap rule, SHiVAi/PINGU-style).",
    "iou_tp": "One-to-one pairs with IoU > 0.1 (VALDO-style matching) whose reference is in the region.",
    "iou_fp": "Predicted clusters in the region left unpaired.",
    "iou_fn": "Reference PVS in the region left unpaired.",
    "iou_f1": "2TP / (2TP + FP + FN) under one-to-one IoU > 0.1 matching.",
}
GROUP_COLUMNS: dict[str, str] = {
    "region": "Region.",
    "hemisphere": "left, right or bilateral.",
    "n_cases": "Evaluated cases.",
    "n_cases_with_pvs": "Cases with reference or predicted PVS in the region; the means below are over them "
    "(a region empty in both would score a perfect 1 and hide the others).",
    "dice_mean": "Mean voxel Dice.",
    "dice_sd": "Standard deviation of the voxel Dice.",
    "any_f1_mean": "Mean detection F1, any-overlap rule.",
    "iou_f1_mean": "Mean detection F1, one-to-one IoU > 0.1 rule.",
    "hd95_median_mm": "Median HD95 (mm) over cases where it is defined.",
    "count_spearman_rho": "Spearman correlation of predicted and reference counts across cases.",
    "count_spearman_p": "Two-sided p-value of count_spearman_rho.",
    "count_ccc": "Lin's concordance correlation coefficient of predicted and reference counts.",
    "volume_spearman_rho": "Spearman correlation of predicted and reference volumes across cases.",
    "volume_spearman_p": "Two-sided p-value of volume_spearman_rho.",
    "volume_ccc": "Lin's concordance correlation coefficient of predicted and reference volumes.",
}
DISTRACTOR_COLUMNS: dict[str, str] = {
    "participant_id": "Participant of the reference.",
    "session_id": "Session of the reference, n/a without sessions.",
    "prediction": "Predicted mask file.",
    "distractor": "Distractor class (desc-distractors_dseg.tsv name).",
    "n_objects": "26-connected objects of this class in the reference.",
    "n_objects_hit": "Objects overlapped by the prediction.",
    "predicted_voxels": "Predicted PVS voxels inside this class (false positives: PVS are never "
    "distractors).",
    "predicted_volume_mm3": "predicted_voxels in mm^3.",
    "false_positive_clusters": "Predicted clusters that overlap this class and no reference PVS.",
}


@dataclass(frozen=True)
class Case:
    """One prediction paired with its reference and the reference's companion images."""

    prediction: Path
    reference: Path
    entities: dict[str, str]
    prediction_name: str
    reference_name: str
    instances: Path | None = None
    regions: Path | None = None
    distractors: Path | None = None
    distractor_lookup: Path | None = None


@dataclass
class EvaluationResult:
    """Per case and region rows, the group agreement table and the distractor table."""

    cases: pd.DataFrame
    group: pd.DataFrame
    distractors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DISTRACTOR_COLUMNS)))


def _entities(path: Path) -> dict[str, str]:
    try:
        entities, _, _ = parse_entities(path)
    except MednetPVSError:
        return {}
    entities.pop("desc", None)
    return entities


def _masks(root: Path, what: str) -> list[Path]:
    if not root.exists():
        raise UsageError(f"{what} {root} does not exist")
    if root.is_file():
        return [root]
    found = sorted(
        p
        for p in root.rglob(MASK_PATTERN)
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not found:
        raise UsageError(f"{what} folder {root} holds no {MASK_PATTERN} file")
    return found


def _sibling(mask: Path, key: str) -> Path | None:
    path = mask.with_name(mask.name.replace("desc-pvs_mask", _SIBLINGS[key]))
    return path if path != mask and path.exists() else None


def _lookup_table(mask: Path, root: Path) -> Path | None:
    """Nearest ``desc-distractors_dseg.tsv`` from the mask's folder up to ``root`` (BIDS inheritance)."""
    folder = mask.parent
    stop = root if root.is_dir() else root.parent
    while True:
        candidate = folder / "desc-distractors_dseg.tsv"
        if candidate.exists():
            return candidate
        if folder == stop or folder == folder.parent:
            return None
        folder = folder.parent


def _best_match(target: dict[str, str], candidates: list[Path], what: str, name: Path) -> Path | None:
    """The candidate whose entities are all in ``target`` (the most specific one)."""
    matching = [c for c in candidates if _entities(c) and _entities(c).items() <= target.items()]
    if not matching:
        return None
    best = max(len(_entities(c)) for c in matching)
    top = [c for c in matching if len(_entities(c)) == best]
    if len(top) > 1:
        raise UsageError(f"{name}: several {what} files match it: {', '.join(str(t) for t in top)}")
    return top[0]


def _relative(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()


def find_cases(
    prediction: str | Path,
    reference: str | Path,
    regions: str | Path | None = None,
    allow_missing: bool = False,
) -> list[Case]:
    """Pair predicted masks with reference masks (see the module docstring for the rules).

    Raises :class:`UsageError` naming the files when a prediction has no reference, a reference has
    no prediction (unless ``allow_missing``: such references are skipped with a warning), or the
    pairing is ambiguous.
    """
    prediction, reference = Path(prediction), Path(reference)
    predictions = _masks(prediction, "prediction")
    references = _masks(reference, "reference")
    region_files = None if regions is None else _region_files(Path(regions))
    pairs: list[tuple[Path, Path]] = []
    if len(predictions) == 1 and len(references) == 1 and (prediction.is_file() or reference.is_file()):
        pairs.append((predictions[0], references[0]))
    else:
        unmatched = []
        for pred in predictions:
            ref = _best_match(_entities(pred), references, "reference", pred)
            if ref is None:
                unmatched.append(pred)
            else:
                pairs.append((pred, ref))
        if unmatched:
            message = f"no reference mask in {reference} matches {', '.join(str(u) for u in unmatched)}"
            if not allow_missing:
                raise UsageError(message + " (use --allow-missing to skip them)")
            LOGGER.warning("%s; skipped", message)
    missing = sorted(set(references) - {ref for _, ref in pairs})
    if missing:
        message = f"no prediction for reference masks {', '.join(str(m) for m in missing)}"
        if not allow_missing:
            raise UsageError(message + " (use --allow-missing to evaluate the others only)")
        LOGGER.warning("%s; skipped", message)
    cases = []
    for pred, ref in pairs:
        entities = _entities(ref) or {"sub": ref.name.split("_")[0].removeprefix("sub-")}
        region_file = _sibling(ref, "regions")
        if region_files is not None:
            region_file = (
                region_files[0]
                if len(region_files) == 1
                else _best_match(entities, region_files, "region", ref)
            )
            if region_file is None:
                raise UsageError(f"{ref}: no file in --regions {regions} matches it")
        distractors = _sibling(ref, "distractors")
        cases.append(
            Case(
                prediction=pred,
                reference=ref,
                entities=entities,
                prediction_name=_relative(pred, prediction),
                reference_name=_relative(ref, reference),
                instances=_sibling(ref, "instances"),
                regions=region_file,
                distractors=distractors,
                distractor_lookup=_lookup_table(ref, reference) if distractors else None,
            )
        )
    return cases


def _region_files(regions: Path) -> list[Path]:
    if not regions.exists():
        raise UsageError(f"--regions {regions} does not exist")
    if regions.is_file():
        return [regions]
    found = sorted(regions.rglob("*_dseg.nii.gz"))
    if not found:
        raise UsageError(f"--regions folder {regions} holds no *_dseg.nii.gz file")
    return found


def _load(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    if not path.exists():
        raise InputImageError(path, "file does not exist")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for foreign or truncated files
        raise InputImageError(path, f"cannot be read as a NIfTI image ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputImageError(path, f"is not a 3-D image (shape {data.shape})")
    return data, img


def _check_grid(
    path: Path, img: nib.Nifti1Image, shape: tuple[int, ...], ref_path: Path, ref: nib.Nifti1Image
):
    if tuple(shape) != tuple(ref.shape[:3]):
        raise InputImageError(
            path, f"grid differs from {ref_path}: shape {tuple(shape)} vs {tuple(ref.shape[:3])}; "
            "both must be on the same voxel grid (resample the prediction to the reference grid)"
        )  # fmt: skip
    difference = np.abs(img.affine - ref.affine).max()
    if difference > _AFFINE_TOLERANCE:
        raise InputImageError(
            path, f"grid differs from {ref_path}: same shape {tuple(shape)} but the voxel-to-world affines "
            f"differ by up to {difference:.4g} (prediction {np.round(img.affine, 4).tolist()}, reference "
            f"{np.round(ref.affine, 4).tolist()})"
        )  # fmt: skip


def _binary(data: np.ndarray, path: Path) -> np.ndarray:
    values = np.unique(data) if data.dtype.kind == "f" else None
    if values is not None and not np.isin(values, (0, 1)).all():
        LOGGER.warning("%s holds non-binary values; voxels >= 0.5 are taken as PVS", path)
        return data >= 0.5
    return data > 0


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel object ids to 1..n (0 stays background)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(np.int32)
    return out if ids[0] == 0 else out + 1


def _majority_region(objects: np.ndarray, n_objects: int, region_map: np.ndarray) -> np.ndarray:
    """Region label holding most voxels of each object (index 0 unused; ties: lowest label; 0 = none)."""
    inside = objects > 0
    n_labels = int(region_map.max(initial=0)) + 1
    votes = np.bincount(
        objects[inside].astype(np.int64) * n_labels + region_map[inside].astype(np.int64),
        minlength=(n_objects + 1) * n_labels,
    ).reshape(n_objects + 1, n_labels)
    known = np.array([label > 0 and region_by_index(label) is not None for label in range(n_labels)])
    votes[:, ~known] = 0
    return np.where(votes.max(1) > 0, votes.argmax(1), 0)


def evaluate_case(case: Case, use_instances: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Region rows (:data:`CASE_COLUMNS`) and distractor rows (:data:`DISTRACTOR_COLUMNS`) of one case.

    Reference objects are the 26-connected clusters of the reference mask (the same definition as
    for predictions, so a prediction equal to the reference scores 1), or with ``use_instances``
    the reference's PVS instances (touching PVS stay separate objects).
    """
    ref_data, ref_img = _load(case.reference)
    pred_data, pred_img = _load(case.prediction)
    _check_grid(case.prediction, pred_img, pred_data.shape, case.reference, ref_img)
    reference = _binary(ref_data, case.reference)
    prediction = _binary(pred_data, case.prediction)
    spacing = np.sqrt((ref_img.affine[:3, :3] ** 2).sum(0))
    voxel_mm3 = voxel_volume(ref_img.affine)

    def companion(path: Path | None) -> np.ndarray | None:
        if path is None:
            return None
        data, img = _load(path)
        _check_grid(path, img, data.shape, case.reference, ref_img)
        return np.asarray(data).astype(np.int64)

    instances = companion(case.instances) if use_instances else None
    if use_instances and instances is None:
        raise InputImageError(
            case.reference, "has no *_desc-pvsinstances_dseg.nii.gz beside it (needed for instances)"
        )
    region_map = companion(case.regions)
    distractors = companion(case.distractors)
    ref_objects = (
        _consecutive(np.where(reference, instances, 0))
        if instances is not None
        else label_clusters(reference)[0]
    )
    pred_objects, n_pred = label_clusters(prediction)
    pairs = overlaps(ref_objects, pred_objects)
    ref_hit, pred_hit = match_any_overlap(pairs)
    ref_match, pred_match = match_iou(pairs)
    if region_map is not None:
        ref_region = _majority_region(ref_objects, pairs.n_ref, region_map)
        pred_region = _majority_region(pred_objects, n_pred, region_map)

    identity = {
        "participant_id": f"sub-{case.entities['sub']}" if "sub" in case.entities else case.reference_name,
        "session_id": f"ses-{case.entities['ses']}" if "ses" in case.entities else "n/a",
        "prediction": case.prediction_name,
        "reference": case.reference_name,
    }
    rows = []
    for row in region_rows():
        if row.region == WHOLE_BRAIN:
            in_region = np.ones(reference.shape, bool)
            refs, preds = np.arange(1, pairs.n_ref + 1), np.arange(1, n_pred + 1)
        elif region_map is None:
            continue
        else:
            in_region = np.isin(region_map, row.indices)
            refs = np.nonzero(np.isin(ref_region, row.indices))[0]
            preds = np.nonzero(np.isin(pred_region, row.indices))[0]
        counts = voxel_counts(prediction & in_region, reference & in_region)
        any_rule = DetectionCounts(
            len(refs), len(preds), int(ref_hit[refs].sum()), int(pred_hit[preds].sum())
        )
        iou_rule = DetectionCounts(
            len(refs), len(preds), int((ref_match[refs] > 0).sum()), int((pred_match[preds] > 0).sum())
        )
        volume_ref = (counts.tp + counts.fn) * voxel_mm3
        volume_pred = (counts.tp + counts.fp) * voxel_mm3
        rows.append(
            {
                **identity,
                "region": row.region,
                "hemisphere": row.hemisphere,
                "volume_ref_mm3": volume_ref,
                "volume_pred_mm3": volume_pred,
                "volume_difference_mm3": volume_pred - volume_ref,
                "abs_volume_difference_mm3": abs(volume_pred - volume_ref),
                "dice": counts.dice,
                "sensitivity": counts.sensitivity,
                "precision": counts.precision,
                "hd95_mm": hd95(prediction & in_region, reference & in_region, spacing),
                "n_ref": len(refs),
                "n_pred": len(preds),
                "count_difference": len(preds) - len(refs),
                "abs_count_difference": abs(len(preds) - len(refs)),
                "any_detected": any_rule.ref_detected,
                "any_false_positives": len(preds) - any_rule.pred_true,
                "any_sensitivity": any_rule.sensitivity,
                "any_precision": any_rule.precision,
                "any_f1": any_rule.f1,
                "iou_tp": iou_rule.ref_detected,
                "iou_fp": len(preds) - iou_rule.pred_true,
                "iou_fn": len(refs) - iou_rule.ref_detected,
                "iou_f1": iou_rule.f1,
            }
        )
    distractor_rows = (
        []
        if distractors is None
        else _distractor_rows(
            identity, distractors, case.distractor_lookup, prediction, pred_objects, pred_hit, voxel_mm3
        )
    )
    return (
        pd.DataFrame(rows, columns=list(CASE_COLUMNS)),
        pd.DataFrame(distractor_rows, columns=list(DISTRACTOR_COLUMNS)),
    )


def _distractor_rows(
    identity: dict[str, str],
    distractors: np.ndarray,
    lookup: Path | None,
    prediction: np.ndarray,
    pred_objects: np.ndarray,
    pred_hit: np.ndarray,
    voxel_mm3: float,
) -> list[dict[str, object]]:
    if lookup is not None:
        table = pd.read_csv(lookup, sep="\t")
        names = dict(zip(table["index"].astype(int), table["name"].astype(str), strict=True))
    else:
        names = {int(v): f"label_{int(v)}" for v in np.unique(distractors) if v > 0}
    rows = []
    for value, name in names.items():
        if value == 0:
            continue
        inside = distractors == value
        objects, n_objects = label_clusters(inside)
        hit = np.unique(objects[prediction & inside])
        clusters = np.unique(pred_objects[inside & (pred_objects > 0)])
        rows.append(
            {
                "participant_id": identity["participant_id"],
                "session_id": identity["session_id"],
                "prediction": identity["prediction"],
                "distractor": name,
                "n_objects": n_objects,
                "n_objects_hit": int(np.count_nonzero(hit)),
                "predicted_voxels": int(np.count_nonzero(prediction & inside)),
                "predicted_volume_mm3": float(np.count_nonzero(prediction & inside)) * voxel_mm3,
                "false_positive_clusters": int(np.count_nonzero(~pred_hit[clusters])),
            }
        )
    return rows


def with_pvs(cases: pd.DataFrame) -> pd.DataFrame:
    """Rows whose region holds reference or predicted PVS (voxels or objects)."""
    keep = (cases.volume_ref_mm3 > 0) | (cases.volume_pred_mm3 > 0) | (cases.n_ref > 0) | (cases.n_pred > 0)
    return cases[keep]


def group_agreement(cases: pd.DataFrame) -> pd.DataFrame:
    """Across-case agreement per region (:data:`GROUP_COLUMNS`)."""
    rows = []
    for (region, hemisphere), part in cases.groupby(["region", "hemisphere"], sort=False):
        count_rho, count_p = spearman(part.n_pred, part.n_ref)
        volume_rho, volume_p = spearman(part.volume_pred_mm3, part.volume_ref_mm3)
        scored = with_pvs(part)
        rows.append(
            {
                "region": region,
                "hemisphere": hemisphere,
                "n_cases": len(part),
                "n_cases_with_pvs": len(scored),
                "dice_mean": scored.dice.mean(),
                "dice_sd": scored.dice.std(ddof=1) if len(scored) > 1 else float("nan"),
                "any_f1_mean": scored.any_f1.mean(),
                "iou_f1_mean": scored.iou_f1.mean(),
                "hd95_median_mm": scored.hd95_mm.dropna().median(),  # NaN without a numpy warning if none
                "count_spearman_rho": count_rho,
                "count_spearman_p": count_p,
                "count_ccc": lin_ccc(part.n_pred, part.n_ref),
                "volume_spearman_rho": volume_rho,
                "volume_spearman_p": volume_p,
                "volume_ccc": lin_ccc(part.volume_pred_mm3, part.volume_ref_mm3),
            }
        )
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


def evaluate(cases: list[Case], use_instances: bool = False) -> EvaluationResult:
    """Evaluate every case (see :func:`evaluate_case`); the group table compares counts and volumes."""
    if not cases:
        raise UsageError("nothing to evaluate: no prediction/reference pairs")
    region_tables, distractor_tables = [], []
    for case in tqdm(cases, desc="evaluating", unit="case"):
        regions, distractors = evaluate_case(case, use_instances)
        region_tables.append(regions)
        if len(distractors):
            distractor_tables.append(distractors)
    table = pd.concat(region_tables, ignore_index=True)
    result = EvaluationResult(cases=table, group=group_agreement(table))
    if distractor_tables:
        result.distractors = pd.concat(distractor_tables, ignore_index=True)
    return result
