"""Full pipeline (raw file -> conform -> Segmenter) against the original nnU-Net v1 predictions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mednet_pvs.inference.engine import InferenceSettings, Segmenter
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.nnunet_v1 import import_v1_models
from mednet_pvs.models.safe_pickle import load_pickle
from mednet_pvs.preproc.conform import conform, load_anatomical

DATA = Path(__file__).parent / "data" / "nnunet_v1"
MODELS = ("generic_unet_tiny", "mednext_tiny")


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    store = tmp_path_factory.mktemp("store")
    return {model: import_v1_models(DATA / model, store, name=model)[0] for model in MODELS}


def _predict(model_dir: Path, folds: list[int], tta: bool) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Probabilities on the conformed grid for the fixture input, as the pipeline computes them."""
    native = load_anatomical(DATA / "input" / "case01_0000.nii.gz")
    image = conform(native)
    assert nib.aff2axcodes(native.affine) == ("R", "A", "S")  # so the conformed grid is the file's grid
    settings = InferenceSettings(device="cpu", tta=tta, folds=folds, step_size=0.5, progress=False)
    segmenter = Segmenter(model_dir, ModelCard.load(model_dir), settings)
    return segmenter.predict(np.asarray(image.dataobj), image.header.get_zooms()[:3]), image


def _compare(
    probabilities: np.ndarray, reference_p1: np.ndarray, bbox: np.ndarray, reference_seg: np.ndarray
) -> None:
    """Probabilities within 1e-3 on nnU-Net's crop box (its float16 (z, y, x) export), Dice >= 0.99."""
    crop = probabilities[1].transpose(2, 1, 0)[tuple(slice(lo, hi) for lo, hi in bbox)]
    assert crop.shape == reference_p1.shape
    assert np.abs(crop - reference_p1.astype(np.float32)).max() <= 1e-3
    ours = probabilities[1] > probabilities[0]  # nnU-Net's argmax, ties to background
    reference = reference_seg.astype(bool)
    dice = 2 * (ours & reference).sum() / (ours.sum() + reference.sum())
    assert reference.sum() > 1000 and dice >= 0.99
    assert (ours == reference).mean() >= 0.999


@pytest.mark.parametrize(
    "model",
    # the MedNeXt run takes ~1.5 min on 2 busy cores; its network is also checked by test_nnunet_networks
    ["generic_unet_tiny", pytest.param("mednext_tiny", marks=pytest.mark.slow)],
)
def test_fold0_without_tta_reproduces_nnunet(imported: dict[str, Path], model: str) -> None:
    probabilities, image = _predict(imported[model], [0], tta=False)
    reference = np.load(DATA / model / "fold0_notta.npz", allow_pickle=False)
    seg = nib.load(DATA / model / "fold0_notta_seg.nii.gz")
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
    _compare(probabilities, reference["p1"], reference["crop_bbox"], np.asarray(seg.dataobj))


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_two_fold_tta_ensemble_reproduces_nnunet(
    imported: dict[str, Path], model: str, shared_dir: Path
) -> None:
    run = shared_dir / "fixtures" / "nnunet_v1" / model / "reference_predictions" / "ensemble_folds01_tta"
    if not run.is_dir():
        pytest.skip(f"{run} not found")
    probabilities, _ = _predict(imported[model], [0, 1], tta=True)
    softmax = np.load(run / "case01.npz", allow_pickle=False)["softmax"]
    bbox = np.asarray(load_pickle(run / "case01.pkl")["crop_bbox"])
    _compare(probabilities, softmax[1], bbox, np.asarray(nib.load(run / "case01.nii.gz").dataobj))
