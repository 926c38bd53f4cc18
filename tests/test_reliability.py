"""Reliability (issue 7): bad inputs, atomic outputs, resume, isolation, determinism and security.

The catalogue of bad inputs runs the command line ONCE on one dataset with one participant per case
(docs/reliability.md lists every case with the test that proves it).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mednet_pvs.cli.run import main
from mednet_pvs.errors import InputImageError
from mednet_pvs.preproc.conform import load_anatomical
from mednet_pvs.preproc.contrast import estimate_weighting, warn_on_contrast_mismatch
from mednet_pvs.utils import atomic
from tests.bids_factory import make_bids, write_image
from tests.conftest import make_phantom
from tests.model_factory import threshold_model

REPO = Path(__file__).resolve().parents[1]
FAST = ["--skip-bids-validation", "--skip-n4", "--skip-skull-strip", "--regions", "none", "--no-tta"]
SHAPE = (48, 56, 40)


# ------------------------------------------------------------------------------------ phantoms
def tissue_phantom(weighting: str, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> nib.Nifti1Image:
    """A skull-stripped 'brain': CSF rim, cortex, white matter, ventricles, with T1w or T2w intensities."""
    csf, grey, white = {"T1w": (30.0, 70.0, 100.0), "T2w": (200.0, 110.0, 80.0)}[weighting]
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    data = np.select([radius < 0.3, radius < 0.6, radius < 0.8, radius < 0.9], [csf, white, grey, csf], 0.0)
    data += (radius < 0.9) * np.random.default_rng(seed).normal(0, 3, shape)
    return nib.Nifti1Image(data.astype(np.float32), np.eye(4))


def _image(data: np.ndarray, affine: np.ndarray | None = None) -> nib.Nifti1Image:
    return nib.Nifti1Image(data, np.eye(4) if affine is None else affine)


def _phantom_data() -> np.ndarray:
    return np.asarray(make_phantom().dataobj)


# ------------------------------------------------------------------------------ the catalogue
@dataclass(frozen=True)
class Case:
    """One participant of the catalogue dataset: how its T2w file is made and what must happen."""

    write: Callable[[Path], None]
    outcome: str  # "refused" (preflight error), "crashed" (node crash), "completed"
    message: str = ""  # a regex the log must show for this participant's file


def _save(img: nib.Nifti1Image) -> Callable[[Path], None]:
    return lambda path: write_image(path, img)


def _truncated(path: Path) -> None:
    write_image(path, make_phantom())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _broken_link(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # what an un-fetched git-annex/DataLad file looks like: a link into the (absent) annex
    os.symlink("../../.git/annex/objects/Xx/Yy/MD5E-s1--0.nii.gz/MD5E-s1--0.nii.gz", path)


def _working_link(path: Path) -> None:
    target = path.parents[3] / "annex" / "content.nii.gz"
    write_image(target, make_phantom(seed=3))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


def _with_non_finite() -> nib.Nifti1Image:
    data = _phantom_data()
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    return _image(data)


def _integer_scaled() -> nib.Nifti1Image:
    img = _image(np.round(_phantom_data() * 100).astype(np.int16))
    img.header.set_slope_inter(0.01, 0.0)
    return img


def _sform_qform_disagree() -> nib.Nifti1Image:
    img = make_phantom()
    shifted = np.eye(4)
    shifted[:3, 3] = [4.0, 0.0, 0.0]
    img.set_qform(shifted, code=1)
    img.set_sform(np.eye(4), code=2)
    return img


def _singular() -> nib.Nifti1Image:
    img = make_phantom()
    img.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=2)
    img.set_qform(None, code=0)
    return img


def _anisotropic() -> nib.Nifti1Image:
    # 0.4 x 0.4 x 5 mm voxels over the same 48 x 56 x 40 mm field of view, tubes along y
    affine = np.diag([0.4, 0.4, 5.0, 1.0])
    return make_phantom(shape=(120, 140, 8), affine=affine)


CASES: dict[str, Case] = {
    "good": Case(_save(make_phantom()), "completed"),
    "empty": Case(
        lambda p: (p.parent.mkdir(parents=True), p.touch()), "refused", r"file is empty \(0 bytes\)"
    ),
    "truncated": Case(_truncated, "refused", r"is (truncated or corrupt|not a readable NIfTI)"),
    "notnifti": Case(
        lambda p: (p.parent.mkdir(parents=True), p.write_bytes(gzip.compress(b"<html>404</html>" * 50))),
        "refused",
        r"is not a readable NIfTI/MGH image",
    ),
    "fourd": Case(_save(_image(np.ones((*SHAPE, 3), np.float32))), "refused", r"is 4-D with 3 volumes"),
    "twod": Case(_save(_image(np.ones((48, 56, 1), np.float32))), "refused", r"is not a 3-D volume"),
    "allnan": Case(
        _save(_image(np.full(SHAPE, np.nan, np.float32))), "refused", r"contains no finite voxel values"
    ),
    "constant": Case(_save(_image(np.full(SHAPE, 7, np.int16))), "refused", r"has constant intensity"),
    "singular": Case(
        _save(_singular()), "refused", r"has an invalid \(singular or non-finite\) voxel-to-world affine"
    ),
    "annexed": Case(
        _broken_link, "refused", r"is a symbolic link to .*, which does not exist: .*datalad get"
    ),
    "nonfinite": Case(_save(_with_non_finite()), "completed", r"3 non-finite \(NaN/Inf\) voxels set to 0"),
    "scaled": Case(_save(_integer_scaled()), "completed"),
    "huge": Case(
        _save(_image(_phantom_data() * np.float32(1e30))), "completed", r"intensities reach 2.5e\+32"
    ),
    "sformqform": Case(
        _save(_sform_qform_disagree()), "completed", r"sform and qform disagree by up to 4 mm"
    ),
    "aniso": Case(_save(_anisotropic()), "completed"),
    "swapped": Case(
        _save(tissue_phantom("T1w")), "completed", r"named T2w, but its tissue intensities look T1w"
    ),
    "linked": Case(_working_link, "completed"),
    "tinyfov": Case(
        _save(_image(np.random.default_rng(0).uniform(50, 150, (12, 12, 12)).astype(np.float32))),
        "crashed",
        r"does not look brain-extracted",
    ),
}


def _source(bids: Path, label: str) -> Path:
    return bids / f"sub-{label}" / "anat" / f"sub-{label}_T2w.nii.gz"


@contextlib.contextmanager
def captured_log() -> Iterator[list[str]]:
    """Every mednet_pvs log message (INFO and up) of the block, as 'LEVEL message' lines."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(f"{record.levelname} {record.getMessage()}")  # type: ignore[method-assign]
    logger = logging.getLogger("mednet_pvs")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@dataclass
