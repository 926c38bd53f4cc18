"""Contrast (intensity) models and the acquisition model of the phantoms.

Intensities are drawn per tissue class SynthSeg-style (Billot et al. 2023): every subject and
contrast gets random class means from ranges whose order follows the contrast (T2w: CSF > GM > WM;
T1w: WM > GM > CSF; FLAIR: lesions > GM > WM > suppressed CSF; PDw: CSF ~ GM > WM), then a small
per-label jitter and a smooth multiplicative texture. The ranges are relative to the brightest
tissue and are design choices tuned by eye against the real scans in ``../shared/data/real``.

The acquisition model turns the noise-free high-resolution image into the acquired image: bias
field, point-spread function and slice profile (Gaussian blur, then block averaging onto the
output grid), Rician noise, a gamma non-linearity and scaling to scanner-like integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mednet_pvs.synth.anatomy import TISSUE_CLASSES

__all__ = [
    "CONTRASTS",
    "Acquisition",
    "ContrastModel",
    "acquire",
    "sample_acquisition",
    "sample_contrast",
    "smooth_multiplier",
]

_T2W = {
    "white_matter": (0.19, 0.26), "cerebellum_white_matter": (0.19, 0.26), "brainstem": (0.22, 0.30),
    "cortex": (0.34, 0.44), "cerebellum_cortex": (0.34, 0.42), "hippocampus": (0.38, 0.46),
    "amygdala": (0.36, 0.44), "caudate": (0.32, 0.40), "putamen": (0.27, 0.34), "accumbens": (0.32, 0.40),
    "pallidum": (0.18, 0.24), "thalamus": (0.25, 0.32), "ventral_dc": (0.22, 0.29), "vessel": (0.27, 0.34),
    "ventricle": (0.88, 1.00), "csf": (0.82, 1.00), "choroid_plexus": (0.40, 0.60), "meninges": (0.28, 0.45),
    "pvs": (0.80, 1.00), "lacune": (0.85, 1.00), "lacune_rim": (0.45, 0.58), "wmh": (0.42, 0.60),
    "flow_void": (0.03, 0.10),
}  # fmt: skip
_T1W = {
    "white_matter": (0.92, 1.00), "cerebellum_white_matter": (0.88, 0.98), "brainstem": (0.84, 0.93),
    "cortex": (0.56, 0.68), "cerebellum_cortex": (0.56, 0.66), "hippocampus": (0.58, 0.68),
    "amygdala": (0.60, 0.70), "caudate": (0.66, 0.75), "putamen": (0.70, 0.79), "accumbens": (0.66, 0.75),
    "pallidum": (0.80, 0.88), "thalamus": (0.78, 0.87), "ventral_dc": (0.80, 0.89), "vessel": (0.70, 0.79),
    "ventricle": (0.14, 0.26), "csf": (0.14, 0.28), "choroid_plexus": (0.40, 0.55), "meninges": (0.40, 0.65),
    "pvs": (0.14, 0.28), "lacune": (0.14, 0.26), "lacune_rim": (0.70, 0.82), "wmh": (0.66, 0.80),
    "flow_void": (0.04, 0.12),
}  # fmt: skip
_FLAIR = {
    "white_matter": (0.52, 0.60), "cerebellum_white_matter": (0.52, 0.60), "brainstem": (0.56, 0.65),
    "cortex": (0.72, 0.84), "cerebellum_cortex": (0.70, 0.82), "hippocampus": (0.76, 0.88),
    "amygdala": (0.74, 0.86), "caudate": (0.68, 0.78), "putamen": (0.64, 0.74), "accumbens": (0.68, 0.78),
    "pallidum": (0.52, 0.60), "thalamus": (0.62, 0.72), "ventral_dc": (0.58, 0.66), "vessel": (0.62, 0.72),
    "ventricle": (0.12, 0.22), "csf": (0.12, 0.24), "choroid_plexus": (0.30, 0.50), "meninges": (0.35, 0.60),
    "pvs": (0.12, 0.24), "lacune": (0.12, 0.22), "lacune_rim": (0.95, 1.10), "wmh": (1.00, 1.25),
    "flow_void": (0.03, 0.08),
}  # fmt: skip
_PDW = {
    "white_matter": (0.62, 0.70), "cerebellum_white_matter": (0.62, 0.70), "brainstem": (0.66, 0.74),
    "cortex": (0.80, 0.90), "cerebellum_cortex": (0.80, 0.90), "hippocampus": (0.82, 0.92),
    "amygdala": (0.80, 0.90), "caudate": (0.78, 0.86), "putamen": (0.74, 0.82), "accumbens": (0.78, 0.86),
    "pallidum": (0.64, 0.72), "thalamus": (0.72, 0.80), "ventral_dc": (0.68, 0.76), "vessel": (0.74, 0.82),
    "ventricle": (0.88, 1.00), "csf": (0.86, 1.00), "choroid_plexus": (0.70, 0.85), "meninges": (0.55, 0.75),
    "pvs": (0.86, 1.00), "lacune": (0.86, 1.00), "lacune_rim": (0.85, 0.95), "wmh": (0.86, 0.98),
    "flow_void": (0.04, 0.12),
}  # fmt: skip

#: Supported contrasts (BIDS suffixes) and their class intensity ranges.
CONTRASTS: dict[str, dict[str, tuple[float, float]]] = {
    "T2w": _T2W,
    "T1w": _T1W,
    "FLAIR": _FLAIR,
    "PDw": _PDW,
}
#: Signal-to-noise ratio (white matter mean / noise sigma) range per contrast.
_SNR = {"T2w": (14.0, 45.0), "T1w": (18.0, 60.0), "FLAIR": (12.0, 35.0), "PDw": (18.0, 50.0)}


@dataclass(frozen=True)
class ContrastModel:
    """Class means of one contrast of one subject, plus its per-label jitter and texture."""

    name: str
    class_means: dict[str, float]
    label_means: dict[int, float]  # FreeSurfer label -> mean (class mean with per-label jitter)
    texture_std: float  # smooth multiplicative texture (features of ~4 voxels)
    grain_std: float  # voxel-wise multiplicative texture before the point-spread function

    def label_lut(self, max_label: int) -> np.ndarray:
        """Look-up table label id -> mean intensity (0 for background and unknown labels)."""
        lut = np.zeros(max_label + 1, np.float32)
        for label, value in self.label_means.items():
            if label <= max_label:
                lut[label] = value
        return lut


def sample_contrast(name: str, rng: np.random.Generator, label_jitter: float = 0.03) -> ContrastModel:
    """Random class and label means of contrast ``name`` (one of :data:`CONTRASTS`)."""
    ranges = CONTRASTS[name]
    # One shared position inside every range keeps the tissue contrast coherent (e.g. a subject with
    # dark WM tends to have dark GM too), plus independent variation per class.
    shared = rng.uniform(0, 1)
    class_means = {}
    for cls, (lo, hi) in ranges.items():
        position = np.clip(0.5 * shared + 0.5 * rng.uniform(0, 1), 0, 1)
        class_means[cls] = float(lo + position * (hi - lo))
    label_means = {
        label: float(class_means[cls] * (1 + rng.uniform(-label_jitter, label_jitter)))
        for cls, labels in TISSUE_CLASSES.items()
        for label in labels
    }
    return ContrastModel(
        name,
        class_means,
        label_means,
        texture_std=float(rng.uniform(0.03, 0.07)),
        grain_std=float(rng.uniform(0.02, 0.05)),
    )


@dataclass(frozen=True)
class Acquisition:
    """Random acquisition parameters of one contrast (recorded in the image's JSON sidecar)."""

    snr: float
    bias_std: float
    gamma: float
    psf_sigma_voxels: tuple[float, float, float]
    scale: float

    def sidecar(self) -> dict[str, object]:
        return {
            "SyntheticSNR": round(self.snr, 2),
            "SyntheticBiasFieldStd": round(self.bias_std, 4),
            "SyntheticGamma": round(self.gamma, 4),
            "SyntheticPSFSigmaVoxels": [round(s, 3) for s in self.psf_sigma_voxels],
        }


def sample_acquisition(
    name: str,
    rng: np.random.Generator,
    snr_scale: float = 1.0,
    bias_std_max: float = 0.25,
    gamma_std: float = 0.12,
    psf_sigma_range: tuple[float, float] = (0.3, 0.6),
) -> Acquisition:
    """Random acquisition parameters for contrast ``name``."""
    return Acquisition(
        snr=float(rng.uniform(*_SNR[name]) * snr_scale),
        bias_std=float(rng.uniform(0, bias_std_max)),
        gamma=float(np.exp(rng.normal(0, gamma_std))),
        psf_sigma_voxels=tuple(float(v) for v in rng.uniform(*psf_sigma_range, 3)),
        scale=float(rng.uniform(600, 2500)),
    )


def smooth_multiplier(
    shape: tuple[int, int, int], rng: np.random.Generator, bias_std: float, texture_std: float
) -> np.ndarray:
    """exp(bias field) * (1 + tissue texture): a smooth multiplicative field of ``shape``.

    The bias field is a cubic interpolation of a 4x4x4 Gaussian lattice (std ``bias_std`` in log
    units, SynthSeg-like); the texture is Gaussian noise smoothed over ~4 voxels with std
    ``texture_std``. Both are built on a 4x coarser grid and linearly upsampled (they are smooth).
    """
    coarse_shape = tuple(max(4, -(-s // 4)) for s in shape)
    bias = _zoom_to(rng.normal(0, bias_std, (4, 4, 4)).astype(np.float32), coarse_shape, order=3)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, coarse_shape).astype(np.float32), 1.0)
    texture *= texture_std / (texture.std() + 1e-9)
    return _zoom_to(np.exp(bias) * (1 + texture), shape, order=1)


def _zoom_to(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """Resample ``array`` to exactly ``shape`` (corner-aligned).

    ``mode="nearest"``: rounding can put the last output sample a hair beyond the last input one,
    which the default constant mode would turn into 0.
    """
    factors = [s / n for s, n in zip(shape, array.shape, strict=True)]
    out = ndimage.zoom(array, factors, order=order, grid_mode=False, mode="nearest")
    if out.shape != tuple(shape):
        raise RuntimeError(f"zoom produced {out.shape}, expected {shape}")
    return out


def acquire(
    image: np.ndarray,
    factors: tuple[int, int, int],
    brain_mask: np.ndarray,
    white_matter_level: float,
    acquisition: Acquisition,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate the acquisition of a noise-free model-grid image (bias field applied) onto the output grid.

    ``factors`` is the block size of output voxels in model voxels; ``brain_mask`` is on the output
    grid (skull stripping: zero outside). ``white_matter_level`` is the noise-free WM intensity used
    for the SNR. Returns float32 intensities on the output grid.
    """
    sigma = [s * f for s, f in zip(acquisition.psf_sigma_voxels, factors, strict=True)]
    blurred = ndimage.gaussian_filter(image, sigma, mode="nearest")  # crops continue beyond their edges
    out_shape = tuple(s // f for s, f in zip(image.shape, factors, strict=True))
    blocks = blurred.reshape(out_shape[0], factors[0], out_shape[1], factors[1], out_shape[2], factors[2])
    acquired = blocks.mean(axis=(1, 3, 5))
    noise_sigma = white_matter_level / acquisition.snr
    real = acquired + rng.normal(0, noise_sigma, acquired.shape).astype(np.float32)
    imaginary = rng.normal(0, noise_sigma, acquired.shape).astype(np.float32)
    magnitude = np.sqrt(real**2 + imaginary**2)  # Rician magnitude
    top = float(np.percentile(magnitude[brain_mask], 99.5)) if brain_mask.any() else 1.0
    normalised = np.clip(magnitude / top, 0, None) ** acquisition.gamma
    return (normalised * acquisition.scale * brain_mask).astype(np.float32)
