"""One inference engine for every model: what nnU-Net's predictor does, on conformed images.

Pipeline per image: permute to the model's axis order, crop to the non-zero (brain) box, resample
to the model spacing, normalise as the card says, Gaussian sliding window with optional mirroring
TTA, softmax, mean over folds, resample back to the input spacing, paste into the full grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mednet_pvs.errors import ModelError
from mednet_pvs.inference.preprocessing import export_probabilities, preprocess_case
from mednet_pvs.inference.sliding_window import predict_sliding_window, tile_starts
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.networks import load_fold

__all__ = ["InferenceSettings", "Segmenter", "resolve_device"]

LOGGER = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device {name} was requested but no CUDA GPU is available; use --device cpu or auto")
    return device


@dataclass
class InferenceSettings:
    """How to run a model (defaults follow the model card)."""

    device: str = "auto"
    tta: bool = True
    folds: list[int] | None = None
    step_size: float | None = None
    threads: int | None = None
    progress: bool = True
    extra: dict = field(default_factory=dict)


class Segmenter:
    """A loaded model (all requested folds) ready to predict probabilities for conformed images."""

    def __init__(self, model_dir: str | Path, card: ModelCard, settings: InferenceSettings | None = None) -> None:
        self.settings = settings or InferenceSettings()
        self.card = card
        self.model_dir = Path(model_dir)
        folds = self.settings.folds if self.settings.folds else card.folds
        missing = sorted(set(folds) - set(card.folds))
        if missing:
            raise ModelError(f"{model_dir}: folds {missing} requested but the model has folds {card.folds}")
        self.folds = list(folds)
        if self.settings.threads:
            torch.set_num_threads(int(self.settings.threads))
        self.device = resolve_device(self.settings.device)
        self.networks = [load_fold(card, model_dir, k, self.device) for k in self.folds]
        self.n_classes = int(card.architecture.get("out_channels", len(card.labels)))

    def predict(self, image: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        """Class probabilities (n_classes, X, Y, Z) float32 for a conformed (X, Y, Z) image.

        Voxels outside the non-zero box get probability 1 for background, as in nnU-Net.
        """
        card = self.card
        axes = list(card.axes)
        data = np.transpose(np.asarray(image, np.float32), axes)[None]
        net_spacing = np.asarray(spacing, float)[axes]
        case = preprocess_case(data, net_spacing, np.asarray(card.spacing, float), bool(card.normalization.get("use_mask")))
        step = self.settings.step_size or card.step_size
        mirror = card.mirror_axes if self.settings.tta else []
        n_tiles = int(np.prod([len(s) for s in tile_starts(
            np.maximum(case.data.shape[1:], card.patch_size), card.patch_size, step)])) * len(self.networks)
        with tqdm(total=n_tiles, desc="sliding window", unit="tile", disable=not self.settings.progress,
                  leave=False) as bar:
            per_fold = predict_sliding_window(
                case.data, self.networks, self.n_classes, card.patch_size, step, mirror, self.device,
                progress=bar.update,
            )
        probabilities = per_fold.mean(axis=0)
        exported = export_probabilities(probabilities, case)
        full = np.zeros((self.n_classes, *data.shape[1:]), dtype=np.float32)
        full[0] = 1.0
        full[(slice(None), *case.bbox)] = exported
        inverse = list(np.argsort(axes))
        return np.ascontiguousarray(np.transpose(full, [0, *(a + 1 for a in inverse)]))

    def foreground_probability(self, image: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        """Probability that each voxel is PVS (1 - background), float32 (X, Y, Z)."""
        return 1.0 - self.predict(image, spacing)[0]
