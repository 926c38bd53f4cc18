"""End to end through the command line on small generated datasets.

The threshold model (tests/model_factory.py) marks exactly the bright tube voxels, so the PVS mask
written by the full workflow must equal the tubes drawn in the input's own voxel grid, whatever
the orientation or voxel size.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mednet_pvs.cli.run import main
from tests.bids_factory import lps_affine, make_bids, oblique_affine, write_image
from tests.conftest import make_phantom
from tests.model_factory import threshold_model

GRIDS = {
    "ras": (np.diag([1.0, 1.0, 1.0, 1.0]), None),
    "lps": (lps_affine(), None),
    "oblique": (oblique_affine(degrees=20.0), None),
    "permuted": (np.array([[0, 0, 1.0, -20], [-1.0, 0, 0, 30], [0, 1.0, 0, -10], [0, 0, 0, 1.0]]), None),
}
ANISOTROPIC = lps_affine((0.5, 0.5, 2.0))
COMMON = ["--skip-bids-validation", "--skip-n4", "--skip-skull-strip", "--regions", "none", "--no-tta"]


@pytest.fixture(scope="module")
def grid_dataset(tmp_path_factory) -> Path:
    root = make_bids(tmp_path_factory.mktemp("grids") / "bids", {}, None)
    for label, (affine, _) in {**GRIDS, "aniso": (ANISOTROPIC, None)}.items():
        name = label.replace("_", "")
        write_image(root / f"sub-{name}" / "anat" / f"sub-{name}_T2w.nii.gz", make_phantom(affine=affine))
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{k}\t{50 + i}\n" for i, k in enumerate([*GRIDS, "aniso"]))
    )
    return root


def _expected_tubes(source: Path) -> np.ndarray:
    return np.asarray(nib.load(source).dataobj) == 250


def _check_outputs(out: Path, bids: Path, label: str) -> None:
    source = bids / f"sub-{label}" / "anat" / f"sub-{label}_T2w.nii.gz"
    raw = nib.load(source)
    anat = out / f"sub-{label}" / "anat"
    mask = nib.load(anat / f"sub-{label}_desc-pvs_mask.nii.gz")
    prob = nib.load(anat / f"sub-{label}_label-PVS_probseg.nii.gz")
    for img in (mask, prob, nib.load(anat / f"sub-{label}_desc-brain_mask.nii.gz")):
        assert img.shape == raw.shape
        np.testing.assert_allclose(img.affine, raw.affine, atol=1e-5)
        assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(raw.affine)
    assert mask.get_data_dtype() == np.uint8 and prob.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(mask.dataobj) > 0, _expected_tubes(source))
    census = pd.read_csv(anat / f"sub-{label}_desc-pvsclusters_morph.tsv", sep="\t")
    assert len(census) == 3  # three separate tubes
    sidecar = json.loads((anat / f"sub-{label}_desc-pvs_mask.json").read_text())
    assert sidecar["Sources"] == [
        f"bids:raw:sub-{label}/anat/sub-{label}_T2w.nii.gz",
        f"bids::sub-{label}/anat/sub-{label}_label-PVS_probseg.nii.gz",
    ]


@pytest.mark.slow
def test_grid_round_trip_resume_and_group(grid_dataset, tmp_path):
    model = threshold_model(tmp_path / "model", spacing=(1.0, 1.0, 1.0))
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [
        str(grid_dataset),
        str(out),
        "participant",
        "--model",
        str(model),
        "-w",
        str(work),
        "--participant-label",
        *GRIDS,
        *COMMON,
    ]
    assert main(argv) == 0
    for label in GRIDS:
        _check_outputs(out, grid_dataset, label)
    assert (out / "sub-oblique.html").is_file()

    # a rerun with the same work dir takes every computing node from the cache
    first = {p: p.read_bytes() for p in out.glob("sub-*/anat/*.nii.gz")}
    (out / "sub-lps" / "anat" / "sub-lps_desc-pvs_mask.nii.gz").unlink()
    assert main([*argv, "--nipype-plugin", "Linear"]) == 0
    log = next((out / "logs").glob("*/pypeline.log"))
    runs = sorted((out / "logs").iterdir())
    log = runs[-1] / "pypeline.log"
    text = log.read_text()
    assert "Cached" in text and '"mednext"' not in text.split("Cached")[0][-1:]  # cache hits logged
    assert 'Executing "mednext"' not in text
    assert {p: p.read_bytes() for p in out.glob("sub-*/anat/*.nii.gz")} == first  # deleted output restored

    # anisotropic voxels, with a model at the input's spacing (network axes z, y, x), and TTA
    # mirroring the image left-right (network axis 2); the voxel-wise model gives the same mask
    aniso_model = threshold_model(tmp_path / "model_aniso", spacing=(2.0, 0.5, 0.5))
    argv = [
        str(grid_dataset),
        str(out),
        "participant",
        "--model",
        str(aniso_model),
        "-w",
        str(work),
        "--participant-label",
        "aniso",
        "--nipype-plugin",
        "Linear",
        *[option for option in COMMON if option != "--no-tta"],
        "--tta-mirroring",
        "left-right",
    ]
    assert main(argv) == 0
    _check_outputs(out, grid_dataset, "aniso")
    sidecar = json.loads((out / "sub-aniso" / "anat" / "sub-aniso_desc-pvs_mask.json").read_text())
    assert sidecar["Method"]["tta"] is True and sidecar["Method"]["tta_mirroring"] == "left-right"
    report = (out / "sub-aniso.html").read_text()
    assert "with mirroring test-time augmentation (the image and its left-right mirror)" in report

    assert main([str(grid_dataset), str(out), "group"]) == 0
    group = pd.read_csv(out / "group_desc-pvs_morph.tsv", sep="\t")
    assert set(group["participant_id"]) == {f"sub-{k}" for k in [*GRIDS, "aniso"]}
    assert "age" in group.columns


def test_group_without_outputs_is_a_clear_error(grid_dataset, tmp_path, caplog):
    assert main([str(grid_dataset), str(tmp_path / "empty"), "group"]) == 1
    assert "nothing to aggregate" in caplog.text.lower() or "no " in caplog.text.lower()
