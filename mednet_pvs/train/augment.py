"""Patch sampling with foreground oversampling and nnU-Net-style augmentation, built from MONAI transforms.

Sampling (Isensee et al. 2021): a third of the patches is centred on a PVS voxel
(``RandCropByPosNegLabeld`` with pos:neg = 1:2, nnU-Net's 33 % oversampling), the rest anywhere.
The crop is taken larger than the patch, so that the rotation and scaling that follow
(``RandAffined``, or ``Rand3DElasticd`` with ``elastic``) resample the final patch from real image
content instead of padding. Then, with nnU-Net v1's probabilities and ranges: Gaussian noise, Gaussian
blur, brightness, contrast, simulated low resolution, gamma (and inverted gamma), a smooth bias field
(MONAI, Cardoso et al. 2022; MR-specific, not in nnU-Net) and mirroring along every axis.

Every sample is a pure function of (case, sample seed): the transform chain is re-seeded per sample,
so a run is reproducible whatever the number of loader workers and a resumed run draws what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandSimulateLowResolutiond,
)
from torch.utils.data import Dataset

from mednet_pvs.train.prepare import PreparedCase

__all__ = ["Augmentation", "PatchDataset", "sampling_size", "training_transforms"]

KEYS = ("image", "label")


@dataclass(frozen=True)
class Augmentation:
    """Ranges and probabilities (nnU-Net v1 defaults for 3-D data)."""

    rotation_deg: float = 30.0
    scale: tuple[float, float] = (0.7, 1.4)
    p_spatial: float = 0.2
    elastic: bool = False
    p_noise: float = 0.1
    noise_std: float = 0.1
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    p_contrast: float = 0.15
    intensity_factor: float = 0.25
    p_low_resolution: float = 0.25
    p_gamma: float = 0.3
    p_inverted_gamma: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)
    p_bias: float = 0.1
    mirror_axes: tuple[int, ...] = (0, 1, 2)


def _rotation(angles: Sequence[float]) -> np.ndarray:
    matrix = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        rot = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
        matrix = rot @ matrix
    return matrix


def sampling_size(patch_size: Sequence[int], augmentation: Augmentation) -> list[int]:
    """Crop size that still covers a patch after the largest rotation and zoom-out (nnU-Net's rule).

    Written out because MONAI has no equivalent of nnU-Net's ``get_patch_size``: the bounding box of
    the patch's corners over a grid of rotation angles up to the maximum, times the largest scale.
    """
    half = np.asarray(patch_size, float) / 2
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
    theta = math.radians(augmentation.rotation_deg)
    extent = half.copy()
    for angles in itertools.product(np.linspace(-theta, theta, 5), repeat=3):
        extent = np.maximum(extent, np.abs(corners @ _rotation(angles).T).max(axis=0))
    size = np.ceil(2 * extent * max(1.0, augmentation.scale[1])).astype(int)
    return [int(max(s, p)) for s, p in zip(size, patch_size, strict=True)]


def training_transforms(
    patch_size: Sequence[int], augmentation: Augmentation, foreground_fraction: float = 1.0 / 3.0
) -> Compose:
    """The sampling + augmentation chain for dicts with image, label, foreground and background indices."""
    patch = [int(p) for p in patch_size]
    theta = math.radians(augmentation.rotation_deg)
    # MONAI, like batchgenerators, multiplies the sampling coordinates by 1 + offset (> 1 zooms out)
    scale = (augmentation.scale[0] - 1.0, augmentation.scale[1] - 1.0)
    spatial_args = {
        "keys": KEYS,
        "spatial_size": patch,
        "prob": augmentation.p_spatial,
        "rotate_range": (theta, theta, theta),
        "scale_range": (scale, scale, scale),
        "mode": ("bilinear", "nearest"),
        "padding_mode": "zeros",
    }
    spatial = (
        Rand3DElasticd(sigma_range=(5.0, 8.0), magnitude_range=(50.0, 150.0), **spatial_args)
        if augmentation.elastic
        else RandAffined(**spatial_args)
    )
    pos = foreground_fraction
    factor = augmentation.intensity_factor
    return Compose(
        [
            RandCropByPosNegLabeld(
                KEYS,
                "label",
                sampling_size(patch, augmentation),
                pos=pos,
                neg=1.0 - pos,
                num_samples=1,
                fg_indices_key="foreground",
                bg_indices_key="background",
                allow_smaller=True,
            ),
            spatial,
            RandGaussianNoised("image", prob=augmentation.p_noise, std=augmentation.noise_std),
            RandGaussianSmoothd(
                "image",
                sigma_x=augmentation.blur_sigma,
                sigma_y=augmentation.blur_sigma,
                sigma_z=augmentation.blur_sigma,
                prob=augmentation.p_blur,
            ),
            RandScaleIntensityd("image", factors=(-factor, factor), prob=augmentation.p_brightness),
            RandScaleIntensityFixedMeand(
                "image", factors=(-factor, factor), preserve_range=True, prob=augmentation.p_contrast
            ),
            RandSimulateLowResolutiond("image", prob=augmentation.p_low_resolution, zoom_range=(0.5, 1.0)),
            RandAdjustContrastd(
                "image",
                prob=augmentation.p_inverted_gamma,
                gamma=augmentation.gamma,
                invert_image=True,
                retain_stats=True,
            ),
            RandAdjustContrastd(
                "image", prob=augmentation.p_gamma, gamma=augmentation.gamma, retain_stats=True
            ),
            RandBiasFieldd("image", prob=augmentation.p_bias, coeff_range=(0.0, 0.1)),
            *(RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in augmentation.mirror_axes),
        ]
    )


class PatchDataset(Dataset):
    """Augmented patches of ``draws`` = [(case index, sample seed), ...]; item i is reproducible."""

    def __init__(self, cases: Sequence[PreparedCase], transforms: Compose, draws: np.ndarray) -> None:
        self.cases = list(cases)
        self.transforms = transforms
        self.draws = np.asarray(draws, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        case_index, seed = (int(v) for v in self.draws[index])
        case = self.cases[case_index]
        self.transforms.set_random_state(seed=seed)
        item = {
            "image": np.asarray(case.image),
            "label": np.asarray(case.label),
            "foreground": np.asarray(case.foreground),
            "background": np.asarray(case.background),
        }
        with warnings.catch_warnings():
            # PVS-free subjects (burden "none") are meant to be there; MONAI then samples the patch from
            # the background, which is what we want, but warns about it on every draw.
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            out = self.transforms(item)[0]
        image = torch.as_tensor(out["image"]).float().contiguous()
        label = torch.as_tensor(out["label"]).to(torch.uint8).contiguous()
        return image, label
