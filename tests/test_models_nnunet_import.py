"""Importing nnU-Net v1 model folders: every level gives the same model; unsafe or corrupt files refused."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from mednet_pvs.errors import ModelError, UsageError
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.networks import load_fold
from mednet_pvs.models.nnunet_v1 import import_v1_models
from mednet_pvs.models.safe_pickle import UnsafePickleError, load_checkpoint, load_pickle

DATA = Path(__file__).parent / "data" / "nnunet_v1"
TASKS = {
    "mednext_tiny": "Task004_3DStratifiedSplits",
    "generic_unet_tiny": "Task101_LabelsSpecificplusWP5FCV",
}


def trainer_dir(model: str) -> Path:
    (folder,) = (DATA / model / "nnUNet" / "3d_fullres" / TASKS[model]).iterdir()
    return folder


class _Exploit:
    """Pickles as a call to os.system (never executed by these tests: loading must refuse it)."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo this-should-never-run",))


@pytest.mark.parametrize("model", sorted(TASKS))
def test_every_folder_level_gives_the_same_model(tmp_path: Path, model: str) -> None:
    trainer = trainer_dir(model)
    levels = [DATA / model, DATA / model / "nnUNet" / "3d_fullres", trainer.parent, trainer]
    cards = []
    for index, level in enumerate(levels):
        (written,) = import_v1_models(level, tmp_path / f"level{index}", name="m")
        cards.append(ModelCard.load(written).to_dict())
    (written_all,) = import_v1_models(DATA, tmp_path / "all", task=TASKS[model], name="m")
    cards.append(ModelCard.load(written_all).to_dict())
    assert all(card == cards[0] for card in cards)
    card = cards[0]
    assert card["folds"] == [0, 1] and set(card["files"]) == {"fold_0.safetensors", "fold_1.safetensors"}
    assert card["provenance"]["source"] == str(trainer.resolve())
    assert card["provenance"]["task"] == TASKS[model]
    assert card["provenance"]["epochs"] == (
        {"0": 500, "1": 500} if model == "mednext_tiny" else {"0": 1000, "1": 1000}
    )
    (fold_only,) = import_v1_models(trainer / "fold_1", tmp_path / "fold", name="m")
    fold_card = ModelCard.load(fold_only).to_dict()
    assert fold_card["folds"] == [1]
    assert fold_card["files"] == {"fold_1.safetensors": card["files"]["fold_1.safetensors"]}
    differing = {k for k in card if card[k] != fold_card[k]}
    assert differing == {"folds", "files", "provenance"}
    assert {k for k in card["provenance"] if card["provenance"][k] != fold_card["provenance"][k]} == {
        "epochs"
    }


def test_cards_describe_the_nnunet_plans(tmp_path: Path) -> None:
    written = {p.name: ModelCard.load(p) for p in import_v1_models(DATA, tmp_path)}
    assert sorted(written) == [
        "task004_3dstratifiedsplits-mednext-l-k5",
        "task101_labelsspecificpluswp5fcv-nnunet",
    ]
    mednext = written["task004_3dstratifiedsplits-mednext-l-k5"]
    pingu = written["task101_labelsspecificpluswp5fcv-nnunet"]
    assert mednext.architecture["size"] == "L" and mednext.architecture["kernel_size"] == 5
    assert mednext.architecture["down_expansion_ratio"] == [4, 8, 8, 8]
    assert mednext.normalization == {"scheme": "zscore", "use_mask": True}
    assert pingu.normalization == {"scheme": "zscore", "use_mask": False}
    assert pingu.provenance["stage"] == 1  # 3d_fullres is the last of the two stages
    assert pingu.architecture["features"] == [2, 4, 8, 16, 32, 64]  # base_num_features from the plans
    for card in (mednext, pingu):
        assert card.spacing == [0.8, 0.8, 0.8] and card.patch_size == [128, 128, 128]
        assert card.axes == [2, 1, 0] and card.mirror_axes == [0, 1, 2]
        assert card.contrasts == ["T1w"] and card.labels == {"0": "background", "1": "PVS"}
        assert any("Nature Methods" in c for c in card.provenance["citation"])
    assert any("MedNeXt" in c for c in mednext.provenance["citation"])
    assert mednext.provenance["plans_identifier"] == "nnUNetPlansv2.1_trgSp_0.8x0.8x0.8"


