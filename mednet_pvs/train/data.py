"""Training cases: labelled BIDS images or generated phantoms, loaded as conformed arrays.

Two sources feed training. (a) A BIDS dataset plus a derivatives folder of PVS masks: every image
of the requested contrasts needs one mask whose subject, session, acquisition and run entities
match (a mask without ``ses``/``acq``/``run`` applies to every image of that subject that has it;
the most specific match wins). (b) A generator, any ``Callable[[int], (image, label, spacing)]``
keyed by seed, e.g. the phantom generator of :mod:`mednet_pvs.synth` (see
:func:`mednet_pvs.train.synthetic.phantom_generators`). Both give a :class:`Sample`: conformed
(closest RAS+) float32 image, uint8 mask on the same grid, voxel spacing in mm.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation

from mednet_pvs.bids import build_layout, collect_images, parse_entities, select_participants
from mednet_pvs.errors import InputImageError, MednetPVSError, UsageError
from mednet_pvs.preproc.conform import conform, load_anatomical
from mednet_pvs.utils.atomic import atomic_path

__all__ = [
    "MATCH_ENTITIES",
    "Sample",
    "SampleGenerator",
    "SampleStore",
    "TrainingCase",
    "find_labelled_images",
    "generated_cases",
    "load_sample",
    "read_label",
]

LOGGER = logging.getLogger(__name__)

#: Appended to the id of a case read inverted.
INVERTED_SUFFIX = "-inverted"
#: Entities that tie a mask to its image (besides the subject).
MATCH_ENTITIES = ("ses", "acq", "run")
#: Largest distance (mm) between image and mask grids at the voxel corners still taken as "same grid".
GRID_TOLERANCE_MM = 1e-3

SampleGenerator = Callable[[int], tuple[np.ndarray, np.ndarray, Sequence[float]]]


@dataclass(frozen=True)
class Sample:
    """One conformed training image (X, Y, Z) float32, its PVS mask (uint8 0/1) and the spacing (mm)."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


@dataclass(frozen=True)
class TrainingCase:
    """Where one training image and its mask come from: files, or a generator seed."""

    case_id: str  # unique, file-name safe
    subject: str  # cases of one subject always share a fold
    contrast: str
    image_path: Path | None = None
    label_path: Path | None = None
    seed: int | None = None
    inverted: bool = False  # the image is negated on loading (a contrast the model reads inverted)

    def describe(self) -> dict[str, Any]:
        """JSON record for the model card's training-data provenance."""
        record: dict[str, Any] = {"case": self.case_id, "contrast": self.contrast}
        if self.seed is not None:
            record["seed"] = self.seed
        else:
            record |= {"image": str(self.image_path), "label": str(self.label_path)}
        return record | ({"inverted": True} if self.inverted else {})

    def read_inverted(self) -> TrainingCase:
        """The same image as a case whose intensities are negated on loading, under its own id."""
        return dataclasses.replace(self, case_id=self.case_id + INVERTED_SUFFIX, inverted=True)

    def as_stored(self) -> TrainingCase:
        """The case of the image as it is stored (itself, unless it is read inverted)."""
        return dataclasses.replace(self, case_id=self.case_id.removesuffix(INVERTED_SUFFIX), inverted=False)


# ------------------------------------------------------------------------------------------ BIDS
def _label_index(labels_dir: Path, pattern: str) -> dict[str, list[tuple[dict[str, str], Path]]]:
    """Masks under ``labels_dir`` matching ``pattern`` (glob on the file name), by subject."""
    if not labels_dir.is_dir():
        raise UsageError(f"labels folder {labels_dir} does not exist (set it with --labels)")
    index: dict[str, list[tuple[dict[str, str], Path]]] = {}
    for path in sorted(labels_dir.rglob("*")):
        if not path.is_file() or not fnmatch.fnmatch(path.name, pattern) or path.name.startswith("."):
            continue
        try:
            entities, _, _ = parse_entities(path)
        except MednetPVSError:
            LOGGER.warning("%s: not a BIDS file name; ignored", path)
            continue
        if "sub" in entities:
            index.setdefault(entities["sub"], []).append((entities, path))
    return index


