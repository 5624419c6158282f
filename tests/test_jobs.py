"""Job scripts in jobs/: they parse (bash -n), pass shellcheck, and launch the runner with flags it accepts.

The launchers (poprun, srun, mpiexec) are replaced by a stub on PATH that records its arguments, so each
script runs for real up to the launch; the recorded mpirunner flags go through mpirunner's own parser.
"""
import os
import subprocess
from pathlib import Path

import pytest

from mpirunner.cli import build_parser
from mpirunner.config import resolve_config
from tests.conftest import REPO, shellcheck_path

JOBS = sorted((REPO / "jobs").iterdir())
SEPARATOR = "\x1f"

STUB = """#!/bin/bash
{{ printf '%s\\x1f' "$(basename "$0")" "$@"; printf '\\n'; }} >> {log}
"""


def test_there_are_the_three_scripts():
    assert {path.name for path in JOBS} == {"slurm.sbatch", "poprun-reference.sh", "workstation.sh"}


@pytest.mark.parametrize("script", JOBS, ids=lambda path: path.name)
def test_script_parses(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", JOBS, ids=lambda path: path.name)
def test_script_passes_shellcheck(script):
    result = subprocess.run([shellcheck_path(), "--shell=bash", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def run_with_stubs(tmp_path, script, args=(), env=None, stubs=("poprun", "srun", "mpiexec")):
    """Run a job script with launcher stubs first on PATH; return (CompletedProcess, [argv of each launch])."""
    bin_dir, log = tmp_path / "bin", tmp_path / "launches.log"
    bin_dir.mkdir(exist_ok=True)
    for name in stubs:
        stub = bin_dir / name
        stub.write_text(STUB.format(log=log))
        stub.chmod(0o755)
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    full_env.update({"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUTPUT_DIR": str(tmp_path / "out")})
    full_env.update(env or {})
    result = subprocess.run(["bash", str(REPO / "jobs" / script), *args], capture_output=True, text=True,
                            env=full_env, cwd=tmp_path, timeout=60)
    launches = [line.split(SEPARATOR)[:-1] for line in log.read_text().splitlines()] if log.exists() else []
    return result, launches


def runner_config(argv):
    """The RunConfig mpirunner would build from the flags after `-m mpirunner` in a launch."""
    index = argv.index("mpirunner")
    assert argv[index - 1] == "-m"
    flags = argv[index + 1:]
    return resolve_config(vars(build_parser().parse_args(flags))), flags


REFERENCE_SWEEPS = {  # name -> (model, batch sizes, num_io_tiles), from ipu-inference-benchmarks.md
    "resnet50": ("resnet50", range(1, 81), 64),
    "efficientnet-b0": ("efficientnet-b0", range(1, 49), 64),
    "efficientnet-b4": ("efficientnet-b4", range(1, 11), 0),
    "resnext101": ("resnext101", range(1, 17), 32),
}


def test_poprun_script_runs_the_four_reference_sweeps_one_file_each(tmp_path):
    result, launches = run_with_stubs(tmp_path, "poprun-reference.sh")
    assert result.returncode == 0, result.stderr
    assert len(launches) == 4, "one poprun job per reference benchmark, not one per batch size"
    outputs = []
    for argv, (name, (model, sizes, io_tiles)) in zip(launches, REFERENCE_SWEEPS.items()):
        assert argv[0] == "poprun"
        for flag in ("--num-instances=4", "--numa-aware=yes", "--num-replicas=4", "--ipus-per-replica=1",
                     "--mpi-global-args=--allow-run-as-root --tag-output"):
            assert flag in argv, (name, flag)
        config, flags = runner_config(argv)
        assert config.model == model
        assert config.batch_sizes == tuple(sizes)
        assert config.num_io_tiles == io_tiles and config.iterations == 20 and config.data == "generated"
        outputs.append(config.output)
    assert len(set(outputs)) == 4 and all(out.startswith(str(tmp_path / "out")) and out.endswith(".h5")
                                          for out in outputs)
    resnext = runner_config(launches[3])[0]
    assert (resnext.device_iterations, resnext.precision, resnext.half_partial, resnext.eight_bit_io,
            resnext.normalization_location) == (128, "16.16", True, True, "device")


def test_poprun_script_runs_only_the_sweeps_named(tmp_path):
    result, launches = run_with_stubs(tmp_path, "poprun-reference.sh", ["efficientnet-b4"])
    assert result.returncode == 0, result.stderr
    assert [runner_config(argv)[0].model for argv in launches] == ["efficientnet-b4"]


def test_poprun_script_rejects_an_unknown_sweep_before_running_any(tmp_path):
    result, launches = run_with_stubs(tmp_path, "poprun-reference.sh", ["resnet50", "vgg"])
    assert result.returncode == 2
    assert "vgg" in result.stderr and "resnext101" in result.stderr
    assert launches == []


def test_slurm_script_launches_one_srun_sweep_per_numa_node(tmp_path):
    env = {"SLURM_JOB_ID": "31337", "CONFIG": "efficientnet-b0-cpu", "BATCH_SIZES": "1..4",
           "RANKS_PER_NODE": "3", "SRUN_MPI": "pmix", "EXTRA_ARGS": "--strict --max-cv 5"}
    result, launches = run_with_stubs(tmp_path, "slurm.sbatch", env=env)
    assert result.returncode == 0, result.stderr
    [argv] = launches
    assert argv[0] == "srun"
    assert {"--ntasks-per-node=3", "--cpu-bind=none", "--mpi=pmix"} <= set(argv)
    config, _ = runner_config(argv)
    assert config.batch_sizes == (1, 2, 3, 4) and config.model == "efficientnet-b0"
    assert config.numa_aware == "yes" and config.strict and config.max_cv == 5
    assert config.output == str(tmp_path / "out" / "efficientnet-b0-cpu-31337.h5")


def test_slurm_script_defaults_to_the_numa_nodes_of_the_node(tmp_path):
    result, launches = run_with_stubs(tmp_path, "slurm.sbatch")
    assert result.returncode == 0, result.stderr
    [argv] = launches
    nodes = [path for path in Path("/sys/devices/system/node").glob("node[0-9]*")
             if (path / "cpulist").read_text().strip()]
    assert f"--ntasks-per-node={max(len(nodes), 1)}" in argv
    assert not any(arg.startswith("--mpi=") for arg in argv)
    assert runner_config(argv)[0].batch_sizes == (1, 2, 4, 8)


def test_workstation_script_runs_mpiexec_without_launcher_binding(tmp_path):
    result, launches = run_with_stubs(tmp_path, "workstation.sh", ["--strict"],
                                      env={"RANKS": "2", "BATCH_SIZES": "2,4", "ITERATIONS": "5"})
    assert result.returncode == 0, result.stderr
    [argv] = launches
    assert argv[0] == "mpiexec" and argv[1:5] == ["-n", "2", "--bind-to", "none"]
    config, _ = runner_config(argv)
    assert config.batch_sizes == (2, 4) and config.iterations == 5 and config.strict
    assert config.output.startswith(str(tmp_path / "out" / "resnet50-cpu-"))