class Run:
    bids: Path
    out: Path
    code: int
    log: str


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return threshold_model(tmp_path_factory.mktemp("model") / "threshold")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory, model: Path) -> Run:
    """The catalogue dataset (one participant per case, plus one without any image) run once."""
    root = tmp_path_factory.mktemp("catalogue")
    bids = make_bids(root / "bids", {})
    for label, case in CASES.items():
        case.write(_source(bids, label))
    (bids / "sub-noimage" / "anat").mkdir(parents=True)
    (bids / "sub-noimage" / "anat" / "sub-noimage_T2w.json").write_text("{}")
    out = root / "out"
    argv = [str(bids), str(out), "participant", "--model", str(model), "-w", str(root / "work"), *FAST]
    with captured_log() as lines:
        code = main([*argv, "--nprocs", "2", "--omp-nthreads", "1"])
    return Run(bids, out, code, "\n".join(lines))


def _files_outside_log(out: Path, label: str) -> list[Path]:
    folder = out / f"sub-{label}"
    files = [p for p in folder.rglob("*") if p.is_file() and "log" not in p.relative_to(folder).parts[:1]]
    return files + [p for p in [out / f"sub-{label}.html"] if p.exists()]


@pytest.mark.slow
def test_catalogue_run_summary_and_exit_code(catalogue: Run) -> None:
    assert catalogue.code == 1  # some participants failed, the others completed
    completed = sorted(k for k, c in CASES.items() if c.outcome == "completed")
    failed = sorted(k for k, c in CASES.items() if c.outcome != "completed")
    assert f"participants: {len(completed)} completed, {len(failed)} failed, 1 skipped" in catalogue.log
    assert "sub-noimage: skipped: no T2w or T1w image found" in catalogue.log


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(k for k, c in CASES.items() if c.outcome == "refused"))
def test_catalogue_refused_inputs(catalogue: Run, label: str) -> None:
    source, case = _source(catalogue.bids, label), CASES[label]
    summary = re.search(rf"ERROR +sub-{label}: FAILED: (.*)", catalogue.log)
    assert summary and re.search(rf"{re.escape(str(source))}: {case.message}", summary.group(1))
    (error_file,) = (catalogue.out / f"sub-{label}" / "log").glob("*/error-*.txt")
    assert str(source) in error_file.read_text() and re.search(case.message, error_file.read_text())
    assert _files_outside_log(catalogue.out, label) == []


