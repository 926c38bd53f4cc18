"""Held-out evaluation of a PVS model against the Frangi baseline on synthetic phantoms.

Generates phantoms with seeds never used in training (``mednet-pvs-synth`` numbering), segments
every contrast with the model (the app's inference engine, threshold and minimum cluster size) and
with ``--method frangi`` (its threshold tuned per contrast on training phantoms, maximising the
mean voxel Dice), then scores both with ``mednet-pvs-eval``'s metrics. Both read the image as the
app does after its skull strip of a brain-extracted input (the filled non-zero region, sulcal CSF
included); no N4 runs: the comparison isolates the segmentation step. Writes the masks,
``evaluation.tsv``/``.json``/``.html`` per method and contrast, ``summary.tsv`` and
``per_image.tsv`` (whole-brain scores beside each image's voxel size),
``detected_by_diameter.tsv`` (the share of true PVS each method touches, by diameter), with
``--save-probabilities`` each method's probability maps, and prints the results tables of
docs/training.md.

    python scripts/evaluate_heldout.py --model mednet-pvs-synth-s16 --train-bids /work/train/synth_aniso \
        --out /work/eval_heldout
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd

from mednet_pvs.classical.frangi import FrangiParameters, frangi_vesselness
from mednet_pvs.config import Config
from mednet_pvs.inference.engine import InferenceSettings, Segmenter, paste_into_image
from mednet_pvs.inference.preprocessing import preprocess_case
from mednet_pvs.metrics import evaluate, find_cases
from mednet_pvs.metrics.report import write_evaluation
from mednet_pvs.metrics.voxel import voxel_counts
from mednet_pvs.models.card import TTA_MIRRORINGS
from mednet_pvs.models.registry import resolve_model
from mednet_pvs.preproc.conform import conform, native_image, to_native
from mednet_pvs.preproc.skullstrip import nonzero_brain_region
from mednet_pvs.regions.lut import REGIONS
from mednet_pvs.stats.clusters import pvs_mask, voxel_volume
from mednet_pvs.synth import write_dataset
from mednet_pvs.synth.config import SynthConfig
from mednet_pvs.train.prepare import network_label

LOGGER = logging.getLogger("evaluate_heldout")
TRUTH = Path("derivatives") / "groundtruth"
FRANGI_THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4)
SUMMARY_REGIONS = ("whole_brain", "white_matter", "centrum_semiovale", "basal_ganglia")
DIAMETER_BINS_MM = (0.0, 0.75, 1.0, 1.5, 2.0, 3.5)
MIN_CLUSTER_MM3 = Config.min_cluster_size  # the app's default


class Phantom(NamedTuple):
    """One held-out or training image and its truth; arrays on the conformed (RAS+) grid."""

    raw: nib.Nifti1Image  # the image as stored, whose grid the written masks take
    contrast: str
    data: np.ndarray  # conformed voxels inside the brain, float32
    spacing: tuple[float, float, float]
    voxel_mm3: float
    brain: np.ndarray
    rated: np.ndarray  # voxels of the rated regions (all but "other")
    truth: np.ndarray  # true PVS


# phantom -> PVS probability on its conformed grid; only the oracle reads the truth
Segment = Callable[[Phantom], np.ndarray]


class ProbabilityStore(NamedTuple):
    """Where a method's probability maps go (``save``) or come from (``reuse``, when present)."""

    folder: Path
    save: bool
    reuse: bool


def _canonical(path: Path) -> np.ndarray:
    """The voxels of a label image in its closest RAS+ orientation (the conformed grid)."""
    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)


def _load_phantom(dataset: Path, subject: str, contrast: str) -> Phantom:
    raw = nib.load(dataset / subject / "anat" / f"{subject}_{contrast}.nii.gz")
    truth = dataset / TRUTH / subject / "anat"
    image = conform(raw)
    voxels = np.asarray(image.dataobj, np.float32)
    # the app's skull strip of an already brain-extracted image: the filled non-zero region, which
    # keeps the sulcal CSF (the anatomy's labels leave it out, and an image masked by them is one
    # neither the network nor Frangi ever meets in the app)
    brain = nonzero_brain_region(voxels)
    if brain is None:
        raise ValueError(f"{subject} {contrast}: the phantom does not look brain-extracted")
    regions = _canonical(truth / f"{subject}_seg-pvsregions_dseg.nii.gz")
    return Phantom(
        raw=raw,
        contrast=contrast,
        data=voxels * brain,
        spacing=tuple(float(z) for z in image.header.get_zooms()[:3]),
        voxel_mm3=voxel_volume(image.affine),
        brain=brain,
        rated=np.isin(regions, [r.index for r in REGIONS if r.structure != "other"]),
        truth=_canonical(truth / f"{subject}_desc-pvs_mask.nii.gz") > 0,
    )


