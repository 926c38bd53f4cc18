"""Cluster execution: shared pybids index, plugin arguments, GPU nodes, offline runs, SLURM and
Snakemake recipes (workflows/)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mednet_pvs.bids import build_layout
from mednet_pvs.errors import UsageError
from mednet_pvs.inference.footprint import on_network_grid, segmentation_memory_gb
from mednet_pvs.models.card import ModelCard
from mednet_pvs.models.mednext import mednext_architecture
from tests.bids_factory import make_bids, write_image
from tests.conftest import make_phantom

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "--method", "frangi", "--skip-n4", "--skip-skull-strip", "--regions", "none", "--skip-bids-validation"
]  # fmt: skip
N_JOBS = 6


def _phantom_dataset(root: Path, subjects: tuple[str, ...]) -> Path:
    """Small BIDS dataset whose 'brains' have a realistic volume (2 mm voxels, about 320 mL)."""
    make_bids(root, {})
    for i, subject in enumerate(subjects):
        image = make_phantom(affine=np.diag([2.0, 2.0, 2.0, 1.0]), seed=i)
        write_image(root / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz", image)
    rows = "".join(f"sub-{s}\t{60 + i}\n" for i, s in enumerate(subjects))
    (root / "participants.tsv").write_text("participant_id\tage\n" + rows)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phantom_dataset(tmp_path_factory.mktemp("hpc") / "bids", ("01", "02", "03"))


# ------------------------------------------------------------------------- shared pybids index
def _layout_job(bids_dir: Path, database_dir: Path, barrier, results) -> None:
    """One cluster job: open the shared index at the same moment as the others, then query it."""
    barrier.wait(timeout=120)
    try:
        layout = build_layout(bids_dir, database_dir)
        images = [len(layout.get(subject=s, suffix="T2w", return_type="file")) for s in layout.get_subjects()]
        results.put(("ok", sorted(layout.get_subjects()), sum(images)))
    except Exception as exc:  # reported to the test, which fails on any error
        results.put(("error", repr(exc), 0))


def _run_concurrent_jobs(bids_dir: Path, database_dir: Path) -> list[tuple]:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(N_JOBS), context.Queue()
    jobs = [
        context.Process(target=_layout_job, args=(bids_dir, database_dir, barrier, results))
        for _ in range(N_JOBS)
    ]
    for job in jobs:
        job.start()
    outcomes = [results.get(timeout=300) for _ in jobs]
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0] * N_JOBS
    return outcomes


def test_concurrent_jobs_create_one_index_then_share_it_read_only(dataset, tmp_path):
    database_dir = tmp_path / "bids_db"
    # six jobs start together and find no index: each may build one, one rename wins, none fails
    created = _run_concurrent_jobs(dataset, database_dir)
    assert created == [("ok", ["01", "02", "03"], 3)] * N_JOBS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bids_db"]  # no half-built index left
    database_file = database_dir / "layout_index.sqlite"
    assert oct(database_file.stat().st_mode & 0o777) == oct(0o444)
    digest = hashlib.sha256(database_file.read_bytes()).hexdigest()

    # six jobs open the existing index at once: no "database is locked", and nothing is written
    reused = _run_concurrent_jobs(dataset, database_dir)
    assert reused == [("ok", ["01", "02", "03"], 3)] * N_JOBS
    assert hashlib.sha256(database_file.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in database_dir.iterdir()) == ["layout_index.sqlite"]


def test_index_of_another_dataset_is_refused(dataset, tmp_path):
    other = _phantom_dataset(tmp_path / "other", ("09",))
    build_layout(other, tmp_path / "db")
    with pytest.raises(UsageError, match=rf"indexes {other}, not {dataset}"):
        build_layout(dataset, tmp_path / "db")


def test_folder_without_index_is_refused(dataset, tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "notes.txt").write_text("not an index")
    with pytest.raises(UsageError, match="exists and holds no pybids index"):
        build_layout(dataset, tmp_path / "db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


def test_empty_folder_receives_the_index(dataset, tmp_path):
    (tmp_path / "db").mkdir()
    layout = build_layout(dataset, tmp_path / "db")
    assert layout.get_subjects() == ["01", "02", "03"]
    assert (tmp_path / "db" / "layout_index.sqlite").is_file()


# ------------------------------------------------------------------- read-only HOME, no network
_NETWORK_GUARD = """\
import os, socket