@pytest.mark.slow
def test_catalogue_crashed_node_leaves_a_crash_file(catalogue: Run) -> None:
    source, case = _source(catalogue.bids, "tinyfov"), CASES["tinyfov"]
    (crash,) = (catalogue.out / "sub-tinyfov" / "log").glob("*/crash-*.txt")
    assert str(source) in crash.read_text() and re.search(case.message, crash.read_text())
    summary = re.search(r"ERROR +sub-tinyfov: FAILED: (.*)", catalogue.log)
    assert summary and re.search(case.message, summary.group(1)) and str(crash) in summary.group(1)
    assert not (catalogue.out / "sub-tinyfov" / "anat").exists()
    assert not (catalogue.out / "sub-tinyfov.html").exists()


def _tubes(source: Path) -> np.ndarray:
    data = load_anatomical(source).get_fdata()
    return data >= 0.9 * data.max()


@pytest.mark.slow
@pytest.mark.parametrize("label", sorted(k for k, c in CASES.items() if c.outcome == "completed"))
def test_catalogue_other_participants_complete(catalogue: Run, label: str) -> None:
    source, case = _source(catalogue.bids, label), CASES[label]
    assert re.search(rf"^INFO +sub-{label}: completed$", catalogue.log, re.MULTILINE)
    if case.message:
        assert re.search(rf"WARNING {re.escape(str(source))}: {case.message}", catalogue.log)
    anat = catalogue.out / f"sub-{label}" / "anat"
    raw = nib.load(source)
    for suffix in ("desc-pvs_mask", "label-PVS_probseg", "desc-brain_mask", "desc-pvsclusters_dseg"):
        img = nib.load(anat / f"sub-{label}_{suffix}.nii.gz")
        assert img.shape == raw.shape[:3]
        np.testing.assert_allclose(img.affine, load_anatomical(source).affine, atol=1e-5)
    for table in ("desc-pvs_morph", "desc-pvsclusters_morph"):
        assert "region" in pd.read_csv(anat / f"sub-{label}_{table}.tsv", sep="\t").columns
        assert json.loads((anat / f"sub-{label}_{table}.json").read_text())
    assert (catalogue.out / f"sub-{label}.html").is_file()
    if label in ("good", "nonfinite", "scaled", "huge", "sformqform", "linked"):
        mask = np.asarray(nib.load(anat / f"sub-{label}_desc-pvs_mask.nii.gz").dataobj) > 0
        np.testing.assert_array_equal(mask, _tubes(source))


# -------------------------------------------------------------------------- focused input tests
def test_tissue_order_tells_t1w_from_t2w() -> None:
    assert estimate_weighting(tissue_phantom("T1w")).weighting == "T1w"
    assert estimate_weighting(tissue_phantom("T2w")).weighting == "T2w"
    assert estimate_weighting(make_phantom()).weighting != "T1w"  # T2w-like stand-in: bright tubes
    tiny = _image(np.random.default_rng(1).uniform(0, 1, (6, 6, 6)).astype(np.float32))
    assert estimate_weighting(tiny).weighting == "unclear"


def test_t2w_that_is_really_t1w_warns_with_the_file_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mednet_pvs"):
        estimate = warn_on_contrast_mismatch(tissue_phantom("T1w"), "T2w", "/data/sub-1_T2w.nii.gz")
    assert estimate.weighting == "T1w" and estimate.score < -0.5
    assert "/data/sub-1_T2w.nii.gz: named T2w, but its tissue intensities look T1w" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mednet_pvs"):
        warn_on_contrast_mismatch(tissue_phantom("T2w"), "T2w", "/data/sub-1_T2w.nii.gz")
    assert caplog.text == ""


