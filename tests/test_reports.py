"""Per-participant HTML report on small synthetic outputs: files, figures, self-containment, content."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from mednet_pvs.reports.discovery import ReportInputError, discover_images, image_facts
from mednet_pvs.reports.figures import DisplayVolumes
from mednet_pvs.reports.subject import write_subject_report
from mednet_pvs.stats import compute_statistics, derivative_path, write_statistics
from mednet_pvs.utils.atomic import save_nifti, write_json

SHAPE = (40, 44, 30)


def _regions_and_pvs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain ellipsoid with CSO (top), deep WM (middle) and BG (low centre); vertical and BG tubes."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    brain = (grid**2).sum(0) < 0.85
    right = np.broadcast_to(np.arange(SHAPE[0])[:, None, None] >= SHAPE[0] // 2, SHAPE)  # RAS: high x = right
    z = np.broadcast_to(np.arange(SHAPE[2])[None, None, :], SHAPE)
    regions = np.where(brain, 12, 0).astype(np.uint8)
    bg = (np.abs(grid[1]) < 0.3) & (np.abs(grid[0]) > 0.1) & (np.abs(grid[0]) < 0.5) & (z >= 5) & (z < 10)
    for left_label, selection in ((1, z >= 18), (3, (z >= 10) & (z < 18)), (5, bg)):
        selection = brain & selection
        regions[selection] = left_label + right[selection]
    mask = np.zeros(SHAPE, bool)
    for x in range(6, 34, 4):  # vertical CSO tubes
        y = int(rng.integers(12, 32))
        mask[x, y, 19:26] = True
    for x in (12, 15, 25, 28):  # short BG tubes
        mask[x, 22, 6:9] = True
    mask &= brain
    return regions, mask, brain


def build_outputs(
    root: Path, subject: str = "01", session: str | None = "1", with_source: bool = True
) -> Path:
    """A raw dataset and a derivative folder with every output of one T2w image; returns output_dir."""
    rng = np.random.default_rng(int(subject))
    affine = np.diag([-1.0, -1.0, 1.5, 1.0])  # LPS-like, anisotropic
    affine[:3, 3] = [20.0, 22.0, -20.0]
    regions_ras, mask_ras, brain_ras = _regions_and_pvs(rng)
    flip = (slice(None, None, -1), slice(None, None, -1), slice(None))  # RAS arrays -> LPS grid
    regions, mask, brain = regions_ras[flip], mask_ras[flip], brain_ras[flip]
    anatomy = np.where(brain, 100.0, 0.0) + brain * rng.normal(0, 5, SHAPE) + mask * 120
    probability = np.clip(mask * 0.85 + brain * rng.uniform(0, 0.2, SHAPE), 0, 1).astype(np.float32)

    raw, out = root / "raw", root / "out"
    entities = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    anat = Path(f"sub-{subject}") / (f"ses-{session}" if session else "") / "anat"
    source = raw / anat / f"{entities}_T2w.nii.gz"
    reference = nib.Nifti1Image(anatomy.astype(np.float32), affine)
    if with_source:
        source.parent.mkdir(parents=True, exist_ok=True)
        nib.save(reference, source)
    uri = f"bids:raw:{(anat / source.name).as_posix()}"
    prefix = out / anat / entities
    for kind, data, dtype in (
        ("mask", mask, np.uint8),
        ("probseg", probability, np.float32),
        ("brain_mask", brain, np.uint8),
        ("regions", regions, np.uint8),
    ):
        path = derivative_path(prefix, kind)
        save_nifti(nib.Nifti1Image(data.astype(dtype), affine), path)
        meta = {"Sources": [uri]}
        if kind == "probseg":
            meta["Model"] = {
                "name": "tiny",
                "version": "0.1",
                "contrasts": ["T2w"],
                "inverted_contrasts": ["T1w"],
                "device": "cpu",
                "provenance": {"training": {"contrasts_trained_inverted": ["T1w"]}},
            }
        write_json(Path(str(path).removesuffix(".nii.gz") + ".json"), meta)
    stats = compute_statistics(mask, affine, regions, probability, brain)
    write_statistics(prefix, stats, reference, [uri], {"threshold": 0.5, "min_cluster_size_mm3": 2.0})
    write_json(
        out / "dataset_description.json",
        {
            "Name": "t",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "DatasetLinks": {"raw": raw.as_uri()},
        },
    )
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("report")
    out = build_outputs(root, session="1")
    build_outputs(root, session="2")
    return out, write_subject_report(out, "sub-01")


def _references(document: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]*)"', document)


def test_report_is_written_at_the_output_root_and_covers_every_session(report):
    out, path = report
    assert path == out / "sub-01.html"
    document = path.read_text()
    for prefix in ("sub-01_ses-1", "sub-01_ses-2"):
        assert f'<section id="{prefix}">' in document
        assert f'href="#{prefix}"' in document


def test_every_referenced_figure_exists_and_is_a_real_image(report):
    out, path = report
    sources = re.findall(r'<img src="([^"]+)"', path.read_text())
    assert len(sources) == 12  # six figures for each of the two images
    for src in sources:
        assert src.startswith("sub-01/figures/") and src.endswith(".png")
        figure = imread(out / src)
        assert figure.shape[0] > 300 and figure.shape[1] > 600
        assert figure[..., :3].std() > 0.05  # not a blank canvas


def test_report_references_nothing_external(report):
    _, path = report
    document = path.read_text()
    for reference in _references(document):
        assert reference.startswith(("#", "sub-01/figures/")), reference
    assert "<script" not in document and "<link" not in document
    assert "url(" not in document and "@import" not in document
    anchors = set(re.findall(r'id="([^"]+)"', document))
    assert {ref[1:] for ref in _references(document) if ref.startswith("#")} <= anchors


def test_report_shows_inputs_tables_methods_and_automated_label(report):
    _, path = report
    document = path.read_text()
    assert "sub-01_ses-1_T2w.nii.gz" in document  # source found through DatasetLinks
    assert "40 x 44 x 30" in document and "1 x 1 x 1.5" in document and "LPS" in document
    assert "Region statistics" in document and "centrum_semiovale" in document
    assert "automated estimates, not visual ratings" in document
    assert "Potter GM, Chappell FM, Morris Z, Wardlaw JM" in document
    assert "thresholded at 0.5" in document and "tiny" in document
    assert "brain_volume_low" in document  # the 40 x 44 x 45 mm phantom is far below an adult brain
    assert "<td>contrast</td><td>T2w</td>" in document


def test_reports_can_be_regenerated_from_the_files_alone(report):
    out, _ = report
    figures = out / "sub-01" / "figures"
    names = sorted(p.name for p in figures.iterdir())
    for figure in figures.iterdir():
        figure.unlink()
    write_subject_report(out, "01")
    assert sorted(p.name for p in figures.iterdir()) == names
    assert "sub-01_ses-2_desc-ratingslices.png" in names


def test_participant_without_statistics_is_a_clear_error(tmp_path):
    with pytest.raises(ReportInputError, match=r"sub-03.*no region statistics"):
        write_subject_report(tmp_path, "03")


def test_explicit_provenance_overrides_sidecars_and_a_missing_source_is_tolerated(tmp_path):
    out = build_outputs(tmp_path, subject="04", session=None, with_source=False)
    provenance = {
        "device": "cuda:0",
        "images": {"sub-04": {"registration_overlap": 0.5, "timings": {"segment": 3}}},
    }
    (image,) = discover_images(out, "04", provenance)
    facts = image_facts(image)
    assert facts["device"] == "cuda:0"  # explicit, not the sidecar's "cpu"
    assert facts["model"] == "tiny" and facts["model_contrasts"] == ["T2w"]  # from the probseg sidecar
    assert facts["model_inverted_contrasts"] == facts["model_trained_inverted"] == ["T1w"]
    assert facts["threshold"] == 0.5
    assert facts["contrast"] is None  # the source image is not there to tell
    document = write_subject_report(out, "04", provenance=provenance).read_text()
    assert "registration" in document and "0.50 is below 0.85" in document
    assert "time: segment (s)" in document
    assert "not found (outputs only)" in document
    assert len(re.findall(r"<img ", document)) == 6


def test_display_volumes_map_native_slices_to_the_canonical_grid(tmp_path):
    out = build_outputs(tmp_path, subject="05", session=None)
    (image,) = discover_images(out, "05")
    volumes = DisplayVolumes.load(image)
    native = np.asarray(nib.load(image.path("mask")).dataobj) > 0
    # LPS -> RAS flips x and y only: the canonical mask is the native one flipped, then cropped.
    canonical = native[::-1, ::-1, :]
    start = volumes.crop_start
    crop = canonical[start[0] :, start[1] :, start[2] :][tuple(slice(0, s) for s in volumes.mask.shape)]
    np.testing.assert_array_equal(volumes.mask, crop)
    assert volumes.zooms == (1.0, 1.0, 1.5)
    assert volumes.canonical_axial_index(12) == 12 - start[2]


def test_sidecar_metadata_is_embedded_for_review(report):
    _, path = report
    document = path.read_text()
    block = document.split("Metadata recorded in the JSON sidecars</summary><pre>")[1].split("</pre>")[0]
    assert json.loads(block.replace("&quot;", '"'))["probseg"]["Model"]["name"] == "tiny"


def test_facts_read_the_mask_sidecar_and_saved_configuration(tmp_path):
    out = build_outputs(tmp_path, subject="06", session=None)
    anat = out / "sub-06" / "anat"
    (anat / "sub-06_desc-pvs_mask.json").write_text(
        json.dumps(
            {"Threshold": 0.4, "MinClusterSizeMM3": 3.0, "Method": {"name": "frangi", "parameters": {}}}
        )
    )
    (anat / "sub-06_desc-pvs_morph.json").write_text(json.dumps({"Sources": []}))  # no Parameters
    (anat / "sub-06_label-PVS_probseg.json").write_text("{}")
    log = out / "sub-06" / "log" / "20260101-000000_abc"
    log.mkdir(parents=True)
    (log / "mednet-pvs.toml").write_text(
        'method = "frangi"\nskip_n4 = true\nregions = "atlas"\ndevice = "cpu"\n'
    )
    (image,) = discover_images(out, "sub-06")
    facts = image_facts(image)
    assert (facts["threshold"], facts["min_cluster_size_mm3"], facts["model"]) == (0.4, 3.0, "frangi")
    assert (facts["method"], facts["n4"], facts["regions"]) == ("frangi", False, "atlas")
    assert facts["contrast"] == "T2w"  # the source is still found through the other sidecars