def _phantom_mask(probability: np.ndarray, threshold: float, p: Phantom) -> np.ndarray:
    """The app's mask of ``probability``: above ``threshold``, in the brain, clusters of its minimum size."""
    return pvs_mask(probability, threshold, MIN_CLUSTER_MM3, p.voxel_mm3, p.brain)


def _write_native(data: np.ndarray, raw: nib.Nifti1Image, path: Path, dtype: type) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(native_image(to_native(data, raw.affine), raw, dtype), path)


def _segment_all(
    dataset: Path,
    subjects: list[str],
    contrast: str,
    probability: Segment,
    threshold: float,
    out: Path,
    probabilities: ProbabilityStore,
    sweep: Sequence[float] = (),
) -> list[dict]:
    """Write every subject's mask; return its whole-brain voxel scores at each ``sweep`` threshold."""
    scores = []
    for subject in subjects:
        phantom = _load_phantom(dataset, subject, contrast)
        saved = probabilities.folder / subject / "anat" / f"{subject}_desc-pvs_probseg.nii.gz"
        if probabilities.reuse and saved.is_file():
            foreground = _canonical(saved).astype(np.float32)
        else:
            foreground = probability(phantom)
            if probabilities.save:
                _write_native(foreground, phantom.raw, saved, np.float32)
        mask = _phantom_mask(foreground, threshold, phantom)
        _write_native(mask, phantom.raw, out / subject / "anat" / f"{subject}_desc-pvs_mask.nii.gz", np.uint8)
        for cut in sweep:
            counts = voxel_counts(_phantom_mask(foreground, cut, phantom), phantom.truth)
            scores.append(
                {
                    "contrast": contrast,
                    "threshold": cut,
                    "subject": subject,
                    "dice": counts.dice,
                    "sensitivity": counts.sensitivity,
                    "precision": counts.precision,
                }
            )
    return scores


def _frangi(p: Phantom) -> np.ndarray:
    parameters = FrangiParameters()
    return frangi_vesselness(p.data, p.spacing, p.brain, p.contrast, parameters, restrict_mask=p.rated)


def _oracle(spacing_mm: float) -> Segment:
    """A perfect network working at ``spacing_mm``: its training target there, mapped back by the engine.

    The truth goes through the training preparation (crop, nnU-Net v1's label resampling) and the
    engine's export (linear resampling to the image grid), so its score is the ceiling of any model
    at that network spacing.
    """

    def probability(p: Phantom) -> np.ndarray:
        case = preprocess_case(p.data[None], np.asarray(p.spacing), np.full(3, spacing_mm), True)
        target = network_label(p.truth, case, (0, 1, 2))[0].astype(np.float32)
        return paste_into_image(np.stack([1.0 - target, target]), case, p.data.shape, [0, 1, 2])[1]

    return probability


def _tune_frangi(train: Path, subjects: list[str], contrast: str) -> float:
    """The Frangi threshold with the best mean whole-brain Dice on training phantoms.

    Dice as in the evaluation: a PVS-free phantom scores 1 when nothing is detected, 0 otherwise.
    """
    maps = {}
    for subject in subjects:
        phantom = _load_phantom(train, subject, contrast)
        maps[subject] = (_frangi(phantom), phantom)
    best, best_dice = FRANGI_THRESHOLDS[0], -1.0
    for threshold in FRANGI_THRESHOLDS:
        dices = []
        for prob, p in maps.values():
            dices.append(voxel_counts(_phantom_mask(prob, threshold, p), p.truth).dice)
        LOGGER.info("Frangi %s threshold %.2f: training Dice %.3f", contrast, threshold, np.mean(dices))
        if np.mean(dices) > best_dice:
            best, best_dice = threshold, float(np.mean(dices))
    return best