REAL_SCANS = {
    "M2208_T2w.nii.gz": "T2w",
    "stroke_T2w.nii.gz": "T2w",
    "stroke_T1w.nii.gz": "T1w",
    "colin27_T1w.nii.gz": "T1w",
    "head_T1w.nii.gz": "T1w",  # whole head with skull and neck
    "fs_norm.mgz": "T1w",
}


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(REAL_SCANS))
def test_contrast_check_on_real_scans(shared_dir: Path, name: str) -> None:
    estimate = estimate_weighting(nib.load(shared_dir / "data" / "real" / name))
    assert estimate.weighting == REAL_SCANS[name], estimate


def test_broken_and_working_symbolic_links(tmp_path: Path) -> None:
    link = tmp_path / "sub-1_T2w.nii.gz"
    _broken_link(link)
    with pytest.raises(
        InputImageError, match=r"sub-1_T2w.nii.gz: is a symbolic link to .*annex.*datalad get"
    ):
        load_anatomical(link)
    working = tmp_path / "a" / "b" / "c" / "sub-2_T2w.nii.gz"
    _working_link(working)
    assert load_anatomical(working).shape == SHAPE


def test_full_disk_names_the_output_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "sub-1_desc-pvs_mask.nii.gz"
    atomic.save_nifti(make_phantom(), final)
    previous = final.read_bytes()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic.save_nifti(make_phantom(seed=5), final)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(final)
    assert final.read_bytes() == previous  # the previous complete output is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    with pytest.raises(OSError, match=re.escape(str(tmp_path / "table.tsv"))):
        atomic.write_tsv(tmp_path / "table.tsv", pd.DataFrame({"a": [1]}))
    with pytest.raises(OSError, match=re.escape(str(tmp_path / "dataset_description.json"))):
        atomic.create_once(tmp_path / "dataset_description.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    host = atomic._host()
    stale = tmp_path / "sub-1" / f".x.nii.gz.{host}-{dead.stdout.strip()}.abc123.tmp.nii.gz"
    live = tmp_path / "sub-1" / f".y.tsv.{host}-{os.getpid()}.abc123.tmp.tsv"
    old = tmp_path / ".z.json.otherhost-1.abc123.tmp.json"
    visible = tmp_path / "sub-1" / "keep.tmp.txt"
    for path in (stale, live, old, visible):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")
    day_ago = time.time() - atomic.STALE_AFTER_S - 60
    os.utime(old, (day_ago, day_ago))
    assert atomic.remove_stale_temporaries(tmp_path, recursive=False) == [old]
    assert atomic.remove_stale_temporaries(tmp_path) == [stale]
    assert live.exists() and visible.exists()
    with atomic.atomic_path(tmp_path / "new.txt") as tmp:  # names what the cleaner can parse
        assert atomic._TEMPORARY_NAME.match(tmp.name)["pid"] == str(os.getpid())
        tmp.write_text("done")


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    bids = make_bids(tmp_path / "bids", {})
    write_image(_source(bids, "01"), make_phantom())
    return bids


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return int(info.value.code)


def test_output_or_work_dir_that_cannot_be_created_exits_2(
    small_dataset: Path, tmp_path: Path, capsys
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = _exit_code([small_dataset, blocker / "out", "participant", "-w", tmp_path / "w", *FAST])
    assert (
        code == 2
        and f"output_dir {blocker / 'out'} cannot be written (Not a directory)" in capsys.readouterr().err
    )
    code = _exit_code([small_dataset, tmp_path / "out", "participant", "-w", blocker / "w", *FAST])
    assert code == 2 and f"work dir {blocker / 'w'} cannot be created or written" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; chmod cannot simulate it")
def test_read_only_output_dir_exits_2(small_dataset: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        code = _exit_code([small_dataset, out, "participant", "-w", tmp_path / "w", *FAST])
    finally:
        out.chmod(0o700)
    assert code == 2 and f"output_dir {out} cannot be written (Permission denied)" in capsys.readouterr().err


def test_corrupted_weights_are_refused_before_any_work(
    small_dataset: Path, tiny_model: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_model, tmp_path / "model")
    weights = model / "fold_1.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with captured_log() as lines:
        code = main([str(small_dataset), str(tmp_path / "out"), "participant", "--model", str(model), *FAST])
    assert code == 1
    assert any(f"{weights}: sha256 mismatch" in line and line.startswith("ERROR") for line in lines)
    assert not (tmp_path / "out" / "sub-01").exists()


@pytest.mark.parametrize("inverted", [[], ["T2w"]])
def test_model_for_another_contrast_warns(small_dataset: Path, tmp_path: Path, monkeypatch, inverted) -> None:
    from mednet_pvs.models.mednext import mednext_architecture
    from mednet_pvs.models.store import random_model

    arch = mednext_architecture("S", kernel_size=3, init_filters=4, deep_supervision=True)
    model = random_model(
        tmp_path / "t1model", arch, contrasts=("T1w",), inverted_contrasts=inverted, patch_size=(32, 32, 32)
    )
    reached = []
    monkeypatch.setattr(
        "mednet_pvs.pipeline._run_workflow", lambda config, images, *a: reached.append(images)
    )
    with captured_log() as lines:
        main([str(small_dataset), str(tmp_path / "out"), "participant", "--model", str(model), *FAST])
    source = _source(small_dataset, "01")
    warning = f"WARNING {source}: the model reads T1w, not T2w; results may be poor"
    assert (warning in lines) is not inverted  # a contrast the card reads inverted is expected
    assert ("INFO the model reads T2w images with inverted intensities" in lines) is bool(inverted)
    assert [r.path for r in reached[0]["01"]] == [source]  # a warning, not a refusal


def test_stop_on_first_crash_at_a_refused_input(tmp_path: Path, model: Path) -> None:
    bids = make_bids(tmp_path / "bids", {})
    _source(bids, "a").parent.mkdir(parents=True)
    _source(bids, "a").touch()
    write_image(_source(bids, "b"), make_phantom())
    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--model", str(model), "-w", str(tmp_path / "w"), *FAST]
    with captured_log() as lines:
        code = main([*argv, "--stop-on-first-crash"])
    assert code == 1
    assert any(re.fullmatch(r"ERROR +sub-a: FAILED: .*file is empty \(0 bytes\)", line) for line in lines)
    assert any(
        re.fullmatch(r"WARNING +sub-b: skipped: not run: --stop-on-first-crash.*", line) for line in lines
    )
    assert not (out / "sub-b").exists()


def _simulated_crash(self, runtime):
    raise RuntimeError("simulated crash in conform")


@pytest.mark.parametrize("stop", [True, False])
def test_node_crash_isolation_and_stop_on_first_crash(
    tmp_path: Path, model: Path, monkeypatch, stop: bool
) -> None:
    bids = make_bids(tmp_path / "bids", {})
    for label in ("a", "b"):
        write_image(_source(bids, label), make_phantom())
    monkeypatch.setattr("mednet_pvs.interfaces.images.Conform._run_interface", _simulated_crash)
    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--model", str(model), "-w", str(tmp_path / "w"), *FAST]
    with captured_log() as lines:
        code = main([*argv, "--nipype-plugin", "Linear", *(["--stop-on-first-crash"] if stop else [])])
    assert code == 1
    crashes = {label: list((out / f"sub-{label}" / "log").glob("*/crash-*conform*.txt")) for label in "ab"}
    failed = [label for label in "ab" if crashes[label]]
    assert len(failed) == (1 if stop else 2)
    for label in failed:
        assert "simulated crash in conform" in crashes[label][0].read_text()
        summary = rf"ERROR +sub-{label}: FAILED: .*simulated crash in conform.*"
        assert any(re.fullmatch(summary, line) for line in lines)
    if stop:
        (other,) = set("ab") - set(failed)
        assert any(re.fullmatch(rf"WARNING +sub-{other}: skipped: not run: .*", line) for line in lines)


def test_full_disk_fails_one_participant_and_the_other_completes(
    tmp_path: Path, model: Path, monkeypatch
) -> None:
    bids = make_bids(tmp_path / "bids", {})
    for label in ("full", "good"):
        write_image(_source(bids, label), make_phantom())
    copy = shutil.copyfile

    def copy_to_full_disk(src: str, dst: str) -> str:
        if "sub-full_" in Path(dst).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return copy(src, dst)

    monkeypatch.setattr("mednet_pvs.interfaces.bids.shutil.copyfile", copy_to_full_disk)
    out = tmp_path / "out"
    argv = [str(bids), str(out), "participant", "--model", str(model), "-w", str(tmp_path / "w"), *FAST]
    with captured_log() as lines:
        code = main([*argv, "--nipype-plugin", "Linear"])
    assert code == 1
    final = out / "sub-full" / "anat" / "sub-full_desc-brain_mask.nii.gz"
    failure = next(line for line in lines if re.match(r"ERROR +sub-full: FAILED", line))
    assert f"No space left on device: '{final}'" in failure
    assert not list((out / "sub-full").rglob("*.nii.gz")) and not list(out.rglob("*.tmp*"))
    assert any(re.fullmatch(r"INFO +sub-good: completed", line) for line in lines)
    assert (out / "sub-good" / "anat" / "sub-good_desc-pvs_mask.nii.gz").is_file()


# ---------------------------------------------------- determinism, network, resume, kill-and-rerun
def _argv(bids: Path, out: Path, work: Path, model: Path, *extra: str) -> list[str]:
    # one thread per node and two workers: the same settings in every run of this module
    threads = ["--nprocs", "2", "--omp-nthreads", "1"]
    return [
        str(bids),
        str(out),
        "participant",
        "--model",
        str(model),
        "-w",
        str(work),
        *FAST,
        *threads,
        *extra,
    ]


def _outputs(out: Path) -> dict[str, bytes]:
    """NIfTI images and TSV tables of the participant (masks, probabilities, statistics).

    Hidden dot files are the atomic writers' temporaries (``.name.tsv.<id>.tmp.tsv``), not outputs;
    pathlib's ``*`` matches them too.
    """
    files = [*out.glob("sub-*/anat/*.nii.gz"), *out.glob("sub-*/anat/*.tsv")]
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(files) if not p.name.startswith(".")}


#: the random model's probabilities inside the phantom: median 0.16, 99th percentile 0.29
THRESHOLD = ("--threshold", "0.25")


def _blocked(*args, **kwargs):
    raise OSError(errno.ENETUNREACH, "network access blocked by the test")


@dataclass(frozen=True)
class Reference:
    bids: Path
    out: Path
    work: Path
    outputs: dict[str, bytes]  # as the clean run wrote them (later tests rerun into ``out``)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Reference:
    """One clean run with a random-weight MedNeXt (2 folds) and the network blocked.

    Linear runs every node in this process, so the blocked socket functions cover the whole run.
    """
    root = tmp_path_factory.mktemp("reference")
    bids = make_bids(root / "bids", {})
    write_image(_source(bids, "01"), make_phantom(seed=4))
    out, work = root / "out", root / "work"
    with pytest.MonkeyPatch.context() as patch:
        for name in ("socket", "create_connection", "getaddrinfo"):
            patch.setattr(socket, name, _blocked)
        code = main(_argv(bids, out, work, tiny_model, "--nipype-plugin", "Linear", *THRESHOLD))
    assert code == 0
    return Reference(bids, out, work, _outputs(out))


@pytest.mark.slow
def test_no_network_needed_and_cpu_results_are_bit_identical(
    reference: Reference, tiny_model: Path, tmp_path: Path
) -> None:
    assert {Path(k).name for k in reference.outputs} >= {
        "sub-01_desc-pvs_mask.nii.gz",
        "sub-01_label-PVS_probseg.nii.gz",
        "sub-01_desc-pvs_morph.tsv",
        "sub-01_desc-pvsclusters_morph.tsv",
    }
    mask = np.asarray(nib.load(reference.out / "sub-01" / "anat" / "sub-01_desc-pvs_mask.nii.gz").dataobj)
    assert 0 < mask.sum() < 0.2 * mask.size  # the random model marks some voxels: a real comparison
    again = tmp_path / "out"
    assert main(_argv(reference.bids, again, tmp_path / "work", tiny_model, *THRESHOLD)) == 0  # MultiProc
    assert _outputs(again) == reference.outputs


def _executed_nodes(out: Path) -> set[str]:
    log = sorted((out / "logs").iterdir())[-1] / "pypeline.log"
    return set(re.findall(r'\[Node\] Executing "([^"]+)"', log.read_text()))


@pytest.mark.slow
def test_resume_reruns_only_what_an_option_changes(reference: Reference, tiny_model: Path) -> None:
    bids, out, work = reference.bids, reference.out, reference.work
    assert main(_argv(bids, out, work, tiny_model, "--nipype-plugin", "Linear", *THRESHOLD)) == 0
    computing = {"conform", "skullstrip", "mednext", "native_probseg", "pvs_mask", "statistics"}
    assert not computing & _executed_nodes(out)  # all cached; sinks and report always run
    changed = ("--nipype-plugin", "Linear", "--threshold", "0.3")
    assert main(_argv(bids, out, work, tiny_model, *changed)) == 0
    executed = _executed_nodes(out)
    assert {"pvs_mask", "statistics"} <= executed and not {"conform", "skullstrip", "mednext"} & executed
    assert main(_argv(bids, out, work, tiny_model, *changed, "--clean-workdir")) == 0
    assert computing <= _executed_nodes(out)


def _check_loadable(out: Path) -> None:
    """Every visible output loads; temporaries (hidden dot files) are the only partial files."""
    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.endswith(".nii.gz"):
            np.asarray(nib.load(path).dataobj)
        elif path.suffix == ".tsv":
            pd.read_csv(path, sep="\t")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".html":
            assert path.read_text().rstrip().endswith("</html>"), path


@pytest.mark.slow
def test_killed_runs_leave_complete_files_and_a_rerun_finishes(
    reference: Reference, tiny_model: Path, tmp_path: Path
) -> None:
    """Kill a whole run (its process group: the Nipype workers too) at seeded random moments."""
    command = [sys.executable, "-c", "import sys; from mednet_pvs.cli.run import main; sys.exit(main())"]
    timed = _argv(reference.bids, tmp_path / "timed", tmp_path / "timed_work", tiny_model, *THRESHOLD)
    started = time.monotonic()
    subprocess.run([*command, *timed], check=True, capture_output=True, timeout=600)
    duration = time.monotonic() - started  # of a whole run from scratch, on this machine now

    out, work = tmp_path / "out", tmp_path / "work"
    command += _argv(reference.bids, out, work, tiny_model, *THRESHOLD)
    rng, kills = random.Random(7), 0
    for _ in range(6):  # at most 6 tries for 3 kills of a running process
        process = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.1, 0.9) * duration)
        kills += process.poll() is None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        _check_loadable(out)
        partial = _outputs(out)
        assert all(partial[name] == reference.outputs[name] for name in partial)  # present: complete
        if kills == 3:
            break
    assert kills == 3
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    _check_loadable(out)
    assert _outputs(out) == reference.outputs
    assert not list(out.rglob("*.tmp*"))  # the rerun removed what the killed runs left


