"""``mednet-pvs-train`` end to end on two tiny labelled phantoms: model, splits, resume, fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mednet_pvs.cli.train import main
from mednet_pvs.errors import UsageError
from mednet_pvs.inference.engine import InferenceSettings, Segmenter
from mednet_pvs.models.registry import resolve_model
from mednet_pvs.train.checkpoint import checkpoint_json, load_checkpoint
from mednet_pvs.train.config import TrainConfig
from mednet_pvs.train.run import initial_weights, starting_point
from mednet_pvs.train.thresholds import DEFAULT_THRESHOLDS
from mednet_pvs.train.transfer import finetune_parameter_names
from tests.bids_factory import write_image
from tests.conftest import make_phantom

TINY = ["--folds", "2", "--epochs", "2", "--iterations-per-epoch", "2", "--batch-size", "2",
        "--patch-size", "32", "32", "32", "--init-filters", "4", "--deterministic", "--threads", "1",
        "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_globals():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_flush_denormal(False)


def _bids(
    root: Path, subjects: tuple[str, ...] = ("01", "02"), labels: tuple[str, ...] = ("01", "02")
) -> Path:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny phantoms", "BIDSVersion": "1.10.0"})
    )
    for index, subject in enumerate(subjects):
        img = make_phantom((32, 32, 32), seed=index)
        write_image(root / f"sub-{subject}/anat/sub-{subject}_T2w.nii.gz", img)
        if subject in labels:
            mask = nib.Nifti1Image((img.get_fdata() >= 250).astype(np.uint8), img.affine)
            write_image(
                root / f"derivatives/groundtruth/sub-{subject}/anat/sub-{subject}_desc-pvs_mask.nii.gz", mask
            )
    return root


def _add_t1w(bids: Path) -> None:
    """Give every subject a T1w image: its T2w with intensities reversed inside the head (0 outside)."""
    for t2w in sorted(bids.glob("sub-*/anat/*_T2w.nii.gz")):
        img = nib.load(t2w)
        data = img.get_fdata()
        t1w = np.where(data > 0, data.max() + 100.0 - data, 0.0).astype(np.float32)
        write_image(t2w.with_name(t2w.name.replace("_T2w", "_T1w")), nib.Nifti1Image(t1w, img.affine))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(bids, model, work) of a straight 2-fold, 2-epoch run with float16 export."""
    base = tmp_path_factory.mktemp("train")
    bids = _bids(base / "bids")
    _add_t1w(bids)
    model = base / "tiny-pvs"
    assert main([str(bids), str(model), *TINY, "--save-dtype", "float16", "--inverted-contrasts", "T1w"]) == 0
    return bids, model, base / "tiny-pvs.work"


