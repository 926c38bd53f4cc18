"""One training run's settings (``mednet-pvs-train`` options), validated and recorded in model.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednet_pvs.config import Config
from mednet_pvs.errors import UsageError

__all__ = ["RESUMABLE_CHANGES", "TrainConfig"]

#: Settings a ``--resume`` may change: how the run is executed, not what is trained.
RESUMABLE_CHANGES = frozenset(
    {
        "output_dir",
        "work_dir",
        "resume",
        "overwrite",
        "device",
        "threads",
        "workers",
        "max_minutes",
        "progress",
        "train_folds",
        "save_dtype",
        "export",
        "name",
        "model_version",
        "licence",
        "inverted_contrasts",
        "description",
        "val_tta",
        "threshold_criterion",
        "min_cluster_size",
    }
)
_NETWORK_DIVISOR = 16  # four 2x down-samplings in MedNeXt


@dataclass
class TrainConfig:
    """Everything ``mednet-pvs-train`` needs; defaults follow MedNet-PVS / nnU-Net where they apply."""

    output_dir: Path
    bids_dir: Path | None = None
    labels_dir: Path | None = None  # default: <bids_dir>/derivatives/groundtruth
    label_pattern: str = "*_desc-pvs_mask.nii.gz"
    participants: list[str] = field(default_factory=list)
    synthetic: int = 0
    synthetic_seed: int = 0
    synthetic_config: dict[str, Any] = field(default_factory=dict)
    contrasts: list[str] = field(default_factory=lambda: ["T2w"])
    # cross-validation
    folds: int = 5
    train_folds: list[int] | None = None  # None: all folds
    split_seed: int = 12345  # nnU-Net's KFold random_state
    # schedule
    epochs: int = 1000
    iterations_per_epoch: int = 250
    batch_size: int = 2
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    learning_rate: float = 3e-4
    weight_decay: float = 3e-5
    schedule: str = "poly"
    grad_clip: float = 12.0
    foreground_fraction: float = 1.0 / 3.0
    elastic: bool = False
    # network
    size: str = "S"
    kernel_size: int = 3
    init_filters: int = 32
    deep_supervision: bool = True
    spacing: list[float] | None = None  # None: median spacing of the training images
    use_mask_for_norm: bool = True
    upkern_from: str | None = None
    finetune_from: str | None = None
    trainable_decoder_layers: int | None = None
    # validation and export
    val_every: int = 5
    val_tta: bool = False
    threshold_criterion: str = "dice"
    min_cluster_size: float = Config.min_cluster_size  # mm^3, the app's default
    export: str = "last"
    save_dtype: str = "float32"
    name: str | None = None
    model_version: str = "1.0.0"
    licence: str = "unspecified"
    description: str = ""
    inverted_contrasts: list[str] = field(default_factory=list)  # read negated by the engine
    train_inverted: bool = False  # also train on the inverted contrasts' images, negated
    # execution
    work_dir: Path | None = None  # default: <output_dir>.work beside the model
    resume: bool = False
    overwrite: bool = False
    device: str = "auto"
    threads: int | None = None
    workers: int = 0
    deterministic: bool = False
    seed: int = 0
    max_minutes: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.bids_dir = Path(self.bids_dir) if self.bids_dir is not None else None
        if self.labels_dir is None and self.bids_dir is not None:
            self.labels_dir = self.bids_dir / "derivatives" / "groundtruth"
        self.labels_dir = Path(self.labels_dir) if self.labels_dir is not None else None
        self.work_dir = (
            Path(self.work_dir)
            if self.work_dir
            else self.output_dir.with_name(self.output_dir.name + ".work")
        )
        self.patch_size = [int(p) for p in self.patch_size]
        if self.spacing is not None:
            self.spacing = [float(s) for s in self.spacing]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UsageError` naming every inconsistent option."""
        problems = []
        if self.bids_dir is None and self.synthetic <= 0:
            problems.append("give a BIDS dataset, or --synthetic N to train on generated phantoms")
        if self.folds < 1:
            problems.append(f"--folds {self.folds} must be at least 1")
        if self.train_folds is not None and any(not 0 <= k < self.folds for k in self.train_folds):
            problems.append(f"--fold {self.train_folds} must be in 0..{self.folds - 1}")
        if len(self.patch_size) != 3 or any(
            p < _NETWORK_DIVISOR or p % _NETWORK_DIVISOR for p in self.patch_size
        ):
            problems.append(
                f"--patch-size {self.patch_size}: three multiples of {_NETWORK_DIVISOR} "
                "(MedNeXt halves it 4 times)"
            )
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            problems.append(f"--spacing {self.spacing} must be three positive numbers (mm)")
        if self.kernel_size not in (3, 5, 7):
            problems.append(f"--kernel-size {self.kernel_size}: choose 3, 5 or 7")
        if self.size.upper() not in ("S", "B", "M", "L"):
            problems.append(f"--size {self.size}: choose S, B, M or L")
        if self.schedule not in ("poly", "cosine"):
            problems.append(f"--schedule {self.schedule}: choose poly or cosine")
        if self.export not in ("last", "best"):
            problems.append(f"--export {self.export}: choose last or best")
        if self.save_dtype not in ("float32", "float16"):
            problems.append(f"--save-dtype {self.save_dtype}: choose float32 or float16")
        if self.threshold_criterion not in ("dice", "cluster_f1", "none"):
            problems.append(
                f"--threshold-criterion {self.threshold_criterion}: choose dice, cluster_f1 or none"
            )
        if self.min_cluster_size < 0:
            problems.append(f"--min-cluster-size {self.min_cluster_size} must be at least 0")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            problems.append(f"--foreground-fraction {self.foreground_fraction} must be in [0, 1]")
        if self.upkern_from and self.finetune_from:
            problems.append("--upkern-from and --finetune-from exclude each other")
        if self.trainable_decoder_layers is not None and not self.finetune_from:
            problems.append("--trainable-decoder-layers needs --finetune-from")
        if self.trainable_decoder_layers is not None and not 0 <= self.trainable_decoder_layers <= 4:
            problems.append(f"--trainable-decoder-layers {self.trainable_decoder_layers} must be in 0..4")
        if self.max_minutes is not None and self.max_minutes <= 0:
            problems.append(f"--max-minutes {self.max_minutes} must be positive")
        for name in ("epochs", "iterations_per_epoch", "batch_size", "val_every", "init_filters"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if not self.contrasts:
            problems.append("--contrasts needs at least one contrast")
        if set(self.inverted_contrasts) & set(self.contrasts):
            problems.append(
                f"--inverted-contrasts {self.inverted_contrasts} overlaps --contrasts {self.contrasts}"
            )
        if self.train_inverted and not self.inverted_contrasts:
            problems.append("--train-inverted needs --inverted-contrasts")
        if problems:
            raise UsageError("; ".join(problems))

    @property
    def fold_ids(self) -> list[int]:
        """The folds this invocation trains."""
        return list(range(self.folds)) if self.train_folds is None else sorted(set(self.train_folds))

    @property
    def model_name(self) -> str:
        return self.name or self.output_dir.name

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (paths as strings)."""
        out = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}

    def resume_conflicts(self, saved: dict[str, Any]) -> list[str]:
        """Settings differing from ``saved`` (a previous :meth:`to_dict`) that a resume may not change."""
        current = self.to_dict()
        return sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