def match_label(
    image_entities: Mapping[str, str], candidates: Sequence[tuple[dict[str, str], Path]]
) -> Path | None:
    """The mask for an image: entities in :data:`MATCH_ENTITIES` agree or are absent; most specific wins.

    Raises :class:`UsageError` when two equally specific masks fit.
    """
    scored = []
    for entities, path in candidates:
        if any(key in entities and entities[key] != image_entities.get(key) for key in MATCH_ENTITIES):
            continue
        scored.append((sum(key in entities for key in MATCH_ENTITIES), path))
    if not scored:
        return None
    best = max(score for score, _ in scored)
    winners = [path for score, path in scored if score == best]
    if len(winners) > 1:
        raise UsageError(f"several masks fit the same image equally well: {', '.join(map(str, winners))}")
    return winners[0]


def _case_id(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.name.split(".")[0])


def find_labelled_images(
    bids_dir: Path,
    labels_dir: Path,
    contrasts: Sequence[str],
    pattern: str = "*_desc-pvs_mask.nii.gz",
    participants: Sequence[str] | None = None,
) -> list[TrainingCase]:
    """Every image of ``contrasts`` in the dataset with its mask; an image without a mask is an error."""
    layout = build_layout(Path(bids_dir))
    index = _label_index(Path(labels_dir), pattern)
    cases, unlabelled = [], []
    for subject in select_participants(layout, participants):
        for contrast in contrasts:
            for record in collect_images(layout, subject, None, contrast):
                label = match_label(record.entities, index.get(subject, []))
                if label is None:
                    unlabelled.append(record.path)
                    continue
                cases.append(
                    TrainingCase(_case_id(record.path), f"sub-{subject}", contrast, record.path, label)
                )
    if unlabelled:
        listed = "\n  ".join(map(str, unlabelled[:20])) + ("\n  ..." if len(unlabelled) > 20 else "")
        raise UsageError(
            f"no labels found in {labels_dir} (pattern {pattern!r}, matched by "
            f"subject/{'/'.join(MATCH_ENTITIES)}) "
            f"for {len(unlabelled)} image(s):\n  {listed}\n"
            "Add their masks, or restrict training with --participant-label."
        )
    if not cases:
        raise UsageError(f"{bids_dir}: no {'/'.join(contrasts)} images found")
    return cases


def generated_cases(seeds: Sequence[int], contrasts: Sequence[str]) -> list[TrainingCase]:
    """One case per (seed, contrast); all contrasts of a seed are one subject."""
    return [
        TrainingCase(f"synth-{seed}_{contrast}", f"synth-{seed}", contrast, seed=int(seed))
        for seed in seeds
        for contrast in contrasts
    ]


# ------------------------------------------------------------------------------------------ loading
def read_label(label_path: Path, image: nib.Nifti1Image, image_path: Path) -> np.ndarray:
    """The mask of ``image`` conformed like it (uint8 0/1); grids must agree, labels must be integers."""
    try:
        label_img = nib.load(str(label_path))
        data = np.asanyarray(label_img.dataobj)
    except Exception as exc:  # nibabel raises many types for foreign or truncated files
        raise InputImageError(label_path, f"cannot be read as a NIfTI mask ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    shape_ok = data.shape == image.shape[:3]
    corners = np.array(
        [[i, j, k, 1] for i in (0, image.shape[0]) for j in (0, image.shape[1]) for k in (0, image.shape[2])],
        float,
    ).T
    distance = float(np.abs((label_img.affine - image.affine) @ corners).max())
    if not shape_ok or distance > GRID_TOLERANCE_MM:
        raise InputImageError(
            label_path,
            f"its grid (shape {data.shape}, affine {np.round(label_img.affine, 4).tolist()}) differs from "
            f"the grid of its image {image_path} (shape {image.shape[:3]}, "
            f"affine {np.round(image.affine, 4).tolist()}); "
            "masks must lie on their image's voxel grid",
        )
    values = np.asarray(data)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)) or values.min() < 0:
        raise InputImageError(
            label_path, "is not a mask: voxel values must be non-negative integers (0 = background)"
        )
    if values.max() > 1:
        LOGGER.info(
            "%s: labels up to %d; every non-zero voxel is taken as PVS", label_path, int(values.max())
        )
    mask = nib.Nifti1Image((values > 0).astype(np.uint8), image.affine)
    return np.asarray(conform(mask).dataobj).round().astype(np.uint8)


