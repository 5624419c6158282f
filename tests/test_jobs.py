"""Job scripts in jobs/: they parse (bash -n), pass shellcheck, and launch the runner with flags it accepts.

The launchers (poprun, srun, mpiexec) are replaced by a stub on PATH that records its arguments, so each
script runs for real up to the launch; the recorded mpirunner flags go through mpirunner's own parser.
tests/test_slurm.py submits jobs/slurm.sbatch to a real (single-node) SLURM.
"""
import os
import shlex
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

# A config whose batch sizes and steps differ from every default, as in issue 15's report.
OWN_SIZES_CONFIG = "model: resnet18\ndevice: cpu\nbatch_size: 16\niterations: 50\n"


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


def header(script):
    """The leading comment block of a script (its documentation)."""
    lines = (REPO / "jobs" / script).read_text().splitlines()
    return "\n".join(line for line in lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))])


def run_with_stubs(tmp_path, script, args=(), env=None, stubs=("poprun", "srun", "mpiexec")):
    """Run a job script with launcher stubs first on PATH; return (CompletedProcess, [argv of each launch])."""
    bin_dir, log = tmp_path / "bin", tmp_path / "launches.log"
    bin_dir.mkdir(exist_ok=True)
    for name in stubs:
        stub = bin_dir / name
        stub.write_text(STUB.format(log=log))
        stub.chmod(0o755)
    if log.exists():
        log.unlink()
    full_env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    for key in ("BATCH_SIZES", "ITERATIONS", "OUTPUT", "SRUN_MPI", "DRY_RUN", "EXTRA_ARGS"):
        full_env.pop(key, None)
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


def own_sizes_config(tmp_path):
    path = tmp_path / "own-sizes.yaml"
    path.write_text(OWN_SIZES_CONFIG)
    return path


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
    for argv, (name, (model, sizes, io_tiles)) in zip(launches, REFERENCE_SWEEPS.items()):
        assert argv[0] == "poprun"
        for flag in ("--num-instances=4", "--numa-aware=yes", "--num-replicas=4", "--ipus-per-replica=1",
                     "--mpi-global-args=--allow-run-as-root --tag-output"):
            assert flag in argv, (name, flag)
        config, flags = runner_config(argv)
        assert config.model == model
        assert config.batch_sizes == tuple(sizes)
        assert config.num_io_tiles == io_tiles and config.iterations == 20 and config.data == "generated"
        assert config.output == str(tmp_path / "out" / f"{name}-sweep.h5"), "no time stamp: a rerun finds it"
        assert config.resume, "a rerun continues the sweep"
        assert config.no_progress and config.timeout == 3600
        assert config.model_cache_path == str(tmp_path / "out" / "model-cache")
    resnext = runner_config(launches[3])[0]
    assert (resnext.device_iterations, resnext.precision, resnext.half_partial, resnext.eight_bit_io,
            resnext.normalization_location) == (128, "16.16", True, True, "device")


def test_poprun_script_reruns_into_the_same_files_and_passes_site_options(tmp_path):
    env = {"POPRUN_ARGS": "--vipu-partition=p1 --host a,b", "MODEL_CACHE_PATH": str(tmp_path / "cache"),
           "TIMEOUT_SECONDS": "900", "EXTRA_ARGS": "--min-latency"}
    first = [runner_config(argv)[0].output for argv in run_with_stubs(tmp_path, "poprun-reference.sh", env=env)[1]]
    result, launches = run_with_stubs(tmp_path, "poprun-reference.sh", env=env)
    assert result.returncode == 0, result.stderr
    assert [runner_config(argv)[0].output for argv in launches] == first
    for argv in launches:
        assert argv[1:4] == ["--vipu-partition=p1", "--host", "a,b"], "poprun's own options before the reference's"
        config, _ = runner_config(argv)
        assert config.model_cache_path == str(tmp_path / "cache") and config.timeout == 900 and config.min_latency


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
    env = {"SLURM_JOB_ID": "31337", "CONFIG": "efficientnet-b0-cpu", "BATCH_SIZES": "1..4", "ITERATIONS": "7",
           "RANKS_PER_NODE": "3", "SRUN_MPI": "pmix", "EXTRA_ARGS": "--strict --max-cv 5",
           "TIMEOUT_SECONDS": "600"}
    result, launches = run_with_stubs(tmp_path, "slurm.sbatch", env=env)
    assert result.returncode == 0, result.stderr
    [argv] = launches
    assert argv[0] == "srun"
    assert {"--ntasks-per-node=3", "--cpu-bind=none", "--mpi=pmix"} <= set(argv)
    config, _ = runner_config(argv)
    assert config.batch_sizes == (1, 2, 3, 4) and config.iterations == 7 and config.model == "efficientnet-b0"
    assert config.numa_aware == "yes" and config.strict and config.max_cv == 5
    assert config.timeout == 600 and config.no_progress
    assert config.output == str(tmp_path / "out" / "efficientnet-b0-cpu-31337.h5")
    assert config.resume, "a requeue (same job id) continues the sweep"