_LOG = os.environ["NETWORK_GUARD_LOG"]
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(f"{os.getpid()} {what}\\n")
    raise OSError(101, "network disabled by the test")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _refuse(address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    _refuse(f"getaddrinfo {host}")


socket.socket.connect, socket.socket.connect_ex = _guarded_connect, _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
"""

_RUNNER = """\
import os, sys
from pathlib import Path

try:
    (Path(os.environ["HOME"]) / "probe").write_text("x")
    sys.exit("HOME is writable: the isolation did not apply")
except OSError:
    pass
from mednet_pvs.cli.run import main

sys.exit(main(sys.argv[1:]))
"""

# Bind HOME onto itself read-only inside a new mount namespace, in a network namespace without interfaces.
_READ_ONLY_HOME = 'mount --bind -o ro "$0" "$0" && exec "$@"'


def _isolation(home: Path) -> tuple[list[str], str]:
    """A command prefix that makes ``home`` read-only and removes the network, and how it does it."""
    unshare = shutil.which("unshare")
    candidates = [["--user", "--map-root-user", "--mount", "--net"]]
    if os.geteuid() == 0:
        candidates.insert(0, ["--mount", "--net"])
    for flags in candidates if unshare else []:
        prefix = [unshare, *flags, "sh", "-c", _READ_ONLY_HOME, str(home)]
        if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
            return prefix, "namespaces"
    if os.geteuid() == 0:
        pytest.skip("root without mount namespaces: HOME cannot be made read-only")
    home.chmod(0o555)
    return [], "permissions"


@pytest.mark.slow
def test_participant_runs_with_read_only_home_and_no_network(dataset, tmp_path):
    home, guard, tmp = tmp_path / "home", tmp_path / "guard", tmp_path / "tmp"
    for folder in (home, guard, tmp):
        folder.mkdir()
    (guard / "sitecustomize.py").write_text(_NETWORK_GUARD)  # imported by every Python process of the run
    guard_log = tmp_path / "network_attempts.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MPLCONFIGDIR", "PYTHON"))}
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        PYTHONPATH=os.pathsep.join([str(guard), str(REPO)]),
        NETWORK_GUARD_LOG=str(guard_log),
    )
    prefix, how = _isolation(home)
    out = tmp_path / "out"
    argv = [str(dataset), str(out), "participant", "--participant-label", "01", "-w", str(tmp_path / "work")]
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _RUNNER, *argv, *FAST, "--nprocs", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, f"isolation by {how}:\n{result.stderr[-4000:]}"
    anat = out / "sub-01" / "anat"
    assert (anat / "sub-01_desc-pvs_mask.nii.gz").is_file()
    assert (anat / "sub-01_desc-pvs_morph.tsv").is_file()
    assert (out / "sub-01.html").is_file()
    assert not guard_log.exists(), guard_log.read_text()  # nothing even tried to go online
    assert list(home.iterdir()) == []
    # matplotlib's font cache was built once in the shared per-user folder, not per process
    assert "Matplotlib created a temporary cache directory" not in result.stderr
    assert list(tmp.glob("mednet-pvs-*/matplotlib/fontlist-*.json"))


# ------------------------------------------------------------------ plugins, resources, GPU nodes
@pytest.fixture
def captured_runs(monkeypatch) -> list[tuple[str, dict]]:
    """Replace the Nipype workflow run by a recorder of (plugin, plugin_args)."""
    from nipype.pipeline.engine import Workflow

    runs: list[tuple[str, dict]] = []
    monkeypatch.setattr(Workflow, "run", lambda self, plugin, plugin_args: runs.append((plugin, plugin_args)))
    return runs


def _participant(dataset: Path, tmp_path: Path, *options: str) -> int:
    from mednet_pvs.cli.run import main

    argv = [str(dataset), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"), *FAST]
    return main([*argv, "--participant-label", "01", *options])


def test_nprocs_and_mem_reach_multiproc(dataset, tmp_path, captured_runs):
    assert _participant(dataset, tmp_path, "--nprocs", "3", "--mem", "5000MB") == 0
    assert captured_runs == [
        (
            "MultiProc",
            {"n_procs": 3, "memory_gb": 5.0, "raise_insufficient": False, "mp_context": "forkserver"},
        )
    ]


def test_plugin_args_file_reaches_slurm_plugin_unchanged(dataset, tmp_path, captured_runs):
    plugin_file = tmp_path / "slurm.yml"
    plugin_file.write_text("plugin_args:\n  sbatch_args: --time=1:00:00 --mem=8G\n  max_jobs: 20\n")
    options = ["--nipype-plugin", "SLURM", "--plugin-args", str(plugin_file), "--nprocs", "4"]
    assert _participant(dataset, tmp_path, *options) == 0
    assert captured_runs == [("SLURM", {"sbatch_args": "--time=1:00:00 --mem=8G", "max_jobs": 20})]


@pytest.mark.parametrize(
    ("plugin_args", "expected_gpu_procs"), [([], 1), (["--plugin-args", "{n_gpu_procs: 2, n_procs: 6}"], 2)]
)
def test_gpu_runs_limit_concurrent_segmentations(
    dataset, tmp_path, captured_runs, monkeypatch, tiny_model, plugin_args, expected_gpu_procs
):
    import mednet_pvs.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_resolve_model", lambda config: (tiny_model, True, ["T2w"]))
    options = ["--method", "mednext", "--nprocs", "4", "--mem", "8", *plugin_args]
    assert _participant(dataset, tmp_path, *options) == 0
    (plugin, args) = captured_runs[0]
    assert plugin == "MultiProc"
    assert args["n_gpu_procs"] == expected_gpu_procs
    assert args["n_procs"] == (6 if plugin_args else 4)
    assert args["memory_gb"] == 8.0


@pytest.mark.parametrize("use_gpu", [True, False])
def test_segmentation_node_is_a_gpu_node_on_cuda(tmp_path, tiny_model, use_gpu):
    from mednet_pvs.config import Config
    from mednet_pvs.workflows.segmentation import init_segmentation_wf

    config = Config(tmp_path, tmp_path / "out", "participant", device="cuda", omp_nthreads=3)
    workflow = init_segmentation_wf(config, "T2w", tiny_model, use_gpu=use_gpu)
    node = workflow.get_node("mednext")
    assert node.is_gpu_node() is use_gpu
    assert node.inputs.contrast == "T2w"  # a contrast the card reads inverted is negated by the node
    assert node.n_procs == (1 if use_gpu else 3)
    card = ModelCard.load(tiny_model)
    assert (
        node.mem_gb
        == segmentation_memory_gb(card.architecture, card.patch_size, card.spacing, use_gpu)
        >= 2.0
    )


def test_memory_estimate_covers_the_measured_peak():
    small = mednext_architecture("S", 3, init_filters=32)
    large = mednext_architecture("L", 5, init_filters=32)
    sub01 = ((124, 160, 140), (1.0, 1.0, 1.0))  # the image of the measured peak
    cpu_128 = segmentation_memory_gb(small, (128, 128, 128), (1.0,) * 3, False, sub01)
    assert 7.07 <= cpu_128 <= 10.0  # measured CPU peak of this model (docs/hpc.md), without waste
    assert segmentation_memory_gb(small, (64, 64, 64), (1.0,) * 3, False, sub01) < cpu_128
    assert (
        segmentation_memory_gb(
            mednext_architecture("S", 3, init_filters=16), (128,) * 3, (1.0,) * 3, False, sub01
        )
        < cpu_128
    )
    assert segmentation_memory_gb(large, (128, 128, 128), (1.0,) * 3, False, sub01) > cpu_128
    assert segmentation_memory_gb(large, (128, 128, 128), (1.0,) * 3, True, sub01) < cpu_128


# peaks (GB) of the segmentation step measured by benchmarks/segmentation_memory.py with the
# bundled layout (MedNeXt-S, 16 filters, 64^3 windows) on CPU, at network grids of 0.6 mm (1.5.0)
# and 0.5 mm (1.7.0); the 0.5 mm image on the 0.5 mm grid is not resampled
MEASURED_PEAKS = {
    "1mm": (((176, 208, 176), (1.0, 1.0, 1.0)), {0.6: 2.12, 0.5: 3.02}),
    "1.6mm": (((104, 150, 133), (1.6, 1.6, 1.6)), {0.6: 2.58, 0.5: 3.79}),
    "0.5mm": (((300, 360, 280), (0.5, 0.5, 0.5)), {0.6: 2.89, 0.5: 1.78}),
    "clinical": (((384, 384, 60), (0.45, 0.45, 2.0)), {0.6: 2.12, 0.5: 2.44}),
}


@pytest.mark.parametrize("network_mm", [0.6, 0.5])
@pytest.mark.parametrize("case", sorted(MEASURED_PEAKS))
def test_memory_estimate_follows_the_image_and_the_network_grid(case, network_mm):
    bundled = mednext_architecture("S", 3, init_filters=16)
    grid, peaks = MEASURED_PEAKS[case]
    spacing = (network_mm,) * 3
    estimate = segmentation_memory_gb(bundled, (64,) * 3, spacing, False, grid)
    assert peaks[network_mm] <= estimate <= peaks[network_mm] + 1.0  # enough, without waste
    # the same field of view read by a coarser network grid needs less, unless the finer grid is
    # the image's own (no resampling)
    coarser = segmentation_memory_gb(bundled, (64,) * 3, (1.0,) * 3, False, grid)
    assert coarser < estimate or on_network_grid(grid, spacing)
    # on a GPU only the host arrays stay, and they still follow the image
    assert segmentation_memory_gb(bundled, (64,) * 3, spacing, True, grid) >= estimate - 0.5


def test_an_image_on_the_network_grid_is_not_counted_twice():
    grid = ((300, 360, 280), (0.5, 0.5, 0.5))
    assert on_network_grid(grid, (0.5, 0.5, 0.5)) and not on_network_grid(grid, (0.6, 0.6, 0.6))
    assert not on_network_grid(((384, 384, 60), (0.45, 0.45, 2.0)), (0.5, 0.5, 0.5))


def test_segmentation_node_declares_memory_for_its_image(tmp_path, tiny_model):
    from mednet_pvs.bids import ImageRecord
    from mednet_pvs.config import Config
    from mednet_pvs.inference.footprint import image_grid
    from mednet_pvs.workflows.base import init_pvs_wf

    path = write_image(
        tmp_path / "sub-01_T2w.nii.gz", make_phantom((40, 48, 36), np.diag([0.5, 0.5, 2.0, 1.0]))
    )
    shape, zooms = image_grid(path)
    assert tuple(shape) == (40, 48, 36)
    assert tuple(float(z) for z in zooms) == (0.5, 0.5, 2.0)
    config = Config(tmp_path, tmp_path / "out", "participant", work_dir=tmp_path / "work")
    workflow = init_pvs_wf(config, ImageRecord(path, "01", None, "T2w"), tiny_model, use_gpu=False)
    card = ModelCard.load(tiny_model)
    expected = segmentation_memory_gb(card.architecture, card.patch_size, card.spacing, False, (shape, zooms))
    assert workflow.get_node("segmentation_wf.mednext").mem_gb == expected


def test_memory_estimate_grows_to_very_large_images():
    bundled = mednext_architecture("S", 3, init_filters=16)
    huge = ((600, 720, 560), (0.25, 0.25, 0.25))  # 7T, 0.25 mm: 242 million voxels
    assert segmentation_memory_gb(bundled, (64,) * 3, (0.6,) * 3, False, huge) >= 10.0


# ----------------------------------------------------------------------------- SLURM recipe
SLURM = REPO / "workflows" / "slurm"
_RECORDER = """#!{python}
import json, os, sys
from pathlib import Path

log = Path(os.environ["FAKE_TOOLS_LOG"])
with log.open("a") as handle:
    handle.write(json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
if Path(sys.argv[0]).name == "sbatch":  # --parsable: the job id
    print(1000 + len(log.read_text().splitlines()))
"""


@pytest.fixture
def fake_cluster(tmp_path, monkeypatch) -> Path:
    """``sbatch`` and ``apptainer`` on PATH that record their arguments (one JSON list per call)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.jsonl"
    bin_dir.mkdir()
    for tool in ("sbatch", "apptainer"):
        (bin_dir / tool).write_text(_RECORDER.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TOOLS_LOG", str(log))
    for variable in [v for v in os.environ if v.startswith("SLURM_")] + ["CUDA_VISIBLE_DEVICES"]:
        monkeypatch.delenv(variable, raising=False)
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _submit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SLURM / "submit.sh"), *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_submit_chains_index_array_and_group_jobs(dataset, tmp_path, fake_cluster):
    image = tmp_path / "mednet-pvs.sif"
    image.write_bytes(b"")
    out = tmp_path / "derivatives"
    options = ["-i", str(image), "-w", str(tmp_path / "work"), "-c", "4", "-m", "8G", "-j", "2"]
    result = _submit(
        *options, "-s", "--account=lab --partition=gpu", str(dataset), str(out), "--", "--no-tta"
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = (out / "logs" / "slurm").iterdir()
    run_env = run_dir / "run.env"
    assert (run_dir / "participants.txt").read_text() == "01\n02\n03\n"
    index, array, group = _calls(fake_cluster)
    script = str(SLURM / "mednet-pvs.sbatch")
    assert index[:4] == ["sbatch", "--parsable", "--account=lab", "--partition=gpu"]
    assert index[-3:] == [script, "index", str(run_env)]
    assert "--dependency=afterok:1001" in array and "--kill-on-invalid-dep=yes" in array
    assert {"--array=0-2%2", "--cpus-per-task=4", "--mem=8G", "--gres=gpu:1"} <= set(array)
    assert array[-3:] == [script, "participant", str(run_env)]
    assert "--dependency=afterok:1002" in group and group[-3:] == [script, "group", str(run_env)]
    assert "participants 1002 (3 tasks)" in result.stdout


@pytest.mark.parametrize(
    ("source", "expected", "warning"),
    [
        ("list", ["03", "01"], "skipping sub-07"),
        ("tsv", ["01", "02", "03"], "skipping sub-09"),
        ("folders", ["01", "02", "03"], ""),
    ],
)
def test_participant_list_sources(dataset, tmp_path, source, expected, warning):
    bids = tmp_path / "bids"
    shutil.copytree(dataset, bids)
    options = ["-n"]
    if source == "list":
        (tmp_path / "list.txt").write_text("sub-03\n\n# comment\n01\r\n07\n")
        options += ["-p", str(tmp_path / "list.txt")]
    elif source == "tsv":
        (bids / "participants.tsv").write_text(
            "participant_id\tage\nsub-01\t1\nsub-09\t2\nsub-02\t3\nsub-03\t4\n"
        )
    else:
        (bids / "participants.tsv").unlink()
    result = _submit(*options, str(bids), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "out" / "logs" / "slurm").iterdir()
    assert (run_dir / "participants.txt").read_text().split() == expected
    assert warning in result.stderr
    assert f"--array=0-{len(expected) - 1} " in result.stderr  # the printed sbatch command


def _run_env(tmp_path: Path, dataset: Path, gpus: int, options: str) -> Path:
    run_dir = tmp_path / "out" / "logs" / "slurm" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "participants.txt").write_text("01\n02\n03\n")
    run_env = run_dir / "run.env"
    run_env.write_text(
        f"IMAGE={tmp_path}/mednet-pvs.sif\nBIDS_DIR={dataset}\nOUTPUT_DIR={tmp_path}/out\n"
        f"DATABASE_DIR={run_dir}/bids_db\nPARTICIPANTS_FILE={run_dir}/participants.txt\n"
        f"WORK_ROOT={tmp_path}/work\nGPUS={gpus}\nOPTIONS=({options})\n"
    )
    return run_env


def _job(mode: str, run_env: Path, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SLURM / "mednet-pvs.sbatch"), mode, str(run_env)],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_array_task_runs_its_participant_in_apptainer(dataset, tmp_path, fake_cluster):
    from mednet_pvs.cli.parser import build_parser

    run_env = _run_env(tmp_path, dataset, gpus=1, options="'--threshold' '0.4'")
    environment = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "4", "SLURM_MEM_PER_NODE": "8000"}
    result = _job("participant", run_env, **environment, CUDA_VISIBLE_DEVICES="2")
    assert result.returncode == 0, result.stderr
    ((tool, *args),) = _calls(fake_cluster)
    work = tmp_path / "work" / "sub-02"
    image, db = f"{tmp_path}/mednet-pvs.sif", run_env.parent / "bids_db"
    assert tool == "apptainer"
    assert args[: args.index(image)] == [
        "run", "--cleanenv", "--nv", "--env", "CUDA_VISIBLE_DEVICES=2",
        "-B", str(dataset), "-B", f"{tmp_path}/out", "-B", str(work),
    ]  # fmt: skip
    mednet_args = args[args.index(image) + 1 :]
    assert mednet_args == [
        str(dataset), f"{tmp_path}/out", "participant", "--participant-label", "02", "-w", str(work),
        "--bids-database-dir", str(db), "--skip-bids-validation", "--nprocs", "4", "--mem", "8000MB",
        "--threshold", "0.4",
    ]  # fmt: skip
    assert work.is_dir()
    parsed = build_parser().parse_args(mednet_args)  # the command is one mednet-pvs accepts
    assert (parsed.nprocs, parsed.mem_gb, parsed.threshold) == (4, 8.0, 0.4)


