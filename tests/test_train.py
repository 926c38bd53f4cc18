"""Training building blocks: UpKern, fine-tuning, thresholds, splits, checkpoints, data matching, sampling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mednet_pvs.errors import InputImageError, ModelError, UsageError
from mednet_pvs.inference.preprocessing import preprocess_case
from mednet_pvs.models.mednext import mednext_architecture
from mednet_pvs.models.networks import build_network
from mednet_pvs.train.augment import Augmentation, PatchDataset, sampling_size, training_transforms
from mednet_pvs.train.checkpoint import Checkpoint, checkpoint_json, load_checkpoint, save_checkpoint
from mednet_pvs.train.data import Sample, find_labelled_images, read_label
from mednet_pvs.train.prepare import Preprocessing, network_label, prepare_case
from mednet_pvs.train.splits import load_or_create_splits, make_splits
from mednet_pvs.train.thresholds import choose_threshold, threshold_scores
from mednet_pvs.train.trainer import build_loss, deep_supervision_weights
from mednet_pvs.train.transfer import finetune_parameter_names, freeze_for_finetuning, upkern_state_dict
from tests.bids_factory import write_image
from tests.conftest import make_phantom


def tiny_net(kernel: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(mednext_architecture("S", kernel_size=kernel, init_filters=4, deep_supervision=True))


# ------------------------------------------------------------------------------------------ UpKern
def test_upkern_resamples_kernels_trilinearly_as_the_mednext_code():
    """k3 -> k5 along one axis: taps at source positions 0 (clamped), 0.4, 1, 1.6, 2 (clamped)."""
    source_net, target_net = tiny_net(3), tiny_net(5)
    state = source_net.state_dict()
    name = "enc_stages.0.0.conv1.weight"  # depthwise (4, 1, 3, 3, 3)
    profile = torch.tensor([1.0, 2.0, 4.0])
    state[name] = profile.view(1, 1, 3, 1, 1).expand(4, 1, 3, 3, 3).clone()
    upkerned = upkern_state_dict(state, target_net)

    assert upkerned[name].shape == (4, 1, 5, 5, 5)
    expected = torch.tensor([1.0, 1.4, 2.0, 3.2, 4.0])
    assert torch.allclose(upkerned[name][2, 0, :, 3, 1], expected, atol=1e-6)
    for key, value in state.items():
        if value.shape == upkerned[key].shape:
            assert torch.equal(value, upkerned[key]), key  # everything else is copied bit for bit
        else:
            assert value.shape[2:] == (3, 3, 3) and upkerned[key].shape[2:] == (5, 5, 5), key
            assert torch.allclose(upkerned[key][..., 2, 2, 2], value[..., 1, 1, 1], atol=1e-6), (
                key
            )  # centre tap kept
    target_net.load_state_dict(upkerned, strict=True)


def test_upkern_refuses_other_architectures():
    wider = build_network(mednext_architecture("S", kernel_size=5, init_filters=8))
    with pytest.raises(ModelError, match=r"stem\.weight has shape"):
        upkern_state_dict(tiny_net(3).state_dict(), wider)


# ------------------------------------------------------------------------------------------ fine-tuning
def test_finetune_names_follow_decoder_stages():
    net = tiny_net()

    def modules(n):
        return {
            name.split(".")[0] if name.startswith("out_0.") else ".".join(name.split(".")[:2])
            for name in finetune_parameter_names(net, n)
        }

    assert modules(0) == {"out_0"}
    assert modules(1) == {"out_0", "up_blocks.3", "dec_stages.3"}
    assert modules(2) == {
        "out_0",
        "up_blocks.2",
        "up_blocks.3",
        "dec_stages.2",
        "dec_stages.3",
        "out_blocks.3",
    }


def test_finetune_step_changes_only_the_last_decoder_stages():
    net = tiny_net().train()
    trainable = set(finetune_parameter_names(net, 1))
    params = freeze_for_finetuning(net, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    torch.manual_seed(1)
    image = torch.randn(2, 1, 32, 32, 32)
    label = (torch.rand(2, 1, 32, 32, 32) > 0.9).float()
    build_loss(5)(list(net(image)), label).backward()
    optimizer.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable
    assert all(torch.equal(before[k], after[k]) for k in before if k not in trainable)


# ------------------------------------------------------------------------------------------ loss
def test_deep_supervision_weights_are_nnunets():
    assert deep_supervision_weights(5) == pytest.approx(
        [1 / 1.875, 0.5 / 1.875, 0.25 / 1.875, 0.125 / 1.875, 0.0]
    )
    assert deep_supervision_weights(1) == [1.0]


# ------------------------------------------------------------------------------------------ thresholds
def _constructed_case() -> tuple[np.ndarray, np.ndarray]:
    """PVS: 100 voxels at p 0.8, 20 at 0.32; background: 50 at 0.28, the rest at 0.05 -> best t = 0.3."""
    probability = np.full(2000, 0.05, np.float32)
    label = np.zeros(2000, np.uint8)
    label[:120] = 1
    probability[:100], probability[100:120], probability[120:170] = 0.8, 0.32, 0.28
    return probability.reshape(10, 20, 10), label.reshape(10, 20, 10)


def test_threshold_tuning_picks_the_known_best_dice():
    probability, label = _constructed_case()
    scores = threshold_scores(probability, label)
    threshold, mean_dice = choose_threshold([scores, scores], "dice")
    assert threshold == 0.3
    index = {round(t, 2): i for i, t in enumerate(scores.thresholds)}
    assert mean_dice[index[0.3]] == 1.0
    assert mean_dice[index[0.25]] == pytest.approx(240 / 290)  # TP 120, FP 50
    assert mean_dice[index[0.5]] == pytest.approx(200 / 220)  # TP 100, FN 20
    assert mean_dice[index[0.8]] == 0.0  # strictly above: 0.8 is not PVS at threshold 0.8
    at_half = scores.at(0.5)
    assert (at_half["dice"], at_half["sensitivity"], at_half["precision"]) == pytest.approx(
        (200 / 220, 100 / 120, 1.0)
    )


def _three_blobs() -> tuple[np.ndarray, np.ndarray]:
    """PVS blobs A (p 0.9), B (0.48), C (0.2), 8 voxels each; two 1-voxel false blobs at 0.4."""
    probability = np.full((20, 20, 20), 0.01, np.float32)
    label = np.zeros((20, 20, 20), np.uint8)
    for corner, p in (((2, 2, 2), 0.9), ((10, 2, 2), 0.48), ((2, 10, 2), 0.2)):
        box = tuple(slice(c, c + 2) for c in corner)
        label[box], probability[box] = 1, p
    probability[15, 15, 15] = probability[15, 5, 15] = 0.4
    return probability, label


def test_threshold_tuning_by_cluster_f1():
    probability, label = _three_blobs()
    scores = threshold_scores(probability, label)
    f1 = dict(zip(scores.thresholds.round(2), scores.series("cluster_f1"), strict=True))
    assert f1[0.15] == pytest.approx(0.75)  # 3/3 found, 3 of 5 clusters true
    assert f1[0.3] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 2/3 found, 2 of 4 true
    assert f1[0.4] == f1[0.45] == pytest.approx(0.8)  # 2/3 found, no false cluster
    assert f1[0.5] == pytest.approx(0.5) and f1[0.9] == 0.0
    assert choose_threshold([scores], "cluster_f1")[0] == 0.45
    assert choose_threshold([scores], "dice")[0] == 0.15  # voxel Dice 48/50 below 0.2


def test_threshold_scores_drop_small_clusters_as_the_app_does():
    """The two 1-voxel false blobs vanish under a 2 mm^3 minimum at 1 mm^3 per voxel."""
    probability, label = _three_blobs()
    kept = threshold_scores(probability, label, min_cluster_mm3=2.0, voxel_volume_mm3=1.0)
    assert kept.at(0.3)["cluster_f1"] == pytest.approx(0.8)  # 2/3 found, both clusters true
    assert kept.at(0.3)["dice"] == pytest.approx(32 / 40)  # TP 16, FN 8, no false voxel left
    assert kept.at(0.15)["dice"] == 1.0
    # at 0.3 mm^3 a voxel the 2 mm^3 minimum needs 7 voxels: the 8-voxel blobs stay, the 1-voxel go
    assert threshold_scores(probability, label, [0.3], 2.0, 0.3).at(0.3)["cluster_f1"] == pytest.approx(0.8)
    # at 0.2 mm^3 it needs 10 voxels: every cluster goes
    assert threshold_scores(probability, label, [0.3], 2.0, 0.2).at(0.3)["dice"] == 0.0


def test_threshold_ties_go_to_the_one_nearest_one_half():
    probability = np.array([0.9, 0.9, 0.1, 0.1], np.float32).reshape(1, 1, 4)
    label = np.array([1, 1, 0, 0]).reshape(1, 1, 4)
    threshold, mean_dice = choose_threshold([threshold_scores(probability, label)])
    assert mean_dice[0] == pytest.approx(4 / 6)  # t = 0.05 keeps the two 0.1 voxels
    assert np.all(mean_dice[1:-2] == 1.0)  # 0.1 ... 0.85
    assert np.all(mean_dice[-2:] == 0.0)  # 0.9 is not above 0.9 or 0.95
    assert threshold == 0.5


# ------------------------------------------------------------------------------------------ splits
def test_splits_group_subjects_are_disjoint_and_reused(tmp_path):
    subject_of_case = {f"sub-{s}_ses-{k}_T2w": f"sub-{s}" for s in range(7) for k in (1, 2)}
    folds = make_splits(subject_of_case, 3, seed=12345)
    vals = [set(f["val"]) for f in folds]
    assert sum(len(v) for v in vals) == len(subject_of_case) and set().union(*vals) == set(subject_of_case)
    assert all(a.isdisjoint(b) for i, a in enumerate(vals) for b in vals[i + 1 :])
    for fold in folds:
        assert set(fold["train"]) == set(subject_of_case) - set(fold["val"])
        assert {subject_of_case[c] for c in fold["train"]}.isdisjoint(
            {subject_of_case[c] for c in fold["val"]}
        )

    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, subject_of_case, 3, seed=1)
    saved = path.read_text()
    assert load_or_create_splits(path, subject_of_case, 3, seed=999) == first  # the file wins over the seed
    assert path.read_text() == saved
    with pytest.raises(UsageError, match="new: \\['sub-9_T2w'\\]"):
        load_or_create_splits(path, {**subject_of_case, "sub-9_T2w": "sub-9"}, 3, seed=1)
    with pytest.raises(UsageError, match="3 folds need at least 3 subjects"):
        make_splits({"a": "s1", "b": "s2"}, 3, seed=0)


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip(tmp_path):
    net = tiny_net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    build_loss(5)(list(net.train()(torch.randn(1, 1, 32, 32, 32))), torch.zeros(1, 1, 32, 32, 32)).backward()
    optimizer.step()
    save_checkpoint(
        tmp_path, "latest", Checkpoint(3, net.state_dict(), optimizer.state_dict(), {"history": [1.5]})
    )
    save_checkpoint(
        tmp_path, "latest", Checkpoint(4, net.state_dict(), optimizer.state_dict(), {"history": [1.5, 1.2]})
    )
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["checkpoint_latest_e00004.safetensors"]
    loaded = load_checkpoint(checkpoint_json(tmp_path, "latest"))
    assert loaded.epoch == 4 and loaded.state == {"history": [1.5, 1.2]}
    assert all(torch.equal(loaded.model[k], v) for k, v in net.state_dict().items())
    restored = torch.optim.AdamW(tiny_net().parameters(), lr=1e-3)
    restored.load_state_dict(loaded.optimizer)
    original = optimizer.state_dict()
    assert restored.state_dict()["param_groups"] == original["param_groups"]
    for index, values in original["state"].items():
        assert all(
            torch.equal(restored.state_dict()["state"][index][key], value) for key, value in values.items()
        )


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_loader_never_unpickles(tmp_path):
    save_checkpoint(tmp_path, "latest", Checkpoint(1, tiny_net().state_dict()))
    json_path = checkpoint_json(tmp_path, "latest")
    record = json.loads(json_path.read_text())
    tensor_path = tmp_path / record["tensors"]
    marker = tmp_path / "pwned"
    tensor_path.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    with pytest.raises(ModelError, match="sha256 differs"):
        load_checkpoint(json_path)
    from mednet_pvs.models.card import sha256sum

    record["sha256"] = sha256sum(tensor_path)  # a forger who also rewrote the JSON
    json_path.write_text(json.dumps(record))
    with pytest.raises(ModelError, match=f"{tensor_path}: not a safetensors file"):
        load_checkpoint(json_path)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ data
def _phantom_with_label(path: Path, seed: int, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    img = make_phantom((32, 32, 32), affine=affine, seed=seed)
    write_image(path, img)
    return img


def _labelled_bids(root: Path) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    for rel in (
        "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_acq-hr_T2w.nii.gz",
    ):
        img = _phantom_with_label(root / rel, seed=len(rel))
        subject, session = rel.split("/")[:2]
        name = f"{subject}_{session}_desc-pvs_mask.nii.gz"
        write_image(
            root / "derivatives/groundtruth" / subject / session / "anat" / name,
            nib.Nifti1Image((img.get_fdata() >= 250).astype(np.uint8), img.affine),
        )
    return root


def test_labels_are_matched_by_entities(tmp_path):
    root = _labelled_bids(tmp_path / "bids")
    cases = find_labelled_images(root, root / "derivatives/groundtruth", ["T2w"])
    assert [(c.case_id, c.subject, c.label_path.name) for c in cases] == [
        ("sub-01_ses-1_T2w", "sub-01", "sub-01_ses-1_desc-pvs_mask.nii.gz"),
        ("sub-01_ses-2_T2w", "sub-01", "sub-01_ses-2_desc-pvs_mask.nii.gz"),
        ("sub-02_ses-1_acq-hr_T2w", "sub-02", "sub-02_ses-1_desc-pvs_mask.nii.gz"),  # no acq: fits any acq
    ]
    (root / "derivatives/groundtruth/sub-01/ses-2/anat/sub-01_ses-2_desc-pvs_mask.nii.gz").unlink()
    with pytest.raises(UsageError, match=r"for 1 image\(s\):\n  .*sub-01_ses-2_T2w.nii.gz"):
        find_labelled_images(root, root / "derivatives/groundtruth", ["T2w"])


def test_label_on_another_grid_names_both_files(tmp_path):
    image_path = tmp_path / "sub-01_T2w.nii.gz"
    image = _phantom_with_label(image_path, seed=0)
    label_path = tmp_path / "sub-01_desc-pvs_mask.nii.gz"
    shifted = image.affine.copy()
    shifted[0, 3] += 1.0
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 32), np.uint8), shifted), label_path)
    with pytest.raises(
        InputImageError, match=f"{label_path}: its grid .* differs from the grid of its image {image_path}"
    ):
        read_label(label_path, image, image_path)
    nib.save(nib.Nifti1Image(np.full((32, 32, 32), 0.5, np.float32), image.affine), label_path)
    with pytest.raises(InputImageError, match="non-negative integers"):
        read_label(label_path, image, image_path)


def test_prepared_case_is_the_engines_input_with_an_aligned_mask():
    img = make_phantom((40, 36, 30), affine=np.diag([1.0, 1.0, 2.0, 1.0]), seed=3)
    data = img.get_fdata().astype(np.float32)
    sample = Sample(data, (data >= 250).astype(np.uint8), (1.0, 1.0, 2.0))
    settings = Preprocessing(axes=(2, 1, 0), spacing=(1.0, 1.0, 1.0), use_mask=True)
    prepared = prepare_case("c", sample, settings)
    engine = preprocess_case(np.transpose(data, [2, 1, 0])[None], np.array([2.0, 1.0, 1.0]), np.ones(3), True)
    np.testing.assert_array_equal(prepared.image, engine.data)
    assert prepared.label.shape == prepared.image.shape and prepared.label.dtype == np.uint8
    inside = prepared.image[prepared.label > 0]
    assert inside.size > 0 and inside.min() > np.percentile(prepared.image[prepared.label == 0], 99)
    np.testing.assert_array_equal(np.sort(prepared.foreground), np.flatnonzero(prepared.label[0]))


# ------------------------------------------------------------------------------------------ sampling
def test_sampling_size_covers_rotation_and_zoom_out():
    assert sampling_size([64, 32, 48], Augmentation(rotation_deg=0, scale=(1.0, 1.0))) == [64, 32, 48]
    assert sampling_size([64, 64, 64], Augmentation(rotation_deg=0, scale=(0.7, 1.4))) == [90, 90, 90]
    rotated = sampling_size([64, 64, 64], Augmentation(rotation_deg=30, scale=(0.7, 1.4)))
    assert all(s >= int(64 * (np.cos(np.pi / 6) + np.sin(np.pi / 6)) * 1.4) for s in rotated)


def test_patches_are_reproducible_and_foreground_oversampled():
    img = make_phantom((48, 40, 36), seed=1)
    data = img.get_fdata().astype(np.float32)
    prepared = prepare_case(
        "c",
        Sample(data, (data >= 250).astype(np.uint8), (1.0, 1.0, 1.0)),
        Preprocessing((0, 1, 2), (1.0, 1.0, 1.0), True),
    )
    draws = np.array([[0, seed] for seed in range(6)])
    always = PatchDataset([prepared], training_transforms([16, 16, 16], Augmentation(), 1.0), draws)
    again = PatchDataset([prepared], training_transforms([16, 16, 16], Augmentation(), 1.0), draws)
    for index in range(len(draws)):
        image, label = always[index]
        assert image.shape == (1, 16, 16, 16) and label.dtype == torch.uint8
        assert label.sum() > 0  # foreground fraction 1: every patch holds PVS
        assert torch.equal(image, again[index][0]) and torch.equal(label, again[index][1])


# ------------------------------------------------------------------------------------------ phantoms
def test_phantom_generators_share_one_subject_across_contrasts():
    from mednet_pvs.synth import subject_seed
    from mednet_pvs.train.synthetic import phantom_generators, phantom_seeds

    # sub-01..03 of mednet-pvs-synth --seed 7
    assert phantom_seeds(3, 7) == [subject_seed(7, i) for i in (1, 2, 3)]
    generators = phantom_generators(["T2w", "T1w"], {"crop_mm": [24, 24, 24], "pvs_grade": 4})
    t2_image, t2_label, spacing = generators["T2w"](11)
    t1_image, t1_label, _ = generators["T1w"](11)
    assert t2_image.shape == t2_label.shape == t1_image.shape == (24, 24, 24)
    assert t2_image.dtype == np.float32 and t2_label.dtype == np.uint8 and spacing == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(t1_label, t2_label)  # one anatomy, two contrasts
    assert not np.array_equal(t1_image, t2_image)
    with pytest.raises(UsageError, match="unknown phantom settings: no_such_field"):
        phantom_generators(["T2w"], {"no_such_field": 1})


def test_a_pvs_free_case_gives_background_patches_without_warnings():
    import warnings

    data = make_phantom((32, 32, 32), seed=3).get_fdata().astype(np.float32)
    prepared = prepare_case(
        "empty",
        Sample(data, np.zeros(data.shape, np.uint8), (1.0, 1.0, 1.0)),
        Preprocessing((0, 1, 2), (1.0,) * 3, True),
    )
    assert prepared.foreground.size == 0
    dataset = PatchDataset([prepared], training_transforms([16] * 3, Augmentation(), 1.0), np.array([[0, 5]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image, label = dataset[0]
    assert image.shape == (1, 16, 16, 16) and int(label.sum()) == 0


def test_patches_do_not_depend_on_loader_workers():
    from torch.utils.data import DataLoader

    img = make_phantom((40, 40, 40), seed=2)
    data = img.get_fdata().astype(np.float32)
    prepared = prepare_case(
        "c",
        Sample(data, (data >= 250).astype(np.uint8), (1.0, 1.0, 1.0)),
        Preprocessing((0, 1, 2), (1.0,) * 3, True),
    )
    dataset = PatchDataset(
        [prepared], training_transforms([16] * 3, Augmentation()), np.array([[0, s] for s in range(4)])
    )
    serial = [batch[0] for batch in DataLoader(dataset, batch_size=2, num_workers=0)]
    parallel = [batch[0] for batch in DataLoader(dataset, batch_size=2, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_budget_stops_on_time_or_epoch_count():
    import time

    from mednet_pvs.train.trainer import Budget

    budget = Budget(deadline=time.monotonic() + 100.0)
    assert budget.allows_epoch(50.0) and not budget.allows_epoch(200.0) and not budget.expired()
    assert Budget(deadline=time.monotonic() - 1.0).expired()
    counted = Budget(max_epochs=2)
    counted.epochs_run = 2
    assert not counted.allows_epoch(0.0)


def test_network_label_maps_a_mask_into_the_cases_network_space() -> None:
    image = np.zeros((20, 20, 20), np.float32)
    image[2:18, 2:18, 2:18] = 1.0  # the non-zero box the engine crops to
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[6:10, 6:10, 6:10] = 1
    same = preprocess_case(image[None], np.ones(3), np.ones(3), True)
    np.testing.assert_array_equal(network_label(mask, same, (0, 1, 2))[0], mask[2:18, 2:18, 2:18])
    coarse = preprocess_case(image[None], np.ones(3), np.full(3, 2.0), True)  # 16^3 crop -> 8^3
    expected = np.zeros((8, 8, 8), np.uint8)
    expected[2:4, 2:4, 2:4] = 1  # crop voxels 4-7 -> network voxels 2-3
    np.testing.assert_array_equal(network_label(mask, coarse, (0, 1, 2))[0], expected)
    # the model's axis order (z, y, x) puts a mask elongated along x on the last network axis
    long = np.zeros((20, 20, 20), np.uint8)
    long[4:16, 8, 8] = 1
    along = network_label(long, same, (2, 1, 0))[0].nonzero()
    assert [np.ptp(a) for a in along] == [0, 0, 11]


def test_a_generated_case_read_inverted_is_negated_and_shares_the_cached_phantom(tmp_path):
    from mednet_pvs.train.data import SampleStore, generated_cases

    calls = []

    def generator(seed: int):
        calls.append(seed)
        image = np.arange(24, dtype=np.float32).reshape(2, 3, 4) + seed
        return image, (image > 20).astype(np.uint8), (1.0, 1.0, 2.0)

    (t1w,) = generated_cases([7], ["T1w"])
    inverted = t1w.read_inverted()
    assert inverted.case_id == "synth-7_T1w-inverted" and inverted.subject == t1w.subject
    assert inverted.describe() == {
        "case": "synth-7_T1w-inverted",
        "contrast": "T1w",
        "seed": 7,
        "inverted": True,
    }
    assert inverted.as_stored() == t1w
    store = SampleStore(tmp_path / "generated", {"T1w": generator})
    read = store.load(inverted)
    stored = store.load(t1w)
    assert calls == [7]  # generated once, cached under the stored case's id
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == ["synth-7_T1w.npz"]
    np.testing.assert_array_equal(read.image, -stored.image)
    np.testing.assert_array_equal(read.label, stored.label)
    assert read.spacing == stored.spacing == (1.0, 1.0, 2.0)
