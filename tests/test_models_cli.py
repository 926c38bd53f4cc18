"""``mednet-pvs-models``: list, info, import, verify, remove; exit codes and messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mednet_pvs.cli.models import main
from mednet_pvs.models.registry import resolve_model

DATA = Path(__file__).parent / "data" / "nnunet_v1"
PINGU_TASK = DATA / "generic_unet_tiny" / "nnUNet" / "3d_fullres" / "Task101_LabelsSpecificplusWP5FCV"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDNET_PVS_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_import_list_info_verify_remove(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(PINGU_TASK), "--name", "pingu-tiny", "--licence", "CC-BY-4.0"]) == 0
    assert (home / "pingu-tiny" / "model.json").is_file()
    assert resolve_model("pingu-tiny").origin == "user"

    capsys.readouterr()
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "pingu-tiny" in listing and "nnU-Net UNet" in listing and "T1w" in listing

    assert main(["info", "pingu-tiny"]) == 0
    info = capsys.readouterr().out
    assert "licence: CC-BY-4.0" in info and "nnUNetTrainerV2" in info and "Nature Methods" in info
    assert main(["info", str(home / "pingu-tiny"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["licence"] == "CC-BY-4.0"

    assert main(["verify", "pingu-tiny"]) == 0
    assert main(["remove", "pingu-tiny"]) == 0
    assert not (home / "pingu-tiny").exists()


def test_verify_mismatch_exits_1_with_the_file_named(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["import", str(PINGU_TASK), "--dest", str(tmp_path / "models"), "--name", "p"]) == 0
    weights = tmp_path / "models" / "p" / "fold_1.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with caplog.at_level(logging.ERROR):
        assert main(["verify", str(tmp_path / "models" / "p")]) == 1
    assert "fold_1.safetensors: sha256 mismatch" in caplog.text
    assert "Traceback" not in caplog.text


def test_failures_and_usage_errors(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        assert main(["info", "no-such-model"]) == 1
        assert main(["remove", "no-such-model"]) == 1
        assert main(["import", str(DATA / "input")]) == 1
    assert "model 'no-such-model' not found" in caplog.text
    assert "no nnU-Net v1 model found" in caplog.text
    for argv in (
        ["import"],
        ["frobnicate"],
        ["import", str(DATA), "--name", "x"],
        ["import", str(DATA), "--name", "a/b"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_import_of_a_multi_task_folder_writes_one_model_per_task(home: Path) -> None:
    assert main(["import", str(DATA)]) == 0
    assert sorted(p.name for p in home.iterdir()) == [
        "task004_3dstratifiedsplits-mednext-l-k5",
        "task101_labelsspecificpluswp5fcv-nnunet",
    ]
    assert (
        main(["remove", str(home / "task004_3dstratifiedsplits-mednext-l-k5")]) == 1
    )  # a path is not a stored name


def test_a_local_folder_named_like_a_stored_model_wins_with_a_warning(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["import", str(PINGU_TASK), "--name", "pingu-tiny"]) == 0
    work = tmp_path / "work"
    assert main(["import", str(PINGU_TASK), "--dest", str(work), "--name", "pingu-tiny"]) == 0
    monkeypatch.chdir(work)
    with caplog.at_level(logging.WARNING):
        assert resolve_model("pingu-tiny").path == work / "pingu-tiny"
    assert "'pingu-tiny' is a folder here" in caplog.text and "also a user model" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_model("./pingu-tiny").origin == "path"
        monkeypatch.chdir(tmp_path)
        assert resolve_model("pingu-tiny").origin == "user"
    assert caplog.text == ""
