"""Helpers shared by the benchmark scripts: run the runner as a user would and read its HDF5 file."""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

REPO = Path(__file__).resolve().parent.parent


def mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run_runner(args, ranks=None, env=None):
    """Run `python -m mpirunner ARGS` (under mpiexec -n RANKS when given); return the HDF5 file's runs.

    Returns (root attrs dict, {run name: attrs dict}) read from the file the run wrote.
    """
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "bench.h5"
        command = [sys.executable, "-m", "mpirunner", *map(str, args), "--no-progress", "--output", str(output)]
        if ranks:
            command = [mpiexec(), "-n", str(ranks), *command]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if result.returncode != 0:
            raise SystemExit(f"runner failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
        with h5py.File(output) as h5:
            root = dict(h5.attrs)
            runs = {name: dict(group.attrs) for name, group in h5["runs"].items()}
            ranks_table = h5["ranks"][()]
        return root, runs, ranks_table


def only_run(runs):
    (attrs,) = runs.values()
    return attrs
