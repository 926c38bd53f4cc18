"""The inference engine: nnU-Net v1 tiling and TTA, batching, window skipping, OOM fallback, memory reuse."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from mednet_pvs.errors import ModelError
from mednet_pvs.inference.engine import InferenceSettings, Segmenter, resolve_device
from mednet_pvs.inference.memory import reuse_freed_memory
from mednet_pvs.inference.preprocessing import (
    crop_to_nonzero,
    normalize_zscore,
    preprocess_case,
    resample_to_shape,
)
from mednet_pvs.inference.sliding_window import (
    WindowPredictor,
    gaussian_importance_map,
    predict_sliding_window,
    sliding_window_probabilities,
    tile_starts,
)
from mednet_pvs.models.card import ModelCard
from mednet_pvs.preproc.conform import conform
from tests.conftest import make_phantom


class _PositionNet(nn.Module):
    """A small conv net that is not mirror-symmetric, so mirroring and tiling errors show."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(x.shape[0])
        ramp = torch.linspace(-1, 1, x.shape[2], device=x.device)[None, None, :, None, None]
        return self.conv(x) + ramp


def _reference_sliding_window(
    data: np.ndarray,
    net: nn.Module,
    patch: tuple[int, ...],
    mirror_axes: tuple[int, ...],
    logits: bool = False,
):
    """nnU-Net v1's _internal_predict_3D_3Dconv_tiled for one network, written out plainly.

    ``logits``: v2's predict_sliding_window_return_logits instead (no softmax).
    """
    activation = (lambda t: t) if logits else (lambda t: torch.softmax(t, 1))
    weights = gaussian_importance_map(patch)
    shape = data.shape[1:]
    summed = np.zeros((2, *shape), np.float32)
    counts = np.zeros(shape, np.float32)
    dims = [a + 2 for a in mirror_axes]
    flips = [c for r in range(len(dims) + 1) for c in itertools.combinations(dims, r)]
    with torch.no_grad():
        for x, y, z in itertools.product(*tile_starts(shape, patch, 0.5)):
            box = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
            tile = torch.from_numpy(data[(slice(None), *box)][None])
            pred = sum(torch.flip(activation(net(torch.flip(tile, f))), f) for f in flips) / len(flips)
            summed[(slice(None), *box)] += pred[0].numpy() * weights
            counts[box] += weights
    return summed / counts


def test_tile_starts_follow_nnunet() -> None:
    assert tile_starts([169, 190, 150], [128, 128, 128], 0.5) == [[0, 41], [0, 62], [0, 22]]
    assert tile_starts([300], [128], 0.5) == [[0, 57, 115, 172]]
    assert tile_starts([128], [128], 0.5) == [[0]]


@pytest.mark.parametrize("mirror_axes", [(), (0, 1, 2), (1,)])
def test_sliding_window_matches_plain_nnunet_loop(mirror_axes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1, 21, 18, 15)).astype(np.float32)
    net = _PositionNet().eval()
    expected = _reference_sliding_window(data, net, (12, 12, 12), mirror_axes)
    for batch_size in (1, 3):
        got = sliding_window_probabilities(
            data,
            WindowPredictor([net], torch.device("cpu"), batch_size=batch_size),
            2,
            (12, 12, 12),
            0.5,
            mirror_axes,
        )
        assert got.shape == (2, 21, 18, 15)
        np.testing.assert_allclose(got, expected, atol=2e-6)
    # batch_size 3 packs whole windows (all their mirrorings) and splits what exceeds it
    assert max(net.batch_sizes) == {0: 3, 1: 2, 3: 3}[len(mirror_axes)]


def test_logits_average_like_nnunet_v2() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(size=(1, 21, 18, 15)).astype(np.float32)
    net = _PositionNet().eval()
    expected = _reference_sliding_window(data, net, (12, 12, 12), (0, 2), logits=True)
    predictor = WindowPredictor([net], torch.device("cpu"), average="logits")
    got = sliding_window_probabilities(data, predictor, 2, (12, 12, 12), 0.5, (0, 2))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    v1 = _reference_sliding_window(data, net, (12, 12, 12), (0, 2))
    # the softmax of averaged logits is not the average of softmaxes where windows overlap
    assert np.abs(torch.softmax(torch.from_numpy(got), 0).numpy() - v1).max() > 1e-3
    with pytest.raises(ValueError, match="average must be 'probabilities' or 'logits', got 'votes'"):
        WindowPredictor([net], torch.device("cpu"), average="votes")  # type: ignore[arg-type]