def test_array_task_without_gpus_or_participant(dataset, tmp_path, fake_cluster):
    run_env = _run_env(tmp_path, dataset, gpus=0, options="")
    assert _job("participant", run_env, SLURM_ARRAY_TASK_ID="0", CUDA_VISIBLE_DEVICES="0").returncode == 0
    ((_, *args),) = _calls(fake_cluster)
    assert "--nv" not in args and "--env" not in args
    assert args[args.index("--participant-label") + 1] == "01"
    assert "--mem" not in args  # no SLURM memory limit given: mednet-pvs measures the memory
    result = _job("participant", run_env, SLURM_ARRAY_TASK_ID="3")
    assert result.returncode == 2
    assert "no participant on line 4" in result.stderr


@pytest.mark.parametrize("options", ["", "'--skip-bids-validation'"])
def test_index_and_group_jobs(dataset, tmp_path, fake_cluster, options):
    from mednet_pvs.cli.bids_index import build_parser

    run_env = _run_env(tmp_path, dataset, gpus=1, options=options)
    assert _job("index", run_env).returncode == 0
    assert _job("group", run_env).returncode == 0
    (_, *index), (_, *group) = _calls(fake_cluster)
    image = f"{tmp_path}/mednet-pvs.sif"
    binds = ["-B", str(dataset), "-B", f"{tmp_path}/out"]
    assert index[: index.index(image) + 1] == ["exec", "--cleanenv", *binds, image]
    command = index[index.index(image) + 1 :]
    assert command[:3] == ["python", "-m", "mednet_pvs.cli.bids_index"]
    parsed = build_parser().parse_args(command[3:])
    assert (parsed.bids_dir, parsed.database_dir) == (dataset, run_env.parent / "bids_db")
    assert parsed.skip_bids_validation is bool(options)
    assert group == ["run", "--cleanenv", *binds, image, str(dataset), f"{tmp_path}/out", "group"]


