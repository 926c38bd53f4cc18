"""Start from an existing model: UpKern (kernel 3 -> 5) and fine-tuning of the last decoder stages.

UpKern (Roy et al. 2023, MedNeXt, Sec. 2.3) initialises a large-kernel MedNeXt from a trained
small-kernel one of the same architecture: every tensor is copied, except convolution kernels whose
spatial size differs, which are trilinearly resampled to the new size. We follow the authors' code
(``nnunet_mednext/run/load_weights.py``: ``F.interpolate(w, size, mode="trilinear")``, i.e.
``align_corners=False``), so the k5 centre tap equals the k3 centre tap and the outer taps repeat
the k3 border values (edge clamping).

Fine-tuning (as the BraTS MedNeXt work, which retrained decoder layers on new data) keeps the encoder,
the bottleneck and the first decoder stages frozen and trains the last ``N`` decoder stages (each an
up-sampling block plus its MedNeXt blocks), the final output head and the deep-supervision heads fed
by trainable stages. ``N = 0`` trains the output head alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from mednet_pvs.errors import ModelError
from mednet_pvs.models.card import fold_file_name
from mednet_pvs.models.networks import build_network, load_weights
from mednet_pvs.models.registry import ResolvedModel, resolve_model

__all__ = [
    "DECODER_STAGES",
    "finetune_parameter_names",
    "freeze_for_finetuning",
    "load_source_weights",
    "upkern_architecture",
    "upkern_state_dict",
]

LOGGER = logging.getLogger(__name__)

#: Decoder stages of MONAI's MedNeXt, deepest first.
DECODER_STAGES = 4


def load_source_weights(model: str, fold: int) -> tuple[ResolvedModel, dict[str, torch.Tensor], int]:
    """(model, float32 state dict, fold used): fold ``fold`` if the model has it, else its first fold."""
    resolved = resolve_model(model)
    if resolved.card.architecture.get("family") != "mednext":
        raise ModelError(
            f"{resolved.path}: is a {resolved.card.architecture.get('family')!r} model; "
            "UpKern and fine-tuning need a MedNeXt model"
        )
    used = fold if fold in resolved.card.folds else resolved.card.folds[0]
    if used != fold:
        LOGGER.info(
            "%s has no fold %d; starting fold %d from its fold %d", resolved.card.name, fold, fold, used
        )
    resolved.card.verify(resolved.path, folds=[used])
    path = resolved.path / fold_file_name(used)
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ModelError(f"{path}: cannot be read as safetensors ({exc})") from exc
    net = load_weights(build_network(resolved.card.architecture), state, path)  # fills aliases, checks fit
    return resolved, {k: v.float() for k, v in net.state_dict().items()}, used


def upkern_architecture(source_arch: Mapping[str, object], kernel_size: int) -> dict[str, object]:
    """The source architecture with a larger kernel; anything else would not be UpKern."""
    source_kernel = int(source_arch["kernel_size"])  # type: ignore[call-overload]
    if kernel_size <= source_kernel:
        raise ModelError(
            f"UpKern needs a larger kernel than the source's {source_kernel} "
            f"(got --kernel-size {kernel_size})"
        )
    return {**source_arch, "kernel_size": kernel_size}


def upkern_state_dict(source: Mapping[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """``target``'s state dict from ``source``: copies, trilinear resampling where kernel sizes differ."""
    out = {}
    for name, reference in target.state_dict().items():
        if name not in source:
            raise ModelError(f"UpKern: the source model has no tensor {name}; the architectures differ")
        tensor = source[name].float()
        if tensor.shape == reference.shape:
            out[name] = tensor.clone()
        elif tensor.ndim == 5 and tensor.shape[:2] == reference.shape[:2]:
            out[name] = F.interpolate(
                tensor, size=tuple(reference.shape[2:]), mode="trilinear", align_corners=False
            )
        else:
            raise ModelError(
                f"UpKern: {name} has shape {tuple(tensor.shape)} in the source, {tuple(reference.shape)} here"
            )
    return out


def finetune_parameter_names(net: nn.Module, trainable_stages: int) -> list[str]:
    """Names of the parameters trained when fine-tuning the last ``trainable_stages`` decoder stages."""
    if not 0 <= trainable_stages <= DECODER_STAGES:
        raise ValueError(f"trainable decoder stages must be in 0..{DECODER_STAGES}, got {trainable_stages}")
    first = DECODER_STAGES - trainable_stages
    prefixes = ["out_0."]
    prefixes += [
        f"{block}.{i}." for i in range(first, DECODER_STAGES) for block in ("up_blocks", "dec_stages")
    ]
    # deep-supervision head i reads the output of decoder stage i - 1
    prefixes += [f"out_blocks.{i}." for i in range(first + 1, DECODER_STAGES)]
    return [name for name, _ in net.named_parameters() if name.startswith(tuple(prefixes))]


def freeze_for_finetuning(net: nn.Module, trainable_stages: int) -> list[nn.Parameter]:
    """Freeze everything but :func:`finetune_parameter_names`; return the trainable parameters."""
    trainable = set(finetune_parameter_names(net, trainable_stages))
    params = []
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name in trainable)
        if name in trainable:
            params.append(parameter)
    LOGGER.info(
        "fine-tuning %d of %d parameter tensors (last %d decoder stages and heads)",
        len(params),
        len(list(net.parameters())),
        trainable_stages,
    )
    return params