def load_sample(case: TrainingCase, generators: Mapping[str, SampleGenerator] | None = None) -> Sample:
    """Load (files) or generate (seed) one case as a conformed :class:`Sample`."""
    if case.seed is not None:
        if not generators or case.contrast not in generators:
            raise UsageError(f"case {case.case_id}: no generator for contrast {case.contrast}")
        image, label, spacing = generators[case.contrast](case.seed)
        image, label = np.asarray(image, np.float32), np.asarray(label)
        if image.shape != label.shape:
            raise MednetPVSError(
                f"generator for {case.case_id} gave image {image.shape} and label {label.shape}"
            )
        sample = Sample(image, (label > 0).astype(np.uint8), tuple(float(s) for s in spacing))  # type: ignore[arg-type]
    else:
        assert case.image_path is not None and case.label_path is not None
        native = load_anatomical(case.image_path)
        label = read_label(case.label_path, native, case.image_path)
        conformed = conform(native)
        spacing = tuple(float(z) for z in conformed.header.get_zooms()[:3])
        sample = Sample(np.asarray(conformed.dataobj, np.float32), label, spacing)  # type: ignore[arg-type]
    return _negated(sample) if case.inverted else sample


def _negated(sample: Sample) -> Sample:
    """``sample`` as a case read inverted sees it: the engine negates such an image before z-scoring."""
    return dataclasses.replace(sample, image=-sample.image)


class SampleStore:
    """Loads cases; generated ones are kept (compressed) in ``cache_dir`` so that each seed is made once.

    The cache serves reruns, resumed runs and the final validation, which needs the full images.
    """

    def __init__(self, cache_dir: Path, generators: Mapping[str, SampleGenerator] | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.generators = dict(generators or {})

    def _cached(self, case: TrainingCase) -> Path:
        return self.cache_dir / f"{case.case_id}.npz"

    def load(self, case: TrainingCase) -> Sample:
        """The conformed sample of ``case`` (generated samples from the cache when present)."""
        if case.seed is None:
            return load_sample(case)
        if case.inverted:  # the cache holds the phantom as generated, shared with its uninverted case
            return _negated(self.load(case.as_stored()))
        path = self._cached(case)
        if path.is_file():
            with np.load(path) as stored:
                return Sample(stored["image"], stored["label"], tuple(float(s) for s in stored["spacing"]))  # type: ignore[arg-type]
        sample = load_sample(case, self.generators)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(
                handle, image=sample.image, label=sample.label, spacing=np.asarray(sample.spacing)
            )
        return sample

    def spacing(self, case: TrainingCase) -> tuple[float, float, float]:
        """Conformed voxel spacing (mm); read from the header alone for files."""
        if case.seed is not None:
            return self.load(case).spacing
        assert case.image_path is not None
        try:
            header_img = nib.load(str(case.image_path))
        except Exception as exc:  # nibabel raises many types for foreign files
            raise InputImageError(case.image_path, f"cannot be read as NIfTI ({exc})") from exc
        zooms = np.asarray(header_img.header.get_zooms()[:3], float)
        order = io_orientation(header_img.affine)[:, 0].astype(int)  # input axis i becomes RAS axis order[i]
        conformed = np.empty(3)
        conformed[order] = zooms
        return tuple(float(z) for z in conformed)  # type: ignore[return-value]
