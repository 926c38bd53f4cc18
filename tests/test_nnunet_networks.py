"""Imported networks reproduce the original nnU-Net v1 code's logits; the key mapping fits every size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.generic_unet import (
    build_generic_unet,
    convert_generic_unet_v1_state_dict,
    generic_unet_architecture,
)
from mednet_pvs.models.mednext import (
    MEDNEXT_SIZES,
    build_mednext,
    convert_mednext_v1_state_dict,
    mednext_v1_architecture,
    parse_mednext_trainer,
)
from mednet_pvs.models.networks import load_fold
from mednet_pvs.models.nnunet_v1 import find_v1_models, import_v1_models

DATA = Path(__file__).parent / "data" / "nnunet_v1"
SHAPES = json.loads((DATA / "full_size_state_dict_shapes.json").read_text())
INPUT_SEED = 20241120  # tests/data/nnunet_v1/derive.py: io_pairs' input comes from this seed


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    store = tmp_path_factory.mktemp("store")
    return {
        model: import_v1_models(DATA / model, store, name=model)[0]
        for model in ("mednext_tiny", "generic_unet_tiny")
    }


@pytest.mark.parametrize("model", ["mednext_tiny", "generic_unet_tiny"])
def test_imported_network_reproduces_original_logits(imported: dict[str, Path], model: str) -> None:
    card = ModelCard.load(imported[model])
    net = load_fold(card, imported[model], 0)
    reference = np.load(DATA / model / "io_subset.npz", allow_pickle=False)
    x = torch.from_numpy(
        np.random.RandomState(INPUT_SEED).randn(1, 1, 64, 64, 64).astype(np.float16).astype(np.float32)
    )
    with torch.no_grad():
        logits = net(x).numpy()
        assert logits.shape == (1, 2, 64, 64, 64)
        assert np.abs(logits[:, :, ::3, ::3, ::3] - reference["logits_fold0_eval"]).max() <= 1e-4
        net.train()  # deep-supervision heads (no running statistics, no dropout: train mode is deterministic)
        outputs = net(x)
        heads = list(outputs[1:]) if card.architecture["family"] == "mednext" else list(net.heads)
    assert [tuple(h.shape[2:]) for h in heads] == [(32,) * 3, (16,) * 3, (8,) * 3, (4,) * 3]
    assert np.abs(heads[0].numpy()[:, :, ::2, ::2, ::2] - reference["ds1_fold0_train"]).max() <= 1e-4
    for k in (2, 3, 4):
        assert np.abs(heads[k - 1].numpy() - reference[f"ds{k}_fold0_train"]).max() <= 1e-4


@pytest.mark.parametrize("trainer", sorted(SHAPES["mednext_v1"]))
def test_mednext_key_mapping_fits_full_size_networks(trainer: str) -> None:
    entry = SHAPES["mednext_v1"][trainer]
    state = {key: torch.empty(shape, device="meta") for key, shape in entry["state_dict"].items()}
    assert len(state) == entry["num_keys"]
    arch = mednext_v1_architecture(state, trainer)
    size, kernel = parse_mednext_trainer(trainer)  # type: ignore[misc]
    assert (arch["size"], arch["kernel_size"], arch["init_filters"]) == (size, kernel, 32)
    assert (
        arch["encoder_expansion_ratio"]
        + [arch["bottleneck_expansion_ratio"]]
        + arch["decoder_expansion_ratio"]
        == MEDNEXT_SIZES[size]["exp_r"]
    )
    assert arch["down_expansion_ratio"] == MEDNEXT_SIZES[size]["exp_r"][1:5]  # the v1 down-block quirk
    with torch.device("meta"):
        converted = convert_mednext_v1_state_dict(state, arch)
        expected = {k: tuple(v.shape) for k, v in build_mednext(arch).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert (
        sum(v.numel() for v in converted.values()) == entry["num_params"] - 1
    )  # minus the unused dummy_tensor


@pytest.mark.parametrize("plan_name", sorted(SHAPES["generic_unet_v1"]))
def test_generic_unet_key_mapping_fits_full_size_networks(plan_name: str) -> None:
    entry = SHAPES["generic_unet_v1"][plan_name]
    plan = entry["plan"]
    base = plan.get("base_num_features", 32)
    state = {key: torch.empty(shape, device="meta") for key, shape in entry["state_dict"].items()}
    arch = generic_unet_architecture(base, plan["pool_op_kernel_sizes"], plan["conv_kernel_sizes"])
    assert arch["features"] == [min(base * 2**i, 320) for i in range(6)]
    with torch.device("meta"):
        converted = convert_generic_unet_v1_state_dict(state, arch)
        net_state = build_generic_unet(arch).state_dict()
    canonical = {k: tuple(v.shape) for k, v in net_state.items() if not k.startswith("skip_layers.")}
    assert {k: tuple(v.shape) for k, v in converted.items()} == canonical
    added_head_biases = [
        k for k in converted if k.endswith(".bias") and k.startswith(("output_block", "deep_super"))
    ]
    assert len(added_head_biases) == 5
    n_params = sum(v.numel() for k, v in converted.items() if k not in added_head_biases)
    assert n_params == entry["num_params"]


def test_trainer_name_and_weights_must_agree() -> None:
    entry = SHAPES["mednext_v1"]["nnUNetTrainerV2_MedNeXt_L_kernel5"]
    state = {key: torch.empty(shape, device="meta") for key, shape in entry["state_dict"].items()}
    with pytest.raises(Exception, match=r"says MedNeXt-S kernel 3 .* weights have kernel 5"):
        mednext_v1_architecture(state, "nnUNetTrainerV2_MedNeXt_S_kernel3")


def test_fixture_folders_are_found_with_their_stage_and_folds() -> None:
    found = {model.task: model for model in find_v1_models(DATA)}
    assert sorted(found) == ["Task004_3DStratifiedSplits", "Task101_LabelsSpecificplusWP5FCV"]
    pingu = found["Task101_LabelsSpecificplusWP5FCV"]
    assert (pingu.trainer_from_folder, pingu.plans_from_folder) == (
        "nnUNetTrainerV2",
        "nnUNetPlansv2.1_trgSp_8x8x8",
    )
    assert sorted(pingu.folds) == [0, 1] and pingu.configuration == "3d_fullres"