def _summary(result_cases: pd.DataFrame, group: pd.DataFrame, method: str, contrast: str) -> list[dict]:
    rows = []
    for region in SUMMARY_REGIONS:
        part = result_cases[(result_cases.region == region) & (result_cases.hemisphere == "bilateral")]
        agreement = group[(group.region == region) & (group.hemisphere == "bilateral")]
        if part.empty:
            continue
        rows.append(
            {
                "method": method,
                "contrast": contrast,
                "region": region,
                "dice": part.dice.mean(),
                "any_f1": part.any_f1.mean(),
                "iou_f1": part.iou_f1.mean(),
                "count_ccc": float(agreement.count_ccc.iloc[0]) if len(agreement) else float("nan"),
                "volume_ccc": float(agreement.volume_ccc.iloc[0]) if len(agreement) else float("nan"),
            }
        )
    return rows


def _voxel_sizes(dataset: Path, subjects: list[str], contrast: str) -> dict[str, str]:
    """Each subject's voxel size (mm) as stored, e.g. ``0.69x0.69x0.95``."""
    sizes = {}
    for subject in subjects:
        zooms = nib.load(dataset / subject / "anat" / f"{subject}_{contrast}.nii.gz").header.get_zooms()[:3]
        sizes[subject] = "x".join(f"{float(z):.2f}" for z in zooms)
    return sizes


def _per_image(result_cases: pd.DataFrame, voxel: dict[str, str], method: str, contrast: str) -> pd.DataFrame:
    """Whole-brain scores of every image beside its voxel size (``voxel``: subject -> size)."""
    part = result_cases[(result_cases.region == "whole_brain") & (result_cases.hemisphere == "bilateral")]
    return pd.DataFrame(
        {
            "subject": part.participant_id,
            "voxel_mm": [voxel[subject] for subject in part.participant_id],
            "method": method,
            "contrast": contrast,
            "dice": part.dice,
            "any_f1": part.any_f1,
        }
    )


