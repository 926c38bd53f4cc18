"""mednet-pvs-synth: BIDS layout, validator, participants table, per-subject regeneration."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mednet_pvs.cli.synth import main

ARGS = ["--subjects", "2", "--contrasts", "T2w", "T1w", "--crop-mm", "32", "32", "32", "--pvs-grade", "3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "phantoms"
    assert main([str(out), *ARGS, "--seed", "7"]) == 0
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_participants(dataset):
    names = set(_files(dataset))
    truth = "derivatives/groundtruth/sub-02/anat/sub-02"
    assert {
        "dataset_description.json",
        "participants.tsv",
        "participants.json",
        "README",
        "sub-01/anat/sub-01_T2w.nii.gz",
        "sub-01/anat/sub-01_T1w.json",
        "derivatives/groundtruth/dataset_description.json",
        "derivatives/groundtruth/seg-pvsregions_dseg.tsv",
        "derivatives/groundtruth/desc-distractors_dseg.tsv",
        f"{truth}_desc-pvs_mask.nii.gz",
        f"{truth}_label-PVS_probseg.nii.gz",
        f"{truth}_desc-pvsinstances_dseg.nii.gz",
        f"{truth}_seg-pvsregions_dseg.nii.gz",
        f"{truth}_desc-aseg_dseg.nii.gz",
        f"{truth}_desc-distractors_dseg.nii.gz",
        f"{truth}_desc-pvs_morph.tsv",
        f"{truth}_desc-distractors_morph.tsv",
    } <= names
    assert not any(Path(n).name.startswith(".") and n != "derivatives/groundtruth/.bidsignore" for n in names)
    participants = pd.read_csv(dataset / "participants.tsv", sep="\t")
    assert participants.participant_id.tolist() == ["sub-01", "sub-02"]
    assert set(json.loads((dataset / "participants.json").read_text())) == set(participants.columns)
    assert participants.pvs_grade_bg.tolist() == [3, 3]
    image = nib.load(dataset / "sub-01/anat/sub-01_T2w.nii.gz")
    mask = nib.load(dataset / "derivatives/groundtruth/sub-01/anat/sub-01_desc-pvs_mask.nii.gz")
    assert image.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.uint8
    assert image.shape == mask.shape == (32, 32, 32)
    np.testing.assert_allclose(image.affine, mask.affine)
    table = pd.read_csv(dataset / "derivatives/groundtruth/sub-01/anat/sub-01_desc-pvs_morph.tsv", sep="\t")
    assert len(table) == participants.n_pvs[0]
    description = json.loads((dataset / "derivatives/groundtruth/dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"


def test_a_subject_regenerated_alone_is_byte_identical(dataset, tmp_path):
    again = tmp_path / "again"
    assert main([str(again), *ARGS[:1], "1", *ARGS[2:], "--seed", "7", "--first-index", "2"]) == 0
    original = {k: v for k, v in _files(dataset).items() if "sub-02" in k}
    regenerated = {k: v for k, v in _files(again).items() if "sub-02" in k}
    assert original.keys() == regenerated.keys() and len(original) > 10
    assert original == regenerated
    participants = pd.read_csv(again / "participants.tsv", sep="\t")
    assert participants.participant_id.tolist() == ["sub-02"]


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="bids-validator-deno not installed")
@pytest.mark.parametrize("folder", [".", "derivatives/groundtruth"])
def test_bids_validator_finds_no_error(dataset, folder):
    run = subprocess.run(
        ["bids-validator-deno", "--format", "json", str(dataset / folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    issues = json.loads(run.stdout)["issues"]["issues"]
    errors = [issue for issue in issues if issue["severity"] == "error"]
    assert errors == []


def test_bad_options_exit_with_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main([str(tmp_path / "x"), "--subjects", "1", "--anatomy", "nobody"])
    assert excinfo.value.code == 2
    assert "unknown anatomies ['nobody']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--subjects", "0"])
