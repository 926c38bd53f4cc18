"""mednet-pvs-eval end to end: pairing, per-region rows, group agreement, errors, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mednet_pvs.cli.evaluate import main
from mednet_pvs.errors import InputImageError, UsageError
from mednet_pvs.metrics import evaluate, evaluate_case, find_cases

SHAPE = (32, 32, 20)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _save(data: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _reference(n_left: int, n_right: int) -> tuple[np.ndarray, np.ndarray]:
    """PVS mask with n 2x2x2 objects in each half; regions: left x<16 = 1 (CSO left), right = 2."""
    mask = np.zeros(SHAPE, np.uint8)
    for i in range(n_left):
        mask[2 + 4 * (i % 3) : 4 + 4 * (i % 3), 2 + 4 * (i // 3) : 4 + 4 * (i // 3), 5:7] = 1
    for i in range(n_right):
        mask[18 + 4 * (i % 3) : 20 + 4 * (i % 3), 2 + 4 * (i // 3) : 4 + 4 * (i // 3), 5:7] = 1
    regions = np.zeros(SHAPE, np.uint8)
    regions[:16] = 1
    regions[16:] = 2
    return mask, regions


def _dataset(root: Path, subjects: dict[str, tuple[int, int]]) -> Path:
    truth = root / "groundtruth"
    for label, (n_left, n_right) in subjects.items():
        mask, regions = _reference(n_left, n_right)
        anat = truth / f"sub-{label}" / "anat"
        _save(mask, anat / f"sub-{label}_desc-pvs_mask.nii.gz")
        _save(regions, anat / f"sub-{label}_seg-pvsregions_dseg.nii.gz")
    return truth


def test_identical_prediction_scores_one_everywhere(tmp_path):
    truth = _dataset(tmp_path, {"01": (4, 2), "02": (3, 5), "03": (6, 1)})
    cases = find_cases(truth, truth)
    assert [c.entities for c in cases] == [{"sub": "01"}, {"sub": "02"}, {"sub": "03"}]
    result = evaluate(cases)
    scored = result.cases[result.cases.n_ref > 0]
    assert set(scored.region) >= {"centrum_semiovale", "white_matter", "whole_brain"}
    for column in (
        "dice",
        "sensitivity",
        "precision",
        "any_f1",
        "iou_f1",
        "any_sensitivity",
        "any_precision",
    ):
        assert (scored[column] == 1.0).all(), column
    assert (scored.hd95_mm == 0).all()
    assert (scored.count_difference == 0).all() and (scored.volume_difference_mm3 == 0).all()
    whole = result.group[(result.group.region == "whole_brain")].iloc[0]
    assert whole.count_ccc == pytest.approx(1.0) and whole.volume_ccc == pytest.approx(1.0)
    assert whole.count_spearman_rho == pytest.approx(1.0)


def test_counts_and_detection_per_region_with_a_missed_pvs(tmp_path):
    truth = _dataset(tmp_path, {"01": (4, 2)})
    mask, _ = _reference(4, 2)
    prediction = mask.copy()
    prediction[18:20, 2:4, 5:7] = 0  # miss the first right-hemisphere PVS
    pred = _save(prediction, tmp_path / "pred" / "sub-01" / "anat" / "sub-01_acq-x_desc-pvs_mask.nii.gz")
    rows, _ = evaluate_case(find_cases(pred.parents[2], truth)[0])
    by_region = rows.set_index(["region", "hemisphere"])
    left = by_region.loc[("centrum_semiovale", "left")]
    right = by_region.loc[("centrum_semiovale", "right")]
    whole = by_region.loc[("whole_brain", "bilateral")]
    assert (left.n_ref, left.n_pred, left.dice, left.any_f1) == (4, 4, 1.0, 1.0)
    assert (right.n_ref, right.n_pred, right.iou_fn, right.count_difference) == (2, 1, 1, -1)
    assert right.any_f1 == pytest.approx(2 * 0.5 / 1.5)
    assert right.volume_difference_mm3 == pytest.approx(-16.0)  # 8 voxels of 2 mm^3
    assert whole.any_f1 == pytest.approx(2 * 5 / 11) and whole.iou_f1 == pytest.approx(2 * 5 / 11)
    assert whole.dice == pytest.approx(2 * 40 / 88)


def test_a_region_without_any_hd95_gives_nan_without_warnings(tmp_path):
    import warnings

    truth = _dataset(tmp_path, {"01": (4, 2)})
    mask, _ = _reference(4, 2)
    prediction = mask.copy()
    prediction[16:] = 0  # every right-hemisphere PVS missed: HD95 undefined there
    pred = _save(prediction, tmp_path / "pred" / "sub-01" / "anat" / "sub-01_desc-pvs_mask.nii.gz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(find_cases(pred.parents[2], truth))
    group = result.group.set_index(["region", "hemisphere"])
    assert np.isnan(group.loc[("centrum_semiovale", "right"), "hd95_median_mm"])
    assert group.loc[("centrum_semiovale", "left"), "hd95_median_mm"] == 0.0


def test_distractor_hits_are_reported(tmp_path):
    truth = _dataset(tmp_path, {"01": (1, 0)})
    distractors = np.zeros(SHAPE, np.uint8)
    distractors[20:26, 20:26, 10:13] = 1
    _save(distractors, truth / "sub-01" / "anat" / "sub-01_desc-distractors_dseg.nii.gz")
    pd.DataFrame({"index": [1, 2], "name": ["lacune", "vessel"]}).to_csv(
        truth / "desc-distractors_dseg.tsv", sep="\t", index=False
    )
    mask, _ = _reference(1, 0)
    prediction = mask.copy()
    prediction[22:24, 22:24, 11:12] = 1
    pred = _save(prediction, tmp_path / "pred" / "sub-01_desc-pvs_mask.nii.gz")
    _, table = evaluate_case(find_cases(pred, truth)[0])
    lacune = table.set_index("distractor").loc["lacune"]
    assert (
        lacune.n_objects,
        lacune.n_objects_hit,
        lacune.predicted_voxels,
        lacune.false_positive_clusters,
    ) == (
        1,
        1,
        4,
        1,
    )
    assert lacune.predicted_volume_mm3 == pytest.approx(8.0)
    assert table.set_index("distractor").loc["vessel"].n_objects == 0


def test_grid_mismatch_names_both_files(tmp_path):
    truth = _dataset(tmp_path, {"01": (1, 1)})
    mask, _ = _reference(1, 1)
    shifted = AFFINE.copy()
    shifted[0, 3] = 1.0
    pred = _save(mask, tmp_path / "pred" / "sub-01_desc-pvs_mask.nii.gz", shifted)
    with pytest.raises(InputImageError, match=r"sub-01_desc-pvs_mask.nii.gz.*affines differ by up to 1"):
        evaluate_case(find_cases(pred, truth)[0])
    small = _save(mask[:-1], tmp_path / "pred2" / "sub-01_desc-pvs_mask.nii.gz")
    with pytest.raises(InputImageError, match=r"shape \(31, 32, 20\) vs \(32, 32, 20\)"):
        evaluate_case(find_cases(small, truth)[0])


def test_missing_predictions_are_an_error_unless_allowed(tmp_path):
    truth = _dataset(tmp_path, {"01": (1, 1), "02": (2, 2)})
    mask, _ = _reference(1, 1)
    _save(mask, tmp_path / "pred" / "sub-01" / "anat" / "sub-01_desc-pvs_mask.nii.gz")
    with pytest.raises(UsageError, match=r"no prediction for reference masks .*sub-02_desc-pvs_mask"):
        find_cases(tmp_path / "pred", truth)
    assert len(find_cases(tmp_path / "pred", truth, allow_missing=True)) == 1
    with pytest.raises(UsageError, match="does not exist"):
        find_cases(tmp_path / "nowhere", truth)


def test_command_line_writes_tables_sidecars_and_summary(tmp_path):
    truth = _dataset(tmp_path, {"01": (4, 2), "02": (3, 5), "03": (6, 1)})
    out = tmp_path / "eval"
    assert main([str(truth), str(truth), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "evaluation.html",
        "evaluation.json",
        "evaluation.png",
        "evaluation.tsv",
        "evaluation_group.json",
        "evaluation_group.tsv",
    ]
    table = pd.read_csv(out / "evaluation.tsv", sep="\t")
    assert set(json.loads((out / "evaluation.json").read_text())) == set(table.columns)
    assert table.participant_id.unique().tolist() == ["sub-01", "sub-02", "sub-03"]
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "evaluation.png" in (out / "evaluation.html").read_text()


def test_command_line_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main([str(tmp_path / "missing"), str(tmp_path / "also-missing")])
    assert excinfo.value.code == 2
    assert "does not exist" in capsys.readouterr().err