def _detected_by_diameter(
    dataset: Path, subjects: list[str], masks: Path, method: str, contrast: str
) -> pd.DataFrame:
    """Share of true PVS (those with mask voxels) that the masks touch, by PVS diameter (mm)."""
    tables = []
    for subject in subjects:
        truth = dataset / TRUTH / subject / "anat"
        morph = pd.read_csv(truth / f"{subject}_desc-pvs_morph.tsv", sep="\t")
        instances = _canonical(truth / f"{subject}_desc-pvsinstances_dseg.nii.gz")
        found = _canonical(masks / subject / "anat" / f"{subject}_desc-pvs_mask.nii.gz") > 0
        morph = morph[morph.mask_voxels > 0]
        tables.append(morph.assign(detected=morph.pvs_id.isin(np.unique(instances[found]))))
    pvs = pd.concat(tables)
    bins = pd.cut(pvs.diameter_mm, DIAMETER_BINS_MM)
    detected = pvs.groupby(bins, observed=True).detected.agg(["size", "mean"])
    return pd.DataFrame(
        {
            "method": method,
            "contrast": contrast,
            "diameter_mm": [f"{b.left:g}-{b.right:g}" for b in detected.index],
            "n_pvs": detected["size"].to_numpy(),
            "detected": detected["mean"].to_numpy(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name or directory")
    parser.add_argument("--train-bids", type=Path, required=True, help="training phantoms (Frangi tuning)")
    parser.add_argument("--tune-subjects", type=int, default=4, help="training phantoms used to tune Frangi")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=9001, help="base seed of the held-out phantoms")
    parser.add_argument("--synth-config", type=Path, help="phantom settings (JSON), e.g. anisotropic voxels")
    parser.add_argument("--contrasts", nargs="+", default=["T2w", "T1w"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true", help="mirroring TTA (the app's default; 8x slower)")
    parser.add_argument(
        "--tta-mirroring",
        choices=TTA_MIRRORINGS,
        default="all",
        help="with --tta: the model card's mirrorings, or the image and its left-right mirror (2x slower)",
    )
    parser.add_argument(
        "--frangi",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also tune and evaluate the Frangi baseline (--no-frangi: the model alone)",
    )
    parser.add_argument(
        "--oracle-spacing",
        type=float,
        nargs="*",
        default=[],
        metavar="MM",
        help="also score the truth mapped through a network grid of MM mm and back (a model's ceiling)",
    )
    parser.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write each method's PVS probability (probabilities/ beside masks/), for offline analysis",
    )
    parser.add_argument(
        "--reuse-probabilities",
        action="store_true",
        help="read a method's saved probability maps instead of recomputing them (a new threshold or sweep)",
    )
    parser.add_argument(
        "--threshold-sweep",
        type=float,
        nargs="+",
        default=[],
        metavar="T",
        help="also score the model's whole-brain voxels at these thresholds (threshold_sweep.tsv; a "
        "robustness check of the card's threshold, which validation chose, not a way to choose one)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    dataset = args.out / "phantoms"
    if not (dataset / "participants.tsv").is_file():
        settings = json.loads(args.synth_config.read_text()) if args.synth_config else {}
        write_dataset(dataset, args.subjects, args.contrasts, args.seed, SynthConfig.from_dict(settings))
    subjects = sorted(p.name for p in dataset.glob("sub-*") if p.is_dir())
    train_subjects = sorted(p.name for p in args.train_bids.glob("sub-*") if p.is_dir())[: args.tune_subjects]

    model = resolve_model(args.model)
    segmenter = Segmenter(
        model.path,
        model.card,
        InferenceSettings(
            device="cpu",
            tta=args.tta,
            tta_mirroring=args.tta_mirroring,
            threads=args.threads,
            progress=False,
        ),
    )

    def network(p: Phantom) -> np.ndarray:
        return segmenter.predict(p.data, p.spacing, p.contrast)[1]

    rows, images, by_diameter, sweep = [], [], [], []
    for contrast in args.contrasts:
        methods = [("model", model.card.name, network, model.card.threshold_for(contrast))]
        if args.frangi:
            threshold = _tune_frangi(args.train_bids, train_subjects, contrast)
            methods.append(("frangi", f"frangi (threshold {threshold:.2f})", _frangi, threshold))
        for mm in args.oracle_spacing:
            methods.append((f"oracle{mm:g}mm", f"oracle at {mm:g} mm", _oracle(mm), 0.5))
        voxel = _voxel_sizes(dataset, subjects, contrast)
        for name, method, probability, cut in methods:
            folder = args.out / f"{name}-{contrast}"
            store = ProbabilityStore(
                folder / "probabilities", args.save_probabilities, args.reuse_probabilities
            )
            cuts = args.threshold_sweep if name == "model" else ()
            sweep += _segment_all(
                dataset, subjects, contrast, probability, cut, folder / "masks", store, cuts
            )
            result = evaluate(find_cases(folder / "masks", dataset / TRUTH))
            write_evaluation(result, folder)
            rows += _summary(result.cases, result.group, method, contrast)
            images.append(_per_image(result.cases, voxel, method, contrast))
            by_diameter.append(_detected_by_diameter(dataset, subjects, folder / "masks", method, contrast))
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "summary.tsv", sep="\t", index=False, float_format="%.3f")
    per_image = pd.concat(images).pivot_table(
        index=["subject", "voxel_mm", "contrast"], columns="method", values=["dice", "any_f1"]
    )
    per_image.to_csv(args.out / "per_image.tsv", sep="\t", float_format="%.3f")
    detection = pd.concat(by_diameter).pivot_table(
        index=["contrast", "diameter_mm", "n_pvs"], columns="method", values="detected"
    )
    detection.to_csv(args.out / "detected_by_diameter.tsv", sep="\t", float_format="%.3f")
    print(
        f"{len(subjects)} held-out phantoms (base seed {args.seed}), "
        + (f"TTA on ({args.tta_mirroring} mirrorings); " if args.tta else "TTA off; ")
        + (f"Frangi tuned on {len(train_subjects)} training phantoms" if args.frangi else "model only")
    )
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print("\nwhole brain, per image:")
    print(per_image.to_markdown(floatfmt=".3f"))
    print("\nshare of true PVS detected (any overlap), by diameter:")
    print(detection.to_markdown(floatfmt=".3f"))
    if sweep:
        scores = pd.DataFrame(sweep)
        scores.to_csv(args.out / "threshold_sweep.tsv", sep="\t", index=False, float_format="%.4f")
        print("\nmodel, whole-brain voxel scores by threshold (means over images):")
        means = scores.groupby(["contrast", "threshold"])[["dice", "sensitivity", "precision"]].mean()
        print(means.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