# ------------------------------------------------------------------------------------ security
def test_source_has_no_shell_no_unsafe_loading() -> None:
    package = REPO / "mednet_pvs"
    offences = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        for pattern in (
            r"shell\s*=\s*True",
            r"os\.system\(",
            r"os\.popen\(",
            r"(?<![.\w])eval\(",
            r"(?<![.\w])exec\(",
        ):
            offences += [f"{path}: {pattern}" for _ in re.finditer(pattern, text)]
        if path.name != "safe_pickle.py":  # the restricted loaders (and the explicit --trust-pickle)
            offences += [f"{path}: pickle.load" for _ in re.finditer(r"pickle\.loads?\(", text)]
            for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
                if "weights_only=True" not in call.group(1):
                    offences.append(f"{path}: {call.group(0)}")
    assert offences == []


@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="bids-validator-deno not installed")
def test_dataset_without_description(small_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    (small_dataset / "dataset_description.json").unlink()
    argv = [str(small_dataset), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "w")]
    with captured_log() as lines:
        assert main([*argv, "--method", "frangi"]) == 1
    assert any("MISSING_DATASET_DESCRIPTION" in line and str(small_dataset) in line for line in lines)
    reached = []
    monkeypatch.setattr(
        "mednet_pvs.pipeline._run_workflow", lambda config, images, *a: reached.append(images)
    )
    with captured_log() as lines:
        main([*argv, *FAST, "--method", "frangi"])
    assert (
        f"WARNING {small_dataset}: no dataset_description.json, so this is not a valid BIDS dataset"
        in "\n".join(lines)
    )
    assert list(reached[0]) == ["01"]
