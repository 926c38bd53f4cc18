"""The model directory format: ``model.json`` (the model card) plus ``fold_<k>.safetensors``.

A model directory is portable and holds no pickles. ``model.json`` describes everything inference
needs (architecture, input contrasts and those it reads inverted, labels, spacing, normalisation,
patch size, folds, thresholds) and where the weights came from (provenance, licence, training data,
metrics), with the sha256 of every weight file so that a corrupted or substituted file is refused
before it is loaded.

Axis convention: ``axes`` is the permutation from the conformed (RAS+, x/y/z) image array to the
array the network sees; ``spacing``, ``patch_size`` and ``mirror_axes`` are in network axis order.
nnU-Net v1 models see SimpleITK's (z, y, x) order, i.e. ``axes = [2, 1, 0]``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mednet_pvs.errors import ModelError

__all__ = ["CARD_NAME", "SCHEMA_VERSION", "TTA_MIRRORINGS", "ModelCard", "fold_file_name", "sha256sum"]

CARD_NAME = "model.json"
SCHEMA_VERSION = 1
NORMALIZATION_SCHEMES = ("zscore",)
#: Which mirrorings test-time augmentation averages: every subset of the card's ``mirror_axes``, or
#: the image and its left-right mirror only (2 passes instead of 8).
TTA_MIRRORINGS = ("all", "left-right")


def fold_file_name(fold: int) -> str:
    """File name of one fold's weights inside a model directory."""
    return f"fold_{fold}.safetensors"