def test_model_directory_loads_and_predicts(trained):
    _, model, work = trained
    resolved = resolve_model(str(model))
    card = resolved.card
    assert card.folds == [0, 1] and card.contrasts == ["T2w"] and card.patch_size == [32, 32, 32]
    assert card.inverted_contrasts == ["T1w"]
    assert card.architecture["init_filters"] == 4 and card.spacing == [1.0, 1.0, 1.0]
    assert card.threshold in DEFAULT_THRESHOLDS
    assert load_file(str(model / "fold_0.safetensors"))["stem.weight"].dtype == torch.float16
    validation = card.metrics["validation"]
    assert set(validation["folds"]) == {"0", "1"} and all(
        f["n_cases"] == 1 for f in validation["folds"].values()
    )
    assert all(0.0 <= f["dice"] <= 1.0 for f in validation["folds"].values())
    assert validation["min_cluster_size_mm3"] == 2.0  # scored as the app writes its masks
    # The reversed T1w, z-scored and negated, is exactly the T2w's network input: the same scores.
    inverted = card.metrics["validation_inverted"]["T1w"]
    assert {k: f["cases"] for k, f in inverted["folds"].items()} == {
        k: {case.replace("_T2w", "_T1w"): v for case, v in f["cases"].items()}
        for k, f in validation["folds"].items()
    }
    assert card.contrast_thresholds == {"T1w": card.threshold}
    training = card.provenance["training"]
    assert training["dataset"]["name"] == "tiny phantoms" and training["subjects"] == ["sub-01", "sub-02"]
    assert training["epochs_completed"] == {"0": 2, "1": 2} and training["complete"] is True
    assert set(training["training_seconds"]) == {"0", "1"} and all(
        0.0 < t < training["seconds_this_invocation"] for t in training["training_seconds"].values()
    )
    assert training["config"]["epochs"] == 2 and training["config"]["save_dtype"] == "float16"
    assert sorted(p.name for p in model.iterdir()) == [
        "fold_0.safetensors",
        "fold_1.safetensors",
        "model.json",
    ]
    assert (work / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    segmenter = Segmenter(resolved.path, card, InferenceSettings(device="cpu", tta=False, progress=False))
    image = make_phantom((20, 24, 28), seed=5).get_fdata().astype(np.float32)
    probabilities = segmenter.predict(image, (1.0, 1.0, 1.0))
    assert probabilities.shape == (2, 20, 24, 28) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


def test_splits_are_disjoint_and_reused_on_rerun(trained):
    bids, model, work = trained
    splits = json.loads((work / "splits.json").read_text())
    vals = [set(f["val"]) for f in splits["folds"]]
    assert vals[0].isdisjoint(vals[1]) and vals[0] | vals[1] == {"sub-01_T2w", "sub-02_T2w"}
    before = (work / "splits.json").stat().st_mtime_ns
    checkpoint = load_checkpoint(checkpoint_json(work / "fold_0", "latest"))
    assert (
        main([str(bids), str(model), *TINY, "--save-dtype", "float16", "--resume"]) == 0
    )  # nothing left to train
    assert (work / "splits.json").stat().st_mtime_ns == before
    assert load_checkpoint(checkpoint_json(work / "fold_0", "latest")).epoch == checkpoint.epoch == 2


def test_resume_continues_exactly_where_a_straight_run_is(trained, tmp_path):
    bids, _, straight_work = trained
    model = tmp_path / "resumed"
    args = [str(bids), str(model), *TINY, "--fold", "0"]
    assert main([*args, "--stop-after-epochs", "1"]) == 0
    halfway = load_checkpoint(checkpoint_json(tmp_path / "resumed.work/fold_0", "latest"))
    assert halfway.epoch == 1 and len(halfway.state["history"]["epoch"]) == 1
    assert int(halfway.optimizer["state"][0]["step"]) == 2  # two iterations of AdamW
    assert json.loads((model / "model.json").read_text())["provenance"]["training"]["complete"] is False

    assert main([*args, "--resume"]) == 0
    resumed = load_checkpoint(checkpoint_json(tmp_path / "resumed.work/fold_0", "latest"))
    reference = load_checkpoint(checkpoint_json(straight_work / "fold_0", "latest"))
    assert resumed.epoch == 2 and int(resumed.optimizer["state"][0]["step"]) == 4
    assert resumed.state["history"]["train_loss"] == reference.state["history"]["train_loss"]
    seconds = json.loads((model / "model.json").read_text())["provenance"]["training"]["training_seconds"]
    assert seconds == {"0": round(sum(resumed.state["history"]["seconds"]), 1)}  # both invocations' epochs
    assert all(torch.equal(resumed.model[k], reference.model[k]) for k in reference.model)


def test_last_epoch_is_fast_validated_only_when_it_may_be_exported(trained, tmp_path):
    bids, _, straight_work = trained  # --export last, --val-every 5 > 2 epochs: no fast validation
    straight = load_checkpoint(checkpoint_json(straight_work / "fold_0", "latest"))
    assert straight.state["history"]["val_dice"] == [None, None] and straight.state["best_epoch"] is None
    assert not checkpoint_json(straight_work / "fold_0", "best").is_file()

    assert main([str(bids), str(tmp_path / "best"), *TINY, "--fold", "0", "--export", "best"]) == 0
    work = tmp_path / "best.work/fold_0"
    history = load_checkpoint(checkpoint_json(work, "latest")).state["history"]
    assert history["val_dice"][0] is None and 0.0 <= history["val_dice"][1] <= 1.0
    assert load_checkpoint(checkpoint_json(work, "best")).epoch == 2  # the first average is the best


def test_resume_refuses_changed_training_settings(trained, tmp_path, capsys):
    bids, _, _ = trained
    model = tmp_path / "m"
    assert main([str(bids), str(model), *TINY, "--fold", "0", "--stop-after-epochs", "1"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main([str(bids), str(model), *TINY, "--fold", "0", "--resume", "--learning-rate", "0.01"])
    assert exit_info.value.code == 2 and "learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(bids), str(model), *TINY, "--fold", "0"])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err


def test_finetuning_changes_only_the_last_decoder_stage(trained, tmp_path):
    bids, source, _ = trained
    model = tmp_path / "tuned"
    args = [str(bids), str(model), *TINY, "--fold", "0", "--epochs", "1", "--finetune-from", str(source),
            "--trainable-decoder-layers", "1"]  # fmt: skip
    assert main(args) == 0
    before = {k: v.float() for k, v in load_file(str(source / "fold_0.safetensors")).items()}
    after = load_file(str(model / "fold_0.safetensors"))
    card = json.loads((model / "model.json").read_text())
    assert card["architecture"] == json.loads((source / "model.json").read_text())["architecture"]
    assert card["provenance"]["training"]["initialisation"]["method"] == "finetune"
    from mednet_pvs.models.networks import build_network

    trainable = set(finetune_parameter_names(build_network(card["architecture"]), 1))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= trainable


def test_finetuning_without_a_layer_count_trains_the_encoder_too(trained, tmp_path, capsys):
    bids, source, _ = trained
    model = tmp_path / "continued"
    assert (
        main([str(bids), str(model), *TINY, "--fold", "0", "--epochs", "1", "--finetune-from", str(source)])
        == 0
    )
    before = load_file(str(source / "fold_0.safetensors"))
    after = load_file(str(model / "fold_0.safetensors"))
    assert not torch.equal(before["stem.weight"].float(), after["stem.weight"].float())
    assert not torch.equal(
        before["enc_stages.0.0.conv1.weight"].float(), after["enc_stages.0.0.conv1.weight"].float()
    )
    with pytest.raises(SystemExit):
        main([str(bids), str(tmp_path / "o"), *TINY, "--trainable-decoder-layers", "1"])
    assert "--trainable-decoder-layers needs --finetune-from" in capsys.readouterr().err


def test_upkern_start_builds_kernel_5_from_the_trained_model(trained):
    _, source, _ = trained
    config = TrainConfig(output_dir=source.parent / "k5", synthetic=2, upkern_from=str(source), kernel_size=5)
    start = starting_point(config)
    assert start.architecture["kernel_size"] == 5 and start.method == "upkern"
    assert {k: v for k, v in start.architecture.items() if k != "kernel_size"} == {
        k: v for k, v in resolve_model(str(source)).card.architecture.items() if k != "kernel_size"
    }
    state = initial_weights(start, fold=1)
    assert state["enc_stages.0.0.conv1.weight"].shape == (4, 1, 5, 5, 5)
    source_state = load_file(str(source / "fold_1.safetensors"))
    assert torch.equal(state["stem.weight"], source_state["stem.weight"].float())


def test_usage_errors_exit_2_and_name_the_problem(tmp_path, capsys):
    def fails(argv: list[str]) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "give a BIDS dataset, or --synthetic N" in fails([str(tmp_path / "out")])
    assert "multiples of 16" in fails(
        [str(tmp_path / "bids"), str(tmp_path / "out"), "--patch-size", "30", "32", "32"]
    )
    bids = _bids(tmp_path / "bids", subjects=("01", "02"), labels=("01",))
    err = fails([str(bids), str(tmp_path / "out"), *TINY])
    assert "no labels found" in err and str(bids / "sub-02/anat/sub-02_T2w.nii.gz") in err
    err = fails(
        [
            str(bids),
            str(tmp_path / "o2"),
            *TINY,
            "--participant-label",
            "01",
            "--finetune-from",
            "no-such-model",
            "--trainable-decoder-layers",
            "1",
        ]
    )
    assert "model 'no-such-model' not found" in err
    err = fails([str(bids), str(tmp_path / "o4"), *TINY, "--inverted-contrasts", "T2w"])
    assert "--inverted-contrasts ['T2w'] overlaps --contrasts ['T2w']" in err
    err = fails([str(bids), str(tmp_path / "o5"), *TINY, "--train-inverted"])
    assert "--train-inverted needs --inverted-contrasts" in err
    assert "-1 is negative" in fails([str(bids), str(tmp_path / "o6"), *TINY, "--min-cluster-size", "-1"])
    with pytest.raises(UsageError, match=r"--min-cluster-size -1\.0 must be at least 0"):
        TrainConfig(output_dir=tmp_path / "o7", synthetic=1, min_cluster_size=-1.0)
    if not torch.cuda.is_available():
        assert "no CUDA GPU is available" in fails(
            [str(bids), str(tmp_path / "o3"), *TINY, "--device", "cuda"]
        )


def test_an_inverted_contrast_without_images_keeps_the_main_threshold(tmp_path, caplog):
    bids = _bids(tmp_path / "bids")  # T2w only
    model = tmp_path / "out"
    assert (
        main([str(bids), str(model), *TINY, "--fold", "0", "--epochs", "1", "--inverted-contrasts", "T1w"])
        == 0
    )
    card = resolve_model(str(model)).card
    assert card.inverted_contrasts == ["T1w"] and card.contrast_thresholds == {}
    assert "validation_inverted" not in card.metrics
    assert "T1w is not validated read inverted" in caplog.text and "no T1w images found" in caplog.text


def test_train_inverted_trains_on_negated_images_and_scores_them_apart(tmp_path):
    bids = _bids(tmp_path / "bids")
    _add_t1w(bids)
    model = tmp_path / "out"
    args = [*TINY, "--fold", "0", "--epochs", "1", "--inverted-contrasts", "T1w", "--train-inverted"]
    assert main([str(bids), str(model), *args]) == 0
    card = resolve_model(str(model)).card
    assert card.contrasts == ["T2w"] and card.inverted_contrasts == ["T1w"]
    training = card.provenance["training"]
    assert training["contrasts"] == ["T2w"] and training["contrasts_trained_inverted"] == ["T1w"]
    assert {c["case"]: c.get("inverted", False) for c in training["dataset"]["cases"]} == {
        "sub-01_T2w": False,
        "sub-02_T2w": False,
        "sub-01_T1w-inverted": True,
        "sub-02_T1w-inverted": True,
    }
    # a subject's T2w and inverted T1w share a fold; the main validation scores the T2w alone
    splits = json.loads((tmp_path / "out.work" / "splits.json").read_text())
    validation = card.metrics["validation"]["folds"]["0"]
    inverted = card.metrics["validation_inverted"]["T1w"]["folds"]["0"]
    assert sorted(splits["folds"][0]["val"]) == sorted([*validation["cases"], *inverted["cases"]])
    assert validation["n_cases"] == 1 and inverted["n_cases"] == 1
    # The reversed T1w negated z-scores to the T2w's network input, in training and in validation
    # (where the engine must not negate it a second time): the same inputs and the same scores.
    prepared = next((tmp_path / "out.work" / "preprocessed").iterdir())
    for subject in ("sub-01", "sub-02"):
        np.testing.assert_allclose(
            np.load(prepared / f"{subject}_T1w-inverted_image.npy"),
            np.load(prepared / f"{subject}_T2w_image.npy"),
            atol=1e-5,
        )
    assert inverted["cases"] == {
        k.replace("_T2w", "_T1w-inverted"): v for k, v in validation["cases"].items()
    }
    assert card.contrast_thresholds == {"T1w": card.threshold}


def test_time_budget_too_short_for_an_epoch_writes_no_model(tmp_path, caplog):
    bids = _bids(tmp_path / "bids")
    model = tmp_path / "out"
    assert main([str(bids), str(model), *TINY, "--max-minutes", "0.0001"]) == 1
    assert not model.exists() and "no fold completed an epoch" in caplog.text
    assert (tmp_path / "out.work/splits.json").is_file()  # a later --resume starts from the prepared data


def test_label_grid_mismatch_exits_1_naming_both(tmp_path, caplog):
    bids = _bids(tmp_path / "bids")
    label = bids / "derivatives/groundtruth/sub-02/anat/sub-02_desc-pvs_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 32, 32), np.uint8), np.eye(4)), label)
    assert main([str(bids), str(tmp_path / "out"), *TINY]) == 1
    assert f"{label}: its grid" in caplog.text and str(bids / "sub-02/anat/sub-02_T2w.nii.gz") in caplog.text


def test_phantoms_on_the_fly_without_a_bids_dataset(tmp_path):
    settings = tmp_path / "phantoms.json"
    settings.write_text(json.dumps({"crop_mm": [32, 32, 32], "pvs_grade": 4}))
    model = tmp_path / "synth-pvs"
    argv = [str(model), "--synthetic", "2", "--synthetic-seed", "3", "--synthetic-config", str(settings),
            "--contrasts", "T2w", "T1w", *TINY, "--fold", "0", "--epochs", "1"]  # fmt: skip
    assert main(argv) == 0
    card = json.loads((model / "model.json").read_text())
    synthetic = card["provenance"]["training"]["synthetic"]
    from mednet_pvs.synth import subject_seed

    # numbered from 1, like the subjects of mednet-pvs-synth
    assert synthetic["seeds"] == sorted(subject_seed(3, i) for i in range(1, 3))
    assert synthetic["settings"]["crop_mm"] == [32, 32, 32] and synthetic["generator"].startswith(
        "mednet_pvs.synth"
    )
    assert card["contrasts"] == ["T2w", "T1w"] and card["folds"] == [0]
    assert sorted(p.name for p in (tmp_path / "synth-pvs.work/generated").iterdir()) == sorted(
        f"synth-{seed}_{c}.npz" for seed in synthetic["seeds"] for c in ("T2w", "T1w")
    )
    assert card["metrics"]["validation"]["folds"]["0"]["n_cases"] == 2  # one phantom, two contrasts
