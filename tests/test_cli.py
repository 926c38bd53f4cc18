"""The mednet-pvs command line: options, placement rules, exit codes and messages."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from mednet_pvs import __version__
from mednet_pvs.cli.parser import build_parser, parse_memory_gb
from mednet_pvs.cli.run import main
from mednet_pvs.models.card import ModelCard
from tests.bids_factory import make_bids


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_bids(tmp_path_factory.mktemp("cli") / "ds", {"01": ["anat/sub-01_T2w.nii.gz"]})


def _exit_code(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    return info.value.code, capsys.readouterr()


def test_version(capsys):
    code, out = _exit_code(["--version"], capsys)
    assert code == 0
    assert out.out.strip() == f"mednet-pvs {__version__}"


@pytest.mark.parametrize("spelling", ["--participant-label", "--participant_label"])
def test_both_spellings(spelling):
    args = build_parser().parse_args(
        ["b", "o", "participant", spelling, "01", "sub-02", "--min_cluster_size", "3"]
    )
    assert args.participant_label == ["01", "sub-02"]
    assert args.min_cluster_size == 3.0


def test_defaults_and_booleans():
    args = build_parser().parse_args(
        ["b", "o", "participant", "--no-tta", "--mem", "8000MB", "--folds", "0", "2"]
    )
    assert args.tta is False
    assert args.mem_gb == pytest.approx(8.0)
    assert args.folds == [0, 2]
    assert args.contrast == "auto" and args.method == "mednext" and args.regions == "atlas"


@pytest.mark.parametrize(("text", "gb"), [("16", 16.0), ("16GB", 16.0), ("512M", 0.512), ("1.5g", 1.5)])
def test_memory_sizes(text, gb):
    assert parse_memory_gb(text) == pytest.approx(gb)


def test_usage_errors_exit_2(dataset, tmp_path, capsys):
    code, out = _exit_code([dataset, dataset, "participant"], capsys)
    assert code == 2 and "inside) the raw dataset" in out.err
    code, out = _exit_code([dataset, dataset / "sub-01" / "out", "participant"], capsys)
    assert code == 2 and "raw dataset" in out.err
    code, out = _exit_code([dataset, tmp_path / "o", "participant", "-w", dataset / "work"], capsys)
    assert code == 2 and "work dir" in out.err and "inside the BIDS dataset" in out.err
    code, out = _exit_code([tmp_path / "missing", tmp_path / "o", "participant"], capsys)
    assert code == 2 and "does not exist" in out.err
    code, out = _exit_code([dataset, tmp_path / "o", "participant", "--threshold", "1.5"], capsys)
    assert code == 2 and "not in (0, 1)" in out.err


def test_unknown_labels_exit_2_and_are_named(dataset, tmp_path, capsys):
    argv = [
        dataset,
        tmp_path / "o",
        "participant",
        "--participant-label",
        "01",
        "05",
        "--skip-bids-validation",
        "-w",
        tmp_path / "w",
        "--method",
        "frangi",
    ]
    code, out = _exit_code(argv, capsys)
    assert code == 2 and "participant label(s) not found" in out.err and "05" in out.err
    argv = [
        dataset,
        tmp_path / "o",
        "participant",
        "--participant-label",
        "../x",
        "--skip-bids-validation",
        "-w",
        tmp_path / "w",
    ]
    code, out = _exit_code(argv, capsys)
    assert code == 2 and "invalid participant label '../x'" in out.err
    argv = [
        dataset,
        tmp_path / "o",
        "participant",
        "--session-label",
        "9",
        "--skip-bids-validation",
        "-w",
        tmp_path / "w",
        "--method",
        "frangi",
    ]
    code, out = _exit_code(argv, capsys)
    assert code == 2 and "session label(s) not found" in out.err


def test_derivatives_subfolder_is_accepted(dataset, tmp_path, capsys):
    argv = [
        dataset,
        dataset / "derivatives" / "mednet-pvs",
        "participant",
        "--participant-label",
        "07",
        "--skip-bids-validation",
        "-w",
        tmp_path / "w",
    ]
    _, out = _exit_code(argv, capsys)
    assert "raw dataset" not in out.err and "07" in out.err  # got past the placement rules


def test_missing_model_message(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MEDNET_PVS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("mednet_pvs.models.registry.DEFAULT_MODEL", None)
    argv = [dataset, tmp_path / "o", "participant", "--skip-bids-validation", "-w", tmp_path / "w"]
    code, out = _exit_code(argv, capsys)
    assert code == 2
    assert "--model" in out.err and "model directory" in out.err and "--method frangi" in out.err


def test_tta_mirroring_is_a_choice_checked_against_the_model_before_any_work(
    dataset, tmp_path, capsys, tiny_model
):
    assert build_parser().parse_args(["b", "o", "participant"]).tta_mirroring == "all"
    args = build_parser().parse_args(["b", "o", "participant", "--tta-mirroring", "left-right"])
    assert args.tta_mirroring == "left-right"
    code, out = _exit_code(["b", "o", "participant", "--tta-mirroring", "up-down"], capsys)
    assert code == 2 and "invalid choice: 'up-down'" in out.err
    model = tmp_path / "no-lr-model"
    shutil.copytree(tiny_model, model)
    dataclasses.replace(ModelCard.load(model), mirror_axes=[1, 2]).save(model)
    argv = [dataset, tmp_path / "o", "participant", "--skip-bids-validation", "-w", tmp_path / "w"]
    code, out = _exit_code([*argv, "--model", model, "--tta-mirroring", "left-right"], capsys)
    assert code == 2
    assert "model 'tiny' was not trained with left-right mirroring" in out.err
    assert "use --tta-mirroring all or --no-tta" in out.err
    assert not (tmp_path / "o" / "sub-01").exists()


def test_bad_filter_file(dataset, tmp_path, capsys):
    bad = tmp_path / "filter.json"
    bad.write_text(json.dumps({"bold": {"task": "rest"}}))
    code, out = _exit_code([dataset, tmp_path / "o", "participant", "--bids-filter-file", bad], capsys)
    assert code == 2 and "unknown key 'bold'" in out.err
    bad.write_text(json.dumps({"t2w": {"acquisition": "../../x"}}))
    code, out = _exit_code([dataset, tmp_path / "o", "participant", "--bids-filter-file", bad], capsys)
    assert code == 2 and "is not a BIDS label" in out.err


def test_config_file_sets_defaults(tmp_path):
    from mednet_pvs.cli.run import _parse

    toml = tmp_path / "run.toml"
    toml.write_text('threshold = 0.7\nmethod = "frangi"\nregions = "none"\n')
    _, args = _parse(["b", "o", "participant", "--config-file", str(toml), "--regions", "atlas"])
    assert args.threshold == 0.7 and args.method == "frangi" and args.regions == "atlas"
