"""One inference engine for every model: what nnU-Net's predictor does, on conformed images.

Pipeline per image: permute to the model's axis order, crop to the non-zero (brain) box, resample
to the model spacing, normalise as the card says, Gaussian sliding window with optional mirroring
TTA (windows without brain skipped), softmax, mean over folds, resample back to the input spacing,
paste into the full grid (nnU-Net v1's order; ``convention="nnunet_v2"`` follows v2). Speed
settings (frozen CPU graphs, batching, autocast, memory reuse) are in :class:`InferenceSettings`;
benchmarks/inference_compare.py measures them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mednet_pvs.errors import ModelError
from mednet_pvs.inference.memory import reuse_freed_memory
from mednet_pvs.inference.preprocessing import CroppedCase, export_probabilities, preprocess_case
from mednet_pvs.inference.sliding_window import WindowPredictor, sliding_window_probabilities
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.networks import load_fold

__all__ = ["Convention", "InferenceSettings", "Segmenter", "paste_into_image", "resolve_device"]

LOGGER = logging.getLogger(__name__)

#: Whose inference conventions to follow (normalisation order, what is averaged).
Convention = Literal["nnunet_v1", "nnunet_v2"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:<index>)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            f"--device {name} was requested but no CUDA GPU is available; use --device cpu or auto"
        )
    return device


@dataclass
class InferenceSettings:
    """How to run a model (``None`` means: follow the model card, or the device's measured default).

    ``tta`` averages the mirrorings of ``tta_mirroring`` (``all``: every subset of the card's
    ``mirror_axes``; ``left-right``: the image and its left-right mirror). ``batch_size`` counts
    windows x mirrorings per forward pass (1 is fastest on CPU; CUDA out-of-memory halves it).
    ``amp`` is autocast (bfloat16/float16), on by default on CUDA only. ``skip_empty_windows``
    leaves out windows with no brain voxel. ``reuse_memory`` keeps freed memory in the process
    while predicting (see :mod:`mednet_pvs.inference.memory`). ``freeze`` runs the networks as
    frozen oneDNN graphs on the CPU (:mod:`mednet_pvs.inference.frozen`). ``convention``:
    ``nnunet_v1`` (the published PVS models' framework) normalises the resampled crop and blends
    windows, mirrorings and folds as softmax outputs; ``nnunet_v2`` normalises before resampling
    and blends logits, with the softmax after resampling back, as nnU-Net v2's predictor does.
    """

    device: str = "auto"
    tta: bool = True
    tta_mirroring: str = "all"
    folds: list[int] | None = None
    step_size: float | None = None
    threads: int | None = None
    progress: bool = True
    batch_size: int = 1
    amp: bool | None = None
    skip_empty_windows: bool = True
    reuse_memory: bool = True
    freeze: bool = True
    convention: Convention = "nnunet_v1"
    extra: dict = field(default_factory=dict)


def paste_into_image(
    outputs: np.ndarray,
    case: CroppedCase,
    network_shape: tuple[int, ...],
    axes: list[int],
    *,
    logits: bool = False,
) -> np.ndarray:
    """Outputs of the resampled crop -> probabilities (C, X, Y, Z) on the conformed grid.

    Probabilities (or ``logits``, turned into probabilities after the resampling, as nnU-Net v2
    does) are resampled linearly to the crop box; outside it, background has probability 1.
    """
    exported = export_probabilities(outputs, case)
    if logits:
        exported = torch.softmax(torch.from_numpy(exported), 0).numpy()
    full = np.zeros((outputs.shape[0], *network_shape), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *case.bbox)] = exported
    inverse = list(np.argsort(axes))
    return np.ascontiguousarray(np.transpose(full, [0, *(a + 1 for a in inverse)]))


class Segmenter:
    """A loaded model (all requested folds) ready to predict probabilities for conformed images."""

    def __init__(
        self, model_dir: str | Path, card: ModelCard, settings: InferenceSettings | None = None
    ) -> None:
        self.settings = settings or InferenceSettings()
        self.card = card
        self.model_dir = Path(model_dir)
        folds = self.settings.folds if self.settings.folds else card.folds
        missing = sorted(set(folds) - set(card.folds))
        if missing:
            raise ModelError(f"{model_dir}: folds {missing} requested but the model has folds {card.folds}")
        if self.settings.convention not in ("nnunet_v1", "nnunet_v2"):
            raise ModelError(f"convention must be nnunet_v1 or nnunet_v2, got {self.settings.convention!r}")
        self.v2 = self.settings.convention == "nnunet_v2"
        self.mirror_axes = card.tta_mirror_axes(self.settings.tta_mirroring) if self.settings.tta else []
        self.folds = list(folds)
        if self.settings.threads:
            torch.set_num_threads(int(self.settings.threads))
        device = resolve_device(self.settings.device)
        self.networks = [load_fold(card, model_dir, k, "cpu") for k in self.folds]
        amp = self.settings.amp if self.settings.amp is not None else device.type == "cuda"
        self.predictor = WindowPredictor(
            self.networks,
            device,
            batch_size=self.settings.batch_size,
            amp=amp,
            average="logits" if self.v2 else "probabilities",
            freeze=self.settings.freeze,
        )
        self.n_classes = int(card.architecture.get("out_channels", len(card.labels)))

    @property
    def device(self) -> torch.device:
        """Where the networks run now (CUDA can fall back to the CPU on out-of-memory)."""
        return self.predictor.device

    def predict(
        self, image: np.ndarray, spacing: tuple[float, float, float], contrast: str | None = None
    ) -> np.ndarray:
        """Class probabilities (n_classes, X, Y, Z) float32 for a conformed (X, Y, Z) image.

        Voxels outside the non-zero box get probability 1 for background, as in nnU-Net. An image
        of a contrast the card reads inverted is negated first (z-scoring commutes with negation).
        """
        card = self.card
        axes = list(card.axes)
        image = np.asarray(image, np.float32)
        if card.reads_inverted(contrast):
            image = -image
        with reuse_freed_memory(self.settings.reuse_memory):
            data = np.transpose(image, axes)[None]
            net_spacing = np.asarray(spacing, float)[axes]
            use_mask = bool(card.normalization.get("use_mask"))
            case = preprocess_case(
                data, net_spacing, np.asarray(card.spacing, float), use_mask, normalize_first=self.v2
            )
            averaged = sliding_window_probabilities(
                case.data,
                self.predictor,
                self.n_classes,
                card.patch_size,
                self.settings.step_size or card.step_size,
                self.mirror_axes,
                mask=case.mask if self.settings.skip_empty_windows else None,
                progress=self.settings.progress,
            )
            return paste_into_image(averaged, case, data.shape[1:], axes, logits=self.v2)

    def foreground_probability(
        self, image: np.ndarray, spacing: tuple[float, float, float], contrast: str | None = None
    ) -> np.ndarray:
        """Probability that each voxel is PVS (1 - background), float32 (X, Y, Z)."""
        return 1.0 - self.predict(image, spacing, contrast)[0]