def test_name_needs_a_single_model_and_task_selects_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"holds 2 models.*add --task"):
        import_v1_models(DATA, tmp_path, name="x")
    with pytest.raises(UsageError, match="no model matches --task 'Task999'"):
        import_v1_models(DATA, tmp_path, task="Task999")
    assert not any(tmp_path.iterdir())
    with pytest.raises(ModelError, match="no nnU-Net v1 model found"):
        import_v1_models(DATA / "input", tmp_path)


def test_existing_model_is_kept_unless_overwrite(tmp_path: Path) -> None:
    (first,) = import_v1_models(trainer_dir("generic_unet_tiny"), tmp_path, name="m")
    with pytest.raises(ModelError, match="already exists"):
        import_v1_models(trainer_dir("generic_unet_tiny"), tmp_path, name="m")
    assert import_v1_models(trainer_dir("generic_unet_tiny"), tmp_path, name="m", overwrite=True) == [first]


def _copy_trainer(tmp_path: Path, model: str) -> Path:
    copy = tmp_path / "src" / TASKS[model] / trainer_dir(model).name
    shutil.copytree(trainer_dir(model), copy)
    return copy


@pytest.mark.parametrize("file_name", ["model_final_checkpoint.model.pkl", "model_final_checkpoint.model"])
def test_pickle_with_foreign_global_is_refused_and_nothing_written(tmp_path: Path, file_name: str) -> None:
    source = _copy_trainer(tmp_path, "generic_unet_tiny")
    target = source / "fold_1" / file_name
    if file_name.endswith(".pkl"):
        target.write_bytes(pickle.dumps({"name": "nnUNetTrainerV2", "init": _Exploit()}))
    else:
        torch.save({"state_dict": {}, "epoch": _Exploit()}, target)
    store = tmp_path / "store"
    with pytest.raises(UnsafePickleError) as caught:
        import_v1_models(source, store)
    assert str(target) in str(caught.value) and "'posix.system'" in str(caught.value)
    assert "--trust-pickle" in str(caught.value)
    assert not store.exists() or not any(store.iterdir())


def test_safe_loaders_read_genuine_files_and_trust_reads_the_same() -> None:
    fold = trainer_dir("mednext_tiny") / "fold_0"
    info = load_pickle(fold / "model_final_checkpoint.model.pkl")
    assert info["name"] == "nnUNetTrainerV2_MedNeXt_L_kernel5_lr_3e_4_500epochs"
    checkpoint = load_checkpoint(fold / "model_final_checkpoint.model")
    trusted = load_checkpoint(fold / "model_final_checkpoint.model", trust=True)
    assert checkpoint["epoch"] == trusted["epoch"] == 500
    assert all(torch.equal(v, trusted["state_dict"][k]) for k, v in checkpoint["state_dict"].items())


def test_truncated_checkpoint_is_reported_with_its_name(tmp_path: Path) -> None:
    source = _copy_trainer(tmp_path, "generic_unet_tiny")
    target = source / "fold_0" / "model_final_checkpoint.model"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"{target}: cannot be read as a PyTorch checkpoint"):
        import_v1_models(source, tmp_path / "store")


def test_corrupted_weight_file_is_refused(tmp_path: Path) -> None:
    (written,) = import_v1_models(trainer_dir("generic_unet_tiny"), tmp_path, name="m")
    card = ModelCard.load(written)
    weights = written / "fold_0.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"fold_0.safetensors: sha256 mismatch"):
        load_fold(card, written, 0)
    load_fold(card, written, 1)  # the other fold is intact


def test_aliased_dynunet_tensors_are_stored_once(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    (written,) = import_v1_models(trainer_dir("generic_unet_tiny"), tmp_path, name="m")
    keys = set(load_file(str(written / "fold_0.safetensors")))
    assert not any(k.startswith("skip_layers.") for k in keys)
    assert "input_block.conv1.conv.bias" in keys and "upsamples.4.transp_conv.conv.weight" in keys