def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelCard:
    """Everything inference needs to know about a model, as stored in ``model.json``."""

    name: str
    version: str
    architecture: dict[str, Any]
    contrasts: list[str]
    labels: dict[str, str]
    spacing: list[float]
    patch_size: list[int]
    folds: list[int]
    axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    normalization: dict[str, Any] = field(default_factory=lambda: {"scheme": "zscore", "use_mask": True})
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    step_size: float = 0.5
    threshold: float = 0.5
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    #: Contrasts read with negated intensities: PVS and CSF are dark on T1w and bright on T2w, and
    #: the negated z-scored T1w orders CSF > grey > white matter as T2w does, so a T2w model can read it.
    inverted_contrasts: list[str] = field(default_factory=list)
    #: Thresholds of particular contrasts (e.g. one read inverted), tuned on their own validation
    #: images; every other contrast takes ``threshold``.
    contrast_thresholds: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ModelError` naming the first field that is inconsistent."""
        problems: list[str] = []
        if self.schema_version > SCHEMA_VERSION:
            problems.append(
                f"schema_version {self.schema_version} is newer than this mednet-pvs ({SCHEMA_VERSION})"
            )
        if "family" not in self.architecture:
            problems.append("architecture.family is missing")
        if sorted(self.axes) != [0, 1, 2]:
            problems.append(f"axes {self.axes} is not a permutation of [0, 1, 2]")
        for key in ("spacing", "patch_size"):
            value = getattr(self, key)
            if len(value) != 3 or any(v <= 0 for v in value):
                problems.append(f"{key} {value} must be three positive numbers")
        if not self.folds:
            problems.append("folds is empty")
        if "0" not in self.labels or len(self.labels) < 2:
            problems.append(
                f"labels {self.labels} must map '0' (background) and at least one foreground class"
            )
        if self.normalization.get("scheme") not in NORMALIZATION_SCHEMES:
            problems.append(f"normalization scheme {self.normalization.get('scheme')!r} is not supported")
        if any(axis not in (0, 1, 2) for axis in self.mirror_axes):
            problems.append(f"mirror_axes {self.mirror_axes} must be among 0, 1, 2")
        if set(self.inverted_contrasts) & set(self.contrasts):
            problems.append(
                f"inverted_contrasts {self.inverted_contrasts} overlaps contrasts {self.contrasts}"
            )
        if not 0.0 < self.threshold < 1.0:
            problems.append(f"threshold {self.threshold} must be in (0, 1)")
        for contrast, value in self.contrast_thresholds.items():
            if contrast not in (*self.contrasts, *self.inverted_contrasts):
                problems.append(f"contrast_thresholds names {contrast!r}, which the model does not read")
            if not 0.0 < value < 1.0:
                problems.append(f"contrast_thresholds[{contrast!r}] {value} must be in (0, 1)")
        if not 0.0 < self.step_size <= 1.0:
            problems.append(f"step_size {self.step_size} must be in (0, 1]")
        if problems:
            raise ModelError(f"model card {self.name!r} is invalid: " + "; ".join(problems))

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model.json") -> ModelCard:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"{source}: unknown fields {unknown}")
        try:
            card = cls(**data)
        except TypeError as exc:
            raise ModelError(f"{source}: missing or malformed fields ({exc})") from exc
        card.validate()
        return card

    @classmethod
    def load(cls, directory: str | Path) -> ModelCard:
        path = Path(directory) / CARD_NAME
        if not path.is_file():
            raise ModelError(f"{directory}: not a model directory (no {CARD_NAME})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot be read as JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{path}: must hold a JSON object")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` atomically into ``directory``."""
        from mednet_pvs.utils.atomic import write_json

        self.validate()
        return write_json(Path(directory) / CARD_NAME, self.to_dict())

    # ------------------------------------------------------------------ integrity
    def record_checksums(self, directory: str | Path) -> None:
        """Fill ``files`` with the sha256 of every fold's weight file in ``directory``."""
        directory = Path(directory)
        self.files = {fold_file_name(k): sha256sum(directory / fold_file_name(k)) for k in self.folds}

    def verify(self, directory: str | Path, folds: list[int] | None = None) -> None:
        """Check the sha256 of the weight files of ``folds`` (default: all); raise ModelError on mismatch."""
        directory = Path(directory)
        for fold in self.folds if folds is None else folds:
            name = fold_file_name(fold)
            expected = self.files.get(name)
            path = directory / name
            if expected is None:
                raise ModelError(f"{path}: no sha256 recorded in {CARD_NAME}; refusing unverified weights")
            if not path.is_file():
                raise ModelError(f"{path}: weight file is missing")
            actual = sha256sum(path)
            if actual != expected:
                raise ModelError(
                    f"{path}: sha256 mismatch (expected {expected[:12]}..., found {actual[:12]}...); "
                    "the file is corrupted or was replaced. Re-import or re-download the model."
                )

    def reads_inverted(self, contrast: str | None) -> bool:
        """Whether images of ``contrast`` are negated before they reach the network."""
        return contrast in self.inverted_contrasts

    def threshold_for(self, contrast: str | None) -> float:
        """The probability threshold of images of ``contrast``: its own if the card has one."""
        return self.contrast_thresholds.get(contrast or "", self.threshold)

    def tta_mirror_axes(self, mirroring: str = "all") -> list[int]:
        """The network axes that test-time augmentation mirrors, for a choice of ``TTA_MIRRORINGS``.

        ``left-right`` is the network axis holding the conformed image's x (R-L) axis; a model whose
        ``mirror_axes`` (the mirrorings it was trained with) lack it is refused.
        """
        if mirroring not in TTA_MIRRORINGS:
            raise ModelError(f"TTA mirroring must be one of {', '.join(TTA_MIRRORINGS)}, got {mirroring!r}")
        if mirroring == "all":
            return list(self.mirror_axes)
        left_right = self.axes.index(0)
        if left_right not in self.mirror_axes:
            raise ModelError(
                f"model {self.name!r} was not trained with left-right mirroring (its mirror_axes "
                f"{self.mirror_axes} lack network axis {left_right}); use --tta-mirroring all or --no-tta"
            )
        return [left_right]

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(int(k) for k in self.labels if int(k) != 0)