def test_slurm_script_defaults_to_the_numa_nodes_and_pmi2(tmp_path):
    result, launches = run_with_stubs(tmp_path, "slurm.sbatch")
    assert result.returncode == 0, result.stderr
    [argv] = launches
    nodes = [path for path in Path("/sys/devices/system/node").glob("node[0-9]*")
             if (path / "cpulist").read_text().strip()]
    assert f"--ntasks-per-node={max(len(nodes), 1)}" in argv
    assert [arg for arg in argv if arg.startswith("--mpi=")] == ["--mpi=pmi2"], "what PyPI's MPICH needs"
    config, _ = runner_config(argv)
    assert config.no_progress and config.timeout == 1800


def test_slurm_script_keeps_the_site_mpi_default_when_told(tmp_path):
    result, launches = run_with_stubs(tmp_path, "slurm.sbatch", env={"SRUN_MPI": ""})
    assert result.returncode == 0, result.stderr
    [argv] = launches
    assert not any(arg.startswith("--mpi") for arg in argv)


@pytest.mark.parametrize("script", ["slurm.sbatch", "workstation.sh"])
def test_script_keeps_the_configs_batch_sizes_and_iterations(tmp_path, script):
    result, launches = run_with_stubs(tmp_path, script, env={"CONFIG": str(own_sizes_config(tmp_path))})
    assert result.returncode == 0, result.stderr
    [argv] = launches
    config, flags = runner_config(argv)
    assert "--batch-size" not in flags and "--iterations" not in flags
    assert (config.batch_sizes, config.iterations) == ((16,), 50)
    assert config.no_progress and config.timeout == 1800


@pytest.mark.parametrize("script", ["slurm.sbatch", "workstation.sh"])
def test_script_writes_to_the_output_it_is_given(tmp_path, script):
    output = tmp_path / "elsewhere" / "sweep.h5"
    result, launches = run_with_stubs(tmp_path, script, env={"OUTPUT": str(output), "SLURM_JOB_ID": "5"})
    assert result.returncode == 0, result.stderr
    assert runner_config(launches[0])[0].output == str(output)
    assert output.parent.is_dir(), "the script makes the output's folder"


def test_workstation_script_runs_mpiexec_without_launcher_binding(tmp_path):
    result, launches = run_with_stubs(tmp_path, "workstation.sh", ["--strict"],
                                      env={"RANKS": "2", "BATCH_SIZES": "2,4", "ITERATIONS": "5",
                                           "MPIEXEC_ARGS": "--allow-run-as-root"})
    assert result.returncode == 0, result.stderr
    [argv] = launches
    assert argv[0] == "mpiexec" and argv[1:6] == ["-n", "2", "--bind-to", "none", "--allow-run-as-root"]
    config, _ = runner_config(argv)
    assert config.batch_sizes == (2, 4) and config.iterations == 5 and config.strict
    assert config.no_progress and config.timeout == 1800
    assert config.output == str(tmp_path / "out" / "resnet50-cpu.h5"), "no time stamp: a rerun continues it"
    assert config.resume


DRY_RUNS = {  # script -> (arguments, environment) for a dry run compared with a stubbed real one
    "slurm.sbatch": ([], {"SLURM_JOB_ID": "77", "CONFIG": "resnet50-cpu", "EXTRA_ARGS": "--strict"}),
    "workstation.sh": (["--max-cv", "5"], {"RANKS": "2", "OUTPUT": "with space/x.h5"}),
    "poprun-reference.sh": (["resnet50", "resnext101"], {"POPRUN_ARGS": "--vipu-partition=p"}),
}


@pytest.mark.parametrize("script", sorted(DRY_RUNS))
def test_dry_run_prints_exactly_the_commands_and_runs_none(tmp_path, script):
    args, env = DRY_RUNS[script]
    env = {**env, "OUTPUT_DIR": str(tmp_path / "dry out")}
    dry, launched = run_with_stubs(tmp_path, script, args, env={**env, "DRY_RUN": "1"})
    assert dry.returncode == 0, dry.stderr
    assert launched == [], "a dry run launches nothing"
    assert not (tmp_path / "dry out").exists() and not (tmp_path / "with space").exists(), "nor makes folders"
    printed = [shlex.split(line) for line in dry.stdout.splitlines()]
    assert printed[0][:2] == ["mkdir", "-p"]
    real, launches = run_with_stubs(tmp_path, script, args, env=env)
    assert real.returncode == 0, real.stderr
    assert printed[1:] == launches, "the printed commands are the ones a real run launches"


def test_headers_say_what_they_pass_and_where_site_options_go():
    slurm = header("slurm.sbatch")
    assert "--partition" in slurm and "--account" in slurm and "#SBATCH" in slurm
    assert "pmi2" in slurm and "DRY_RUN=1" in slurm
    for script in ("slurm.sbatch", "workstation.sh", "poprun-reference.sh"):
        text = header(script)
        assert "--no-progress" in text and "--timeout" in text and "DRY_RUN=1" in text, script
    for script in ("slurm.sbatch", "workstation.sh"):
        assert "--batch-size and --iterations are passed only" in header(script), script
    poprun = header("poprun-reference.sh")
    assert "--model-cache-path" in poprun and "--partition" in poprun and "--account" in poprun
