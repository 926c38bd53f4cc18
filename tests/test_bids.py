"""BIDS queries, derivative names and the derivative dataset description."""

from __future__ import annotations

import json
import threading

import pytest

from mednet_pvs.bids import (
    bids_uri,
    build_layout,
    collect_images,
    derivative_name,
    derivative_path,
    select_participants,
    validate_label,
    write_derivative_dataset_files,
)
from mednet_pvs.errors import UsageError
from tests.bids_factory import make_bids


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_bids(
        tmp_path_factory.mktemp("bids") / "ds",
        {
            "01": ["anat/sub-01_T1w.nii.gz", "anat/sub-01_T2w.nii.gz"],
            "02": [
                "ses-1/anat/sub-02_ses-1_acq-hr_T2w.nii.gz",
                "ses-1/anat/sub-02_ses-1_acq-lr_T2w.nii.gz",
                "ses-2/anat/sub-02_ses-2_T1w.nii.gz",
            ],
            "03": ["anat/sub-03_run-1_T1w.nii.gz", "anat/sub-03_run-2_T1w.nii.gz"],
            "04": ["anat/sub-04_FLAIR.nii.gz"],
        },
    )


def test_derivative_names_follow_entity_order():
    source = "sub-01_ses-1_acq-hr_run-2_T2w.nii.gz"
    assert (
        derivative_name(source, "mask", ".nii.gz", desc="pvs")
        == "sub-01_ses-1_acq-hr_run-2_desc-pvs_mask.nii.gz"
    )
    assert derivative_name(source, "probseg", ".nii.gz", label="PVS") == (
        "sub-01_ses-1_acq-hr_run-2_label-PVS_probseg.nii.gz"
    )
    assert derivative_name(source, "dseg", ".nii.gz", seg="pvsregions") == (
        "sub-01_ses-1_acq-hr_run-2_seg-pvsregions_dseg.nii.gz"
    )
    path = derivative_path("/out", f"/raw/sub-01/ses-1/anat/{source}", "morph", ".tsv", desc="pvs")
    assert str(path) == "/out/sub-01/ses-1/anat/sub-01_ses-1_acq-hr_run-2_desc-pvs_morph.tsv"


def test_bids_uri():
    assert bids_uri("/data/raw/sub-01/anat/sub-01_T2w.nii.gz", "/data/raw", "raw") == (
        "bids:raw:sub-01/anat/sub-01_T2w.nii.gz"
    )


@pytest.mark.parametrize(("value", "expected"), [("sub-01", "01"), ("01", "01"), ("ABC9", "ABC9")])
def test_labels_are_stripped(value, expected):
    assert validate_label(value, "participant") == expected


@pytest.mark.parametrize("bad", ["../x", "01/../02", "a b", "sub-", "x_y"])
def test_labels_with_path_characters_are_refused(bad):
    with pytest.raises(UsageError, match="invalid participant label"):
        validate_label(bad, "participant")


def test_unknown_participants_are_named(dataset):
    layout = build_layout(dataset)
    assert select_participants(layout, None) == ["01", "02", "03", "04"]
    assert select_participants(layout, ["sub-02", "01"]) == ["02", "01"]
    with pytest.raises(UsageError, match=r"not found .*: 07, 09"):
        select_participants(layout, ["01", "07", "sub-09"])


def test_auto_contrast_prefers_t2w_per_session(dataset):
    layout = build_layout(dataset)
    sub01 = collect_images(layout, "01", None, "auto")
    assert [(r.contrast, r.path.name) for r in sub01] == [("T2w", "sub-01_T2w.nii.gz")]
    sub02 = collect_images(layout, "02", None, "auto")
    assert [(r.session, r.path.name) for r in sub02] == [
        ("1", "sub-02_ses-1_acq-hr_T2w.nii.gz"),
        ("1", "sub-02_ses-1_acq-lr_T2w.nii.gz"),
        ("2", "sub-02_ses-2_T1w.nii.gz"),
    ]
    assert [r.path.name for r in collect_images(layout, "03", None, "auto")] == [
        "sub-03_run-1_T1w.nii.gz",
        "sub-03_run-2_T1w.nii.gz",
    ]
    assert collect_images(layout, "04", None, "auto") == []
    assert [r.contrast for r in collect_images(layout, "01", None, "T1w")] == ["T1w"]


def test_sessions_and_filters(dataset):
    layout = build_layout(dataset)
    only_ses2 = collect_images(layout, "02", ["ses-2"], "auto")
    assert [r.path.name for r in only_ses2] == ["sub-02_ses-2_T1w.nii.gz"]
    filtered = collect_images(layout, "02", ["1"], "auto", {"t2w": {"acquisition": "hr"}})
    assert [r.path.name for r in filtered] == ["sub-02_ses-1_acq-hr_T2w.nii.gz"]
    assert len({r.key for r in collect_images(layout, "02", None, "auto")}) == 3


def test_dataset_description_written_once_under_races(tmp_path):
    out = tmp_path / "derivatives"
    errors = []

    def job():
        try:
            write_derivative_dataset_files(out, tmp_path)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=job) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mednet-pvs"
    assert description["DatasetLinks"]["raw"].startswith("file://")
    assert "sub-*/log" in (out / ".bidsignore").read_text()
    assert not [p for p in out.iterdir() if p.name.startswith(".dataset_description")]