def test_nnunet_v2_normalises_before_resampling() -> None:
    data = np.zeros((1, 20, 18, 16), np.float32)
    data[0, 3:17, 2:16, 2:14] = np.random.default_rng(5).gamma(2.0, 50.0, size=(14, 14, 12))
    spacing, target = np.array([1.0, 1.0, 1.0]), np.array([1.5, 1.5, 1.5])
    v1 = preprocess_case(data, spacing, target, True)
    v2 = preprocess_case(data, spacing, target, True, normalize_first=True)
    cropped, nonzero, _ = crop_to_nonzero(data)
    expected = resample_to_shape(
        normalize_zscore(cropped, nonzero),
        np.array(v2.data.shape[1:]),
        is_labels=False,
        order=3,
        separate_z_axis=None,
    )
    assert v2.data.shape == v1.data.shape == (1, 9, 9, 8)
    np.testing.assert_allclose(v2.data, expected, atol=1e-5)
    np.testing.assert_array_equal(v2.mask, v1.mask)
    assert np.abs(v2.data - v1.data).max() > 1e-2  # the order matters once the image is resampled
    np.testing.assert_allclose(v1.data[0][v1.mask].mean(), 0.0, atol=1e-5)  # v1 normalises what it resampled


def _resample_separate_z_like_nnunet(
    data: np.ndarray, new_shape: tuple[int, ...], axis: int, order: int
) -> np.ndarray:
    """nnU-Net v1's ``resample_data_or_seg`` for data with a separate z axis (``order_z=0``): slices
    resized in plane, then order-0 ``map_coordinates`` over the full coordinate grid."""
    from scipy.ndimage import map_coordinates
    from skimage.transform import resize

    in_plane = tuple(n for i, n in enumerate(new_shape) if i != axis)
    out = []
    for channel in data.astype(float):
        slices = [
            resize(np.take(channel, i, axis=axis), in_plane, order, mode="edge", anti_aliasing=False)
            for i in range(channel.shape[axis])
        ]
        stacked = np.stack(slices, axis)
        scale = np.array(stacked.shape, float) / np.array(new_shape)
        grid = np.mgrid[: new_shape[0], : new_shape[1], : new_shape[2]].astype(float)
        coords = scale[:, None, None, None] * (grid + 0.5) - 0.5
        out.append(map_coordinates(stacked, coords, order=0, mode="nearest"))
    return np.stack(out).astype(data.dtype)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("thick_length", [3, 6, 7, 12, 20])
def test_thick_axis_resampling_matches_nnunet(axis: int, thick_length: int) -> None:
    shape = [9, 8, 10]
    shape[axis] = thick_length
    data = np.random.default_rng(thick_length).normal(size=(2, *shape)).astype(np.float32)
    for new_length in (1, 2, thick_length - 1, thick_length, 2 * thick_length, 3 * thick_length + 1, 31):
        new_shape = [12, 7, 11]
        new_shape[axis] = new_length
        got = resample_to_shape(data, np.array(new_shape), is_labels=False, order=3, separate_z_axis=axis)
        expected = _resample_separate_z_like_nnunet(data, tuple(new_shape), axis, 3)
        assert got.shape == (2, *new_shape) and got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_segmenter_with_nnunet_v2_conventions_gives_probabilities(tiny_model: Path) -> None:
    card = ModelCard.load(tiny_model)
    image = np.asarray(make_phantom().dataobj, np.float32)
    results = {}
    for convention in ("nnunet_v1", "nnunet_v2"):
        settings = InferenceSettings(device="cpu", tta=False, progress=False, convention=convention)
        results[convention] = Segmenter(tiny_model, card, settings).predict(image, (1.0, 1.0, 1.0))
    got = results["nnunet_v2"]
    assert got.shape == (2, *image.shape) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)
    assert got[0, 0, 0, 0] == 1.0 and got[0, -1, -1, -1] == 1.0  # outside the brain's box
    difference = np.abs(got - results["nnunet_v1"]).max()
    assert 0 < difference < 0.5
    with pytest.raises(ModelError, match="convention must be nnunet_v1 or nnunet_v2, got 'v3'"):
        Segmenter(tiny_model, card, InferenceSettings(device="cpu", convention="v3"))  # type: ignore[arg-type]


