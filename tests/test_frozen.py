"""Frozen oneDNN graphs for CPU inference: the same outputs as the eager networks, or the eager network."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mednet_pvs.inference import sliding_window
from mednet_pvs.inference.engine import InferenceSettings, Segmenter
from mednet_pvs.inference.frozen import freeze_for_cpu
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.generic_unet import generic_unet_architecture
from mednet_pvs.models.mednext import mednext_architecture
from mednet_pvs.models.networks import build_network
from tests.conftest import make_phantom

ARCHITECTURES = {
    "mednext": mednext_architecture("S", kernel_size=3, init_filters=4, deep_supervision=True),
    "generic_unet": generic_unet_architecture(
        4, [[2, 2, 2], [2, 2, 2]], [[3, 3, 3], [3, 3, 3], [3, 3, 3]], deep_supervision=True
    ),
}


@pytest.mark.parametrize("family", sorted(ARCHITECTURES))
def test_frozen_network_matches_eager(family: str) -> None:
    torch.manual_seed(0)
    net = build_network(ARCHITECTURES[family]).eval()
    x = torch.randn(1, 1, 32, 32, 32) * 3 + 50  # large mean, small spread: GroupNorm precision
    frozen = freeze_for_cpu(net, x)
    assert isinstance(frozen, torch.jit.ScriptModule)
    with torch.inference_mode():
        expected = net(x)
        got = frozen(x)
    assert got.shape == expected.shape == (1, 2, 32, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_network_that_cannot_be_traced_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    class _ReturnsText(nn.Module):
        def forward(self, x: torch.Tensor) -> str:
            return "not a tensor"

    net = _ReturnsText()
    with caplog.at_level(logging.WARNING):
        assert freeze_for_cpu(net, torch.zeros(1, 1, 4, 4, 4)) is net
    assert "could not freeze _ReturnsText for the CPU" in caplog.text


def test_segmenter_freezes_on_the_cpu_without_changing_results(tiny_model: Path) -> None:
    card = ModelCard.load(tiny_model)
    image = np.asarray(make_phantom().dataobj, np.float32)
    outputs = {}
    for freeze in (False, True):
        settings = InferenceSettings(device="cpu", tta=False, progress=False, freeze=freeze)
        segmenter = Segmenter(tiny_model, card, settings)
        outputs[freeze] = segmenter.predict(image, (1.0, 1.0, 1.0))
        frozen = list(segmenter.predictor._frozen.values())
        # one graph per fold for the (1, 1, 32, 32, 32) windows, none when eager
        assert len(frozen) == (2 if freeze else 0)
        assert all(isinstance(graph, torch.jit.ScriptModule) for graph in frozen)
    np.testing.assert_allclose(outputs[True], outputs[False], atol=1e-5)


def test_a_graph_failing_on_its_first_window_is_replaced_by_the_eager_network(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def _broken_graph(batch: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(batch.shape))
        raise RuntimeError("oneDNN kernel missing")

    monkeypatch.setattr(sliding_window, "freeze_for_cpu", lambda net, example: _broken_graph)
    torch.manual_seed(0)
    net = build_network(ARCHITECTURES["mednext"]).eval()
    predictor = sliding_window.WindowPredictor([net], torch.device("cpu"), freeze=True)
    batch = torch.randn(1, 1, 32, 32, 32)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        first = predictor(batch)
        second = predictor(batch)
        expected = torch.softmax(net(batch), 1)
    assert calls == [(1, 1, 32, 32, 32)]  # tried once, then the eager network for good
    assert predictor._frozen[(0, (1, 1, 32, 32, 32))] is net
    assert "frozen MedNeXt failed on its first window (oneDNN kernel missing)" in caplog.text
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
