"""Group level: aggregation of region tables, participants merge, robust outliers, group report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mednet_pvs.reports.group import GROUP_REPORT_NAME, write_group_outputs
from mednet_pvs.stats import compute_statistics, derivative_path, write_table
from mednet_pvs.stats.columns import REGION_COLUMNS, column_sidecar
from mednet_pvs.stats.group import GroupInputError, aggregate_group, robust_z

IMAGES = [  # (subject, session, extra entities, whole-brain count)
    ("01", "1", "", 100),
    ("01", "2", "", 110),
    ("02", "1", "", 90),
    ("03", "1", "", 105),
    ("04", "1", "", 95),
    ("05", "1", "", 900),  # the outlier
    ("06", None, "_acq-lowres", 40),
]


def _template() -> pd.DataFrame:
    regions = np.zeros((12, 12, 12), np.uint8)
    regions[:6] = 5
    regions[6:] = 6
    return compute_statistics(np.zeros(regions.shape, bool), np.eye(4), regions).regions


def write_region_table(out: Path, subject: str, session: str | None, extra: str, count: int) -> Path:
    table = _template()
    table["count"] = count
    table["volume_mm3"] = count * 4.0
    folder = out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    prefix = folder / (f"sub-{subject}" + (f"_ses-{session}" if session else "") + extra)
    path = derivative_path(prefix, "morph")
    write_table(path, table, column_sidecar(table.columns, REGION_COLUMNS))
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    for image in IMAGES:
        write_region_table(out, *image)
    participants = tmp_path / "participants.tsv"
    pd.DataFrame(
        {
            "participant_id": ["sub-01", "02", "sub-03", "sub-04", "sub-05", "sub-99"],
            "age": [60, 70, 65, 72, 80, 50],
        }
    ).to_csv(participants, sep="\t", index=False)
    (tmp_path / "participants.json").write_text(
        json.dumps({"age": {"Description": "age at scan", "Units": "year"}})
    )
    return out, participants


def test_long_table_has_every_image_region_and_entities(dataset):
    out, participants = dataset
    tables = aggregate_group(out, participants)
    long = tables.long
    assert len(long) == len(IMAGES) * 21
    assert list(long.columns[:6]) == ["participant_id", "session_id", "image", "protocol", "acq", "age"]
    first = long[long["image"] == "sub-01_ses-2"].iloc[0]
    assert (first["participant_id"], first["session_id"], first["protocol"]) == ("sub-01", "ses-2", "default")
    lowres = long[long["image"] == "sub-06_acq-lowres"].iloc[0]
    assert pd.isna(lowres["session_id"]) and lowres["acq"] == "lowres" and lowres["protocol"] == "acq-lowres"
    assert pd.isna(lowres["age"])  # sub-06 is not in participants.tsv
    ages = long.drop_duplicates("participant_id").set_index("participant_id")["age"]
    assert ages["sub-02"] == 70  # "02" in participants.tsv gets its sub- prefix
    assert long["region"].iloc[:21].tolist() == _template()["region"].tolist()


def test_robust_z_flags_the_outlier_within_its_protocol(dataset):
    out, participants = dataset
    long = aggregate_group(out, participants).long
    whole = long[(long["region"] == "whole_brain")].set_index("image")
    assert whole.loc["sub-05_ses-1", "count_robust_z"] > 3.5
    assert abs(whole.loc["sub-01_ses-1", "count_robust_z"]) < 1.0
    assert pd.isna(whole.loc["sub-06_acq-lowres", "count_robust_z"])  # alone in its protocol


def test_robust_z_values():
    z = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z.iloc[4] == pytest.approx(97 / 1.4826)
    assert z.iloc[2] == 0
    constant_but_one = robust_z(pd.Series([5.0, 5.0, 5.0, 5.0, 10.0]))  # MAD 0: mean absolute deviation
    assert constant_but_one.iloc[4] == pytest.approx(5 / 1.2533)
    assert robust_z(pd.Series([1.0, 2.0, 3.0, 4.0])).isna().all()
    assert robust_z(pd.Series([7.0] * 6)).isna().all()


def test_wide_table_has_one_row_per_image(dataset):
    out, participants = dataset
    wide = aggregate_group(out, participants).wide
    assert len(wide) == len(IMAGES) and wide["image"].is_unique
    row = wide.set_index("image").loc["sub-05_ses-1"]
    assert row["basal_ganglia_left_count"] == 900 and row["whole_brain_bilateral_volume_mm3"] == 3600
    assert row["age"] == 80
    assert "basal_ganglia_bilateral_epvs_slice_rating_auto" in wide.columns
    assert "thalamus_left_epvs_slice_rating_auto" not in wide.columns  # never defined: dropped


def test_write_group_outputs_files_sidecars_and_report(dataset):
    out, participants = dataset
    written = write_group_outputs(out, participants)
    assert sorted(p.name for p in written) == sorted(
        [
            "group_desc-pvs_morph.tsv",
            "group_desc-pvs_morph.json",
            "group_desc-pvswide_morph.tsv",
            "group_desc-pvswide_morph.json",
            GROUP_REPORT_NAME,
        ]
    )
    for name in ("group_desc-pvs_morph", "group_desc-pvswide_morph"):
        table = pd.read_csv(out / f"{name}.tsv", sep="\t", na_values="n/a", keep_default_na=False)
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert list(sidecar) == list(table.columns)
        assert all("Description" in sidecar[c] for c in table.columns)
    sidecar = json.loads((out / "group_desc-pvs_morph.json").read_text())
    assert sidecar["age"] == {"Description": "age at scan", "Units": "year"}  # from participants.json
    document = (out / GROUP_REPORT_NAME).read_text()
    assert 'href="sub-05.html#sub-05_ses-1"' in document
    assert "sub-01.html" not in document  # not an outlier
    sources = re.findall(r'src="([^"]+)"', document)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', document) and "<script" not in document


def test_group_report_without_participants_has_no_burden_plot(dataset):
    out, _ = dataset
    write_group_outputs(out, None)
    document = (out / GROUP_REPORT_NAME).read_text()
    assert "No numeric participants.tsv column" in document
    assert len(re.findall(r"<img ", document)) == 2


def test_nothing_to_aggregate_is_a_clear_error(tmp_path):
    with pytest.raises(GroupInputError, match=rf"{tmp_path}.*no participant-level statistics"):
        aggregate_group(tmp_path)
    foreign = tmp_path / "sub-01" / "anat" / "sub-01_desc-pvs_morph.tsv"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("a\tb\n1\t2\n")
    with pytest.raises(GroupInputError, match="none of the 1 region tables could be read"):
        aggregate_group(tmp_path)


def test_unreadable_participants_file_is_named(dataset, tmp_path):
    out, _ = dataset
    bad = tmp_path / "bad.tsv"
    bad.write_text("subject\tage\n01\t3\n")
    with pytest.raises(GroupInputError, match=r"bad.tsv: has no participant_id column"):
        aggregate_group(out, bad)