def test_folds_are_averaged_as_probabilities() -> None:
    data = np.random.default_rng(1).normal(size=(1, 14, 14, 14)).astype(np.float32)
    nets = [_PositionNet().eval(), nn.Sequential(nn.Conv3d(1, 2, 1)).eval()]
    per_fold = predict_sliding_window(data, nets, 2, (12, 12, 12), 0.5, (0,))
    assert per_fold.shape == (2, 2, 14, 14, 14)
    mean = sliding_window_probabilities(
        data, WindowPredictor(nets, torch.device("cpu")), 2, (12, 12, 12), 0.5, (0,)
    )
    np.testing.assert_allclose(mean, per_fold.mean(0), atol=1e-6)


def test_windows_without_brain_are_skipped() -> None:
    data = np.zeros((1, 30, 12, 12), np.float32)
    mask = np.zeros((30, 12, 12), bool)
    mask[:5] = True
    data[0][mask] = 1.0
    net = _PositionNet().eval()
    got = sliding_window_probabilities(
        data, WindowPredictor([net], torch.device("cpu")), 2, (12, 12, 12), 0.5, (), mask=mask
    )
    full = sliding_window_probabilities(
        data, WindowPredictor([net], torch.device("cpu")), 2, (12, 12, 12), 0.5, ()
    )
    assert tile_starts([30], [12], 0.5) == [[0, 6, 12, 18]]
    assert net.calls == 1 + 4  # only the window starting at 0 holds brain voxels
    np.testing.assert_allclose(got[:, :5], full[:, :5], atol=1e-6)  # the brain is unchanged
    assert np.all(got[0, 12:] == 1.0) and np.all(full[0, 12:] < 1.0)  # not covered by a computed window
    logits = sliding_window_probabilities(
        data,
        WindowPredictor([net], torch.device("cpu"), average="logits"),
        2,
        (12, 12, 12),
        0.5,
        (),
        mask=mask,
    )
    assert np.all(torch.softmax(torch.from_numpy(logits[:, 12:]), 0)[0].numpy() == 1.0)


def test_out_of_memory_halves_the_batch_then_moves_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    class _OutOfMemoryOffCpu(_PositionNet):
        """Stands for a network on a GPU that is full: its weights stay on the CPU ('meta' plays the GPU)."""

        def to(self, *args: object, **kwargs: object) -> nn.Module:
            return self

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.device.type != "cpu":
                raise torch.cuda.OutOfMemoryError("simulated")
            return super().forward(x)

    net = _OutOfMemoryOffCpu().eval()
    data = np.random.default_rng(2).normal(size=(1, 12, 12, 12)).astype(np.float32)
    predictor = WindowPredictor([net], torch.device("meta"), batch_size=2)
    with caplog.at_level(logging.WARNING):
        got = sliding_window_probabilities(data, predictor, 2, (12, 12, 12), 0.5, (0,))
    assert predictor.device == torch.device("cpu") and predictor.batch_size == 1
    assert "retrying with batch size 1" in caplog.text and "continuing on the CPU" in caplog.text
    np.testing.assert_allclose(got, _reference_sliding_window(data, net, (12, 12, 12), (0,)), atol=2e-6)


def test_memory_reuse_changes_nothing(tiny_model: Path) -> None:
    card = ModelCard.load(tiny_model)
    image = np.asarray(make_phantom().dataobj, np.float32)
    outputs = []
    for reuse in (False, True):
        settings = InferenceSettings(device="cpu", tta=False, folds=[0], progress=False, reuse_memory=reuse)
        outputs.append(Segmenter(tiny_model, card, settings).predict(image, (1.0, 1.0, 1.0)))
    with reuse_freed_memory(), reuse_freed_memory():  # nested use restores the defaults once, at the end
        outputs.append(Segmenter(tiny_model, card, settings).predict(image, (1.0, 1.0, 1.0)))
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[1], outputs[2])