def test_shared_index_command(dataset, tmp_path):
    from mednet_pvs.cli.bids_index import main

    assert main([str(dataset), str(tmp_path / "db"), "--skip-bids-validation"]) == 0
    assert main([str(dataset), str(tmp_path / "db"), "--skip-bids-validation"]) == 0  # reused
    assert (tmp_path / "db" / "layout_index.sqlite").is_file()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_cluster_scripts_are_shellcheck_clean():
    scripts = [SLURM / "submit.sh", SLURM / "mednet-pvs.sbatch", REPO / "scripts" / "build_offline_image.sh"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------------------------- Snakemake recipe
SNAKEMAKE = REPO / "workflows" / "snakemake"


@pytest.mark.slow
def test_snakemake_workflow_runs_participants_then_group(tmp_path):
    snakemake = shutil.which(
        "snakemake", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if snakemake is None:
        pytest.skip("snakemake not installed (test extra)")
    bids = _phantom_dataset(tmp_path / "bids", ("01", "02"))
    out = tmp_path / "derivatives"
    config = {
        "bids_dir": str(bids),
        "output_dir": str(out),
        "work_root": str(tmp_path / "work"),
        "container": "",
        "options": " ".join(FAST),
        "threads": 1,
        "mem_mb": 3000,
        "runtime": 30,
        "gpus": 0,
    }
    (tmp_path / "config.yaml").write_text(json.dumps(config))  # YAML is a superset of JSON
    command = [snakemake, "-s", str(SNAKEMAKE / "Snakefile"), "--configfile", str(tmp_path / "config.yaml")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def snakemake_run(*options: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *options],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )

    result = snakemake_run("--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    group = pd.read_csv(out / "group_desc-pvs_morph.tsv", sep="\t")
    assert set(group["participant_id"]) == {"sub-01", "sub-02"}
    for label in ("01", "02"):
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_desc-pvs_mask.nii.gz").is_file()
        assert (tmp_path / "work" / f"sub-{label}").is_dir()  # one work folder per participant
    (index,) = (tmp_path / "work").glob("bids_db-*")
    assert (index / "layout_index.sqlite").is_file()
    assert "Nothing to be done" in snakemake_run("--cores", "2").stderr

    # a participant added to the dataset: a new index, and only that participant runs
    done = {p.name: p.stat().st_mtime_ns for p in (out / "logs" / "snakemake").glob("sub-0[12].*")}
    write_image(bids / "sub-03" / "anat" / "sub-03_T2w.nii.gz", make_phantom(affine=np.diag([2.0, 2, 2, 1])))
    with (bids / "participants.tsv").open("a") as table:
        table.write("sub-03\t70\n")
    result = snakemake_run("--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "participant=03" in result.stderr and "participant=01" not in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "logs" / "snakemake").glob("sub-0[12].*")} == done
    group = pd.read_csv(out / "group_desc-pvs_morph.tsv", sep="\t")
    assert set(group["participant_id"]) == {"sub-01", "sub-02", "sub-03"}
    assert len(list((tmp_path / "work").glob("bids_db-*"))) == 2

    # the SLURM profile is valid for the executor plugin (a dry run submits nothing)
    (out / "group_desc-pvs_morph.tsv").unlink()
    dry = snakemake_run("--profile", str(SNAKEMAKE / "profiles" / "slurm"), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-4000:]
    stats = (dry.stdout + dry.stderr).split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    assert {line.split()[0]: int(line.split()[1]) for line in stats} == {"all": 1, "group": 1, "total": 2}
