"""The bundled default model: found without --model, intact, honest about its training, and it runs."""

from __future__ import annotations

import numpy as np

from mednet_pvs.cli.models import main as models_main
from mednet_pvs.inference.engine import InferenceSettings, Segmenter
from mednet_pvs.models.registry import BUNDLED_MODELS_DIR, DEFAULT_MODEL, default_model_name, resolve_model
from tests.conftest import make_phantom


def test_default_model_is_bundled_verified_and_documented():
    assert default_model_name() == DEFAULT_MODEL is not None
    model = resolve_model(None)
    assert model.origin == "bundled" and model.path == BUNDLED_MODELS_DIR / DEFAULT_MODEL
    model.card.verify(model.path)  # sha256 of every fold
    assert model.card.contrasts == ["T2w"]  # 1.0.0 learned T1w too and found no PVS there (docs/training.md)
    assert model.card.inverted_contrasts == ["T1w"]  # measured on held-out T1w phantoms (docs/training.md)
    assert "synthetic" in model.card.description.lower()
    training = model.card.provenance["training"]
    assert training["contrasts"] == ["T2w"] and training["config"]["spacing"] == [0.5, 0.5, 0.5]
    assert model.card.spacing == [0.5, 0.5, 0.5]  # a coarser network grid caps the Dice (docs/training.md)
    assert training["initialisation"]["method"] == "finetune"
    assert training["initialisation"]["source"]["version"] == "1.5.0"  # fine-tuned from 1.4.0 ... 1.0.0
    assert training["training_seconds"]["0"] > 3600  # 65 minutes on the 2-core CPU (docs/training.md)
    assert len(training["synthetic"]["seeds"]) == 50 and training["config"]["synthetic_seed"] == 3002
    assert 0.0 < model.card.threshold < 1.0
    assert model.card.metrics["validation"]["folds"]["0"]["n_cases"] == 10
    # T1w, read inverted, has its threshold from the 5 validation subjects' own T1w images
    assert set(model.card.contrast_thresholds) == {"T1w"}
    assert model.card.metrics["validation_inverted"]["T1w"]["folds"]["0"]["n_cases"] == 5
    assert model.card.threshold_for("T1w") == model.card.contrast_thresholds["T1w"] != model.card.threshold
    # trained mirrored on every axis: all 8 mirrorings by default, or left-right only (docs/models.md)
    assert model.card.tta_mirror_axes("all") == [0, 1, 2] and model.card.tta_mirror_axes("left-right") == [0]
    weights = sum(p.stat().st_size for p in model.path.glob("fold_*.safetensors"))
    assert weights < 5 * 2**20  # float16, small enough for the wheel and the image


def test_models_info_shows_the_threshold_of_each_contrast(capsys):
    card = resolve_model(None).card
    assert models_main(["info", DEFAULT_MODEL]) == 0
    assert f"threshold {card.threshold}, T1w {card.contrast_thresholds['T1w']}" in capsys.readouterr().out


def test_default_model_predicts_probabilities_on_the_input_grid():
    model = resolve_model(None)
    image = make_phantom()
    segmenter = Segmenter(model.path, model.card, InferenceSettings(device="cpu", tta=False, progress=False))
    probabilities = segmenter.predict(np.asarray(image.dataobj, np.float32), (1.0, 1.0, 1.0))
    assert probabilities.shape == (2, *image.shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