def test_a_contrast_read_inverted_is_negated_before_the_network(tiny_model: Path) -> None:
    card = dataclasses.replace(ModelCard.load(tiny_model), contrasts=["T2w"], inverted_contrasts=["T1w"])
    image = np.asarray(make_phantom().dataobj, np.float32)
    settings = InferenceSettings(device="cpu", tta=False, folds=[0], progress=False)
    segmenter = Segmenter(tiny_model, card, settings)
    as_t1w = segmenter.predict(image, (1.0, 1.0, 1.0), "T1w")
    np.testing.assert_array_equal(as_t1w, segmenter.predict(-image, (1.0, 1.0, 1.0), "T2w"))
    as_t2w = segmenter.predict(image, (1.0, 1.0, 1.0), "T2w")
    assert np.abs(as_t1w - as_t2w).max() > 1e-3
    np.testing.assert_array_equal(as_t2w, segmenter.predict(image, (1.0, 1.0, 1.0)))
    with pytest.raises(ModelError, match=r"inverted_contrasts \['T2w'\] overlaps contrasts \['T2w'\]"):
        ModelCard.from_dict({**card.to_dict(), "inverted_contrasts": ["T2w"]})


def test_a_contrast_threshold_applies_to_its_contrast_only(tiny_model: Path) -> None:
    card = dataclasses.replace(
        ModelCard.load(tiny_model), contrasts=["T2w"], inverted_contrasts=["T1w"], threshold=0.4
    )
    card = ModelCard.from_dict({**card.to_dict(), "contrast_thresholds": {"T1w": 0.2}})
    assert [card.threshold_for(c) for c in ("T1w", "T2w", None)] == [0.2, 0.4, 0.4]
    with pytest.raises(ModelError, match=r"contrast_thresholds names 'FLAIR', which the model does not read"):
        ModelCard.from_dict({**card.to_dict(), "contrast_thresholds": {"FLAIR": 0.2}})
    with pytest.raises(ModelError, match=r"contrast_thresholds\['T1w'\] 1.5 must be in \(0, 1\)"):
        ModelCard.from_dict({**card.to_dict(), "contrast_thresholds": {"T1w": 1.5}})


def test_the_segmentation_interface_reads_its_contrast_as_the_card_says(tiny_model: Path, tmp_path: Path):
    from mednet_pvs.interfaces.segmentation import ModelSegmentation

    model = tmp_path / "t2w-model"
    shutil.copytree(tiny_model, model)
    card = dataclasses.replace(
        ModelCard.load(model),
        contrasts=["T2w"],
        inverted_contrasts=["T1w"],
        threshold=0.5,
        contrast_thresholds={"T1w": 0.15},
    )
    card.save(model)
    image = make_phantom()
    image.to_filename(tmp_path / "brain.nii.gz")
    node = ModelSegmentation(model_dir=str(model), in_file=str(tmp_path / "brain.nii.gz"), contrast="T1w")
    node.inputs.tta, node.inputs.folds, node.inputs.device = False, [0], "cpu"
    result = node.run(cwd=str(tmp_path))
    assert result.outputs.model_info["inverted_contrasts"] == ["T1w"]
    assert result.outputs.model_info["threshold"] == 0.15  # the T1w threshold, which PVSMask applies
    settings = InferenceSettings(device="cpu", tta=False, folds=[0], progress=False)
    expected = Segmenter(model, card, settings).foreground_probability(
        -np.asarray(image.dataobj, np.float32), (1.0, 1.0, 1.0)
    )
    np.testing.assert_allclose(nib.load(result.outputs.out_file).get_fdata(), expected, atol=1e-6)


