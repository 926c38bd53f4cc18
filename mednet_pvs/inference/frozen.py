"""Frozen TorchScript graphs of the networks for CPU inference.

Tracing a network for the window shape, freezing it and running ``optimize_for_inference`` makes
PyTorch run every convolution through oneDNN with its weights packed once, instead of repacking
them in every call (MedNeXt's depthwise 3-D convolutions are slow otherwise). GroupNorm stays in
PyTorch's dense kernel, so there is none of the channels-last precision loss described in
docs/models.md. The gain is largest for small windows and widths (docs/models.md, measured by
benchmarks/frozen_graphs.py and inference_compare.py); outputs match eager mode to float32 rounding
(tests/test_frozen.py).

``torch.jit.freeze`` and ``optimize_for_inference`` are deprecated in favour of ``torch.compile``,
which on this CPU gained less per window on the bundled model's windows (1.12x, against 1.15-1.51x
frozen over two runs) after a 20 s cold compile (benchmarks/frozen_graphs.py). If tracing or
freezing fails (or a later PyTorch removes it), the eager network is used and the reason is logged;
a graph that freezes but fails on its first window is replaced by the eager network the same way
(:class:`mednet_pvs.inference.sliding_window.WindowPredictor`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["freeze_for_cpu"]

LOGGER = logging.getLogger(__name__)


def freeze_for_cpu(net: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` traced on ``example``'s shape, frozen and optimised for the CPU; ``net`` on failure.

    The result is only valid for inputs of ``example``'s shape. Its first call compiles the graph
    (and is where a graph PyTorch cannot run fails); no extra forward pass is spent checking it here.
    """
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            sample = torch.zeros(example.shape, dtype=example.dtype)
            traced = torch.jit.trace(net.eval(), sample, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    except Exception as exc:  # any tracing failure falls back to the eager network
        LOGGER.warning("could not freeze %s for the CPU (%s); running it eagerly", type(net).__name__, exc)
        return net
    return frozen
