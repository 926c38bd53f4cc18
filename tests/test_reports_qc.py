"""QC flags, methods boilerplate and HTML helpers of the reports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mednet_pvs.reports.html import table
from mednet_pvs.reports.methods import REFERENCES, methods_text, software_versions
from mednet_pvs.reports.qc import QCThresholds, qc_flags
from mednet_pvs.stats import compute_statistics


def _tables(brain_cm3: float, count: int, pvs_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    regions = compute_statistics(np.zeros((4, 4, 4), bool), np.eye(4)).regions
    whole = regions["region"] == "whole_brain"
    regions.loc[whole, ["region_volume_mm3", "count", "volume_fraction"]] = [
        brain_cm3 * 1000,
        count,
        pvs_fraction,
    ]
    census = pd.DataFrame({"volume_mm3": [5.0, 12.0], "region_index": [1, 5], "region": ["a", "b"]})
    return regions, census


def codes(flags) -> set[str]:
    return {flag.code for flag in flags}


def test_a_plausible_image_raises_no_flag():
    regions, census = _tables(1300, 400, 0.004)
    facts = {"contrast": "T2w", "model_contrasts": ["T2w"], "registration_overlap": 0.93}
    assert qc_flags(regions, census, facts, zooms=(0.8, 0.8, 0.8)) == []


@pytest.mark.parametrize(
    ("brain_cm3", "count", "fraction", "expected"),
    [
        (500, 400, 0.004, {"brain_volume_low"}),
        (2600, 400, 0.004, {"brain_volume_high"}),
        (1300, 2, 0.0001, {"pvs_burden_low"}),
        (1300, 4000, 0.08, {"pvs_burden_high"}),
    ],
)
def test_volume_and_burden_flags(brain_cm3, count, fraction, expected):
    regions, census = _tables(brain_cm3, count, fraction)
    assert codes(qc_flags(regions, census, {})) == expected


def test_cluster_registration_contrast_and_resolution_flags():
    regions, _ = _tables(1300, 400, 0.004)
    census = pd.DataFrame({"volume_mm3": [5.0, 2500.0, 3.0], "region_index": [0, 0, 5]})
    facts = {"contrast": "T1w", "model_contrasts": ["T2w"], "registration_overlap": 0.6}
    flags = qc_flags(regions, census, facts, zooms=(0.9, 0.9, 5.0))
    assert codes(flags) == {
        "large_cluster",
        "unassigned_pvs",
        "registration",
        "contrast_mismatch",
        "resolution",
    }
    assert {f.level for f in flags if f.code == "resolution"} == {"info"}
    assert any("2500 mm³" in f.message for f in flags)
    (mismatch,) = [f.message for f in flags if f.code == "contrast_mismatch"]
    assert mismatch == "The image is T1w but the model was trained on T2w: it is not validated for it."


def test_a_contrast_the_model_reads_inverted_is_flagged_as_such():
    regions, census = _tables(1300, 400, 0.004)
    facts = {"contrast": "T1w", "model_contrasts": ["T2w"], "model_inverted_contrasts": ["T1w"]}
    (flag,) = qc_flags(regions, census, facts)
    assert (flag.code, flag.level) == ("contrast_mismatch", "warning")
    assert "T2w: it reads it with inverted intensities, less accurately." in flag.message
    # a model also trained on T1w read inverted was trained for it: no mismatch
    assert qc_flags(regions, census, {**facts, "model_trained_inverted": ["T1w"]}) == []
    assert len(qc_flags(regions, census, {**facts, "model_trained_inverted": ["FLAIR"]})) == 1


def test_failed_registration_qc_is_flagged_without_an_overlap_value():
    regions, census = _tables(1300, 400, 0.004)
    assert codes(qc_flags(regions, census, {"registration_passed": False})) == {"registration"}
    assert codes(qc_flags(regions, census, {"registration_passed": True})) == set()


def test_thresholds_are_configurable():
    regions, census = _tables(1300, 400, 0.004)
    strict = QCThresholds(brain_volume_min_cm3=1500)
    assert codes(qc_flags(regions, census, {}, thresholds=strict)) == {"brain_volume_low"}


def test_methods_text_describes_what_was_done_and_cites_it():
    facts = {
        "contrast": "T2w",
        "n4": True,
        "skull_strip": "skipped",
        "method": "mednext",
        "model": "mednet-pvs-t2w",
        "folds": [0, 1],
        "tta": True,
        "threshold": 0.5,
        "min_cluster_size_mm3": 2.0,
        "regions": "atlas",
    }
    paragraphs, cited = methods_text(facts)
    text = " ".join(paragraphs)
    assert "N4" in text and "mednet-pvs-t2w" in text and "thresholded at 0.5" in text and "2 mm³" in text
    assert "skull stripping skipped" in text and "averaging folds 0, 1" in text
    assert cited[:3] == ["bids", "n4", "mednext"]
    assert {"potter", "strive", "ants"} <= set(cited) and set(cited) <= set(REFERENCES)
    assert "[2]" in text and f"[{len(cited)}]" in text
    assert "inverted" not in text
    assert "averaging folds 0, 1, with mirroring test-time augmentation." in text
    text = " ".join(methods_text({**facts, "tta_mirroring": "left-right"})[0])
    assert "with mirroring test-time augmentation (the image and its left-right mirror)." in text
    text = " ".join(methods_text({**facts, "tta": False, "tta_mirroring": "left-right"})[0])
    assert "averaging folds 0, 1, without TTA." in text and "left-right" not in text
    inverted = {**facts, "contrast": "T1w", "model_contrasts": ["T2w"], "model_inverted_contrasts": ["T1w"]}
    text = " ".join(methods_text(inverted)[0])
    assert ", the T1w image read with inverted intensities by a model trained on T2w, averaging folds" in text
    text = " ".join(methods_text({**inverted, "model_trained_inverted": ["T1w"]})[0])
    assert (
        "read with inverted intensities by a model trained on T2w and on T1w read inverted, averaging" in text
    )


def test_methods_text_does_not_claim_a_model_it_does_not_know():
    paragraphs, cited = methods_text({"method": "frangi"})
    assert "Frangi" in " ".join(paragraphs) and "frangi" in cited and "mednext" not in cited
    paragraphs, cited = methods_text({})
    assert "do not record by which method" in " ".join(paragraphs) and "mednext" not in cited


def test_shared_citation_list_numbers_several_images_consistently():
    cited: list[str] = []
    methods_text({"n4": True, "method": "mednext"}, cited)
    second, _ = methods_text({"method": "frangi"}, cited)
    assert cited.index("frangi") + 1 == len(cited)
    assert f"[{len(cited)}]" in " ".join(second)


def test_software_versions_name_the_libraries():
    versions = software_versions()
    assert versions["mednet-pvs"] and versions["numpy"] == np.__version__


def test_html_table_formats_numbers_and_escapes_text():
    frame = pd.DataFrame({"name": ["<b>x</b>", "y"], "value": [1234567.25, np.nan], "n": [3, 4]})
    rendered = table(frame)
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered and "1,234,567" in rendered and "n/a" in rendered
    assert '<td class="text">y</td>' in rendered