def test_the_segmentation_interface_ensembles_every_fold_unless_told(tiny_model: Path, tmp_path: Path):
    from mednet_pvs.interfaces.segmentation import ModelSegmentation

    make_phantom(shape=(32, 36, 32)).to_filename(tmp_path / "brain.nii.gz")
    node = ModelSegmentation(model_dir=str(tiny_model), in_file=str(tmp_path / "brain.nii.gz"), tta=False)
    info = node.run(cwd=str(tmp_path)).outputs.model_info
    assert info["folds"] == [0, 1] and info["tta"] is False and info["tta_mirroring"] is None
    node.inputs.tta, node.inputs.tta_mirroring = True, "left-right"
    info = node.run(cwd=str(tmp_path)).outputs.model_info
    assert info["tta"] is True and info["tta_mirroring"] == "left-right"


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("P", "I", "R")])
def test_segmenter_runs_on_conformed_images_of_any_orientation(
    tiny_model: Path, axcodes: tuple[str, ...]
) -> None:
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, ornt_transform

    ras = make_phantom(shape=(40, 44, 36))
    transform = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(axcodes))
    data = nib.orientations.apply_orientation(np.asarray(ras.dataobj), transform)
    native = nib.Nifti1Image(data, ras.affine @ inv_ornt_aff(transform, ras.shape))
    assert nib.aff2axcodes(native.affine) == axcodes
    conformed = conform(native)
    card = ModelCard.load(tiny_model)
    segmenter = Segmenter(
        tiny_model, card, InferenceSettings(device="cpu", tta=False, folds=[0], progress=False)
    )
    probabilities = segmenter.predict(np.asarray(conformed.dataobj), conformed.header.get_zooms()[:3])
    assert probabilities.shape == (2, 40, 44, 36) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)
    outside = np.asarray(conformed.dataobj) == 0
    outside[1:-1, 1:-1, 1:-1] = False  # the border rows lie outside the brain's bounding box
    assert np.all(probabilities[0][outside] == 1.0)
    foreground = segmenter.foreground_probability(
        np.asarray(conformed.dataobj), conformed.header.get_zooms()[:3]
    )
    np.testing.assert_allclose(foreground, 1.0 - probabilities[0], atol=1e-6)


@pytest.mark.parametrize(("axes", "left_right"), [([0, 1, 2], 0), ([2, 1, 0], 2)])
def test_left_right_tta_mirrors_the_network_axis_of_the_images_x(
    tiny_model: Path, axes: list[int], left_right: int
) -> None:
    card = dataclasses.replace(ModelCard.load(tiny_model), axes=axes)
    assert card.tta_mirror_axes("all") == [0, 1, 2] and card.tta_mirror_axes("left-right") == [left_right]
    image = np.asarray(make_phantom(shape=(40, 44, 36)).dataobj, np.float32)

    def probabilities(card: ModelCard, tta: bool = True, mirroring: str = "all") -> np.ndarray:
        settings = InferenceSettings(
            device="cpu", tta=tta, tta_mirroring=mirroring, folds=[0], progress=False
        )
        return Segmenter(tiny_model, card, settings).predict(image, (1.0, 1.0, 1.0))

    left_right_only = probabilities(card, mirroring="left-right")
    expected = probabilities(dataclasses.replace(card, mirror_axes=[left_right]))
    np.testing.assert_array_equal(left_right_only, expected)
    for other in (probabilities(card, tta=False), probabilities(card)):
        assert np.abs(left_right_only - other).max() > 1e-3
    wrong_axis = dataclasses.replace(card, mirror_axes=[2 - left_right])
    assert np.abs(left_right_only - probabilities(wrong_axis)).max() > 1e-3


def test_left_right_tta_is_refused_for_a_model_not_trained_with_it(tiny_model: Path) -> None:
    card = dataclasses.replace(ModelCard.load(tiny_model), mirror_axes=[1, 2])
    assert card.tta_mirror_axes("all") == [1, 2]
    message = r"model 'tiny' was not trained with left-right mirroring \(its mirror_axes \[1, 2\] lack"
    with pytest.raises(ModelError, match=message):
        Segmenter(tiny_model, card, InferenceSettings(device="cpu", tta_mirroring="left-right"))
    with pytest.raises(ModelError, match="TTA mirroring must be one of all, left-right, got 'up-down'"):
        card.tta_mirror_axes("up-down")
    # without TTA nothing is mirrored, so the choice does not matter
    settings = InferenceSettings(device="cpu", tta=False, tta_mirroring="left-right")
    assert Segmenter(tiny_model, card, settings).mirror_axes == []


def test_settings_are_checked(tiny_model: Path) -> None:
    card = ModelCard.load(tiny_model)
    with pytest.raises(ModelError, match=r"folds \[5\] requested but the model has folds \[0, 1\]"):
        Segmenter(tiny_model, card, InferenceSettings(device="cpu", folds=[5]))
    with pytest.raises(ModelError, match="is not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA GPU is available"):
            resolve_device("cuda")
