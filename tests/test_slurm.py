"""jobs/slurm.sbatch under a real single-node SLURM (tests/cluster.py starts it): srun's ranks form one
MPI world, and the file says so (world size, launcher srun, the job id); a sweep cancelled with
scancel keeps its finished sizes and a resubmission with the same OUTPUT completes it.

Run only these: python -m pytest -m slurm tests
"""
import sys
import time

import numpy as np
import pytest

from mpirunner.runfile.plain import read_results
from tests.cluster import slurm  # noqa: F401  (the session fixture)
from tests.conftest import REPO

pytestmark = pytest.mark.slurm

SCRIPT = REPO / "jobs" / "slurm.sbatch"
# Small enough for 2 ranks on 2 cores: resnet18 at 32 px, one warm-up step.
TINY_CONFIG = "model: resnet18\ndevice: cpu\nimage_size: 32\nwarmup_iterations: 1\nbatch_size: 4\niterations: 5\n"
# What this machine needs instead of the script's #SBATCH lines (2 nodes, 1 hour): one node, 2 tasks,
# and a time limit that ends a stuck job long before the test's own timeout.
ONE_NODE = ("--nodes=1", "--ntasks=2", "--time=3")


def job_env(tmp_path, output, **extra):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    return {"PYTHON": sys.executable, "CONFIG": str(config), "OUTPUT": str(output), "RANKS_PER_NODE": "2",
            "TIMEOUT_SECONDS": "120", **extra}


def job_log(tmp_path, job_id):
    path = tmp_path / f"job-{job_id}.out"
    return path.read_text(errors="replace") if path.exists() else "(no job log)"


def submit(slurm, tmp_path, env, wait=True):
    """sbatch the job script with this machine's options; return (CompletedProcess, job id)."""
    options = (*(["--wait"] if wait else []), *ONE_NODE, f"--output={tmp_path}/job-%j.out")
    return slurm.sbatch(SCRIPT, *options, env=env, cwd=tmp_path, timeout=300)


def submit_until_first_size(slurm, tmp_path, env, output, deadline):
    """Submit without waiting; return the job id once the output holds a finished size."""
    result, job_id = submit(slurm, tmp_path, env, wait=False)
    assert job_id, result.stderr
    while not has_sizes(output) and slurm.job_state(job_id) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert has_sizes(output), "the job ended before its first size:\n" + job_log(tmp_path, job_id)
    return job_id


def steps_asked(run):
    return run["attrs"].get("iterations_requested", run["attrs"].get("iterations"))


def has_sizes(path):
    return path.exists() and bool(sizes_in(path))


def sizes_in(path):
    return sorted(run["attrs"]["batch_size"] for run in read_results(path)["runs"].values())


def test_sbatch_runs_the_job_script_as_one_two_rank_world(slurm, tmp_path):  # noqa: F811
    output = tmp_path / "out" / "sweep.h5"
    env = job_env(tmp_path, output, BATCH_SIZES="1,2", ITERATIONS="10")
    result, job_id = submit(slurm, tmp_path, env)
    assert result.returncode == 0 and job_id, (result.stdout + result.stderr + job_log(tmp_path, job_id)
                                               + slurm.logs())
    data = read_results(output)
    attrs = data["attrs"]
    assert attrs["world_size"] == 2, attrs["world_size"]
    assert attrs["launcher"] == "srun"
    assert attrs["slurm_job_id"] == job_id
    assert [row["rank"] for row in data["ranks"]] == [0, 1]
    assert sizes_in(output) == [1, 2], "BATCH_SIZES reached the runner"
    assert [steps_asked(run) for run in data["runs"].values()] == [10, 10], "ITERATIONS reached the runner"
    assert "\r" not in job_log(tmp_path, job_id), "--no-progress: no progress-bar frames in the job log"


def test_sbatch_keeps_the_configs_batch_size_and_iterations(slurm, tmp_path):  # noqa: F811
    output = tmp_path / "config.h5"
    result, job_id = submit(slurm, tmp_path, job_env(tmp_path, output))
    assert result.returncode == 0, result.stderr + job_log(tmp_path, job_id)
    data = read_results(output)
    assert sizes_in(output) == [4]
    assert [steps_asked(run) for run in data["runs"].values()] == [5]


def test_scancel_keeps_finished_sizes_and_a_resubmission_completes_the_sweep(slurm, tmp_path):  # noqa: F811
    sizes = [1, 2, 4, 8, 16, 32, 64, 128]
    output = tmp_path / "sweep.h5"
    env = job_env(tmp_path, output, BATCH_SIZES=",".join(map(str, sizes)), ITERATIONS="20")
    job_id = submit_until_first_size(slurm, tmp_path, env, output, deadline=time.monotonic() + 180)
    assert slurm.run("scancel", job_id).returncode == 0
    deadline = time.monotonic() + 60
    while slurm.job_state(job_id) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    kept = sizes_in(output)
    assert kept and kept == sizes[:len(kept)] and len(kept) < len(sizes), (kept, job_log(tmp_path, job_id))
    before = read_results(output)["runs"]

    again, second_id = submit(slurm, tmp_path, env)
    assert again.returncode == 0, again.stderr + job_log(tmp_path, second_id)
    assert sizes_in(output) == sizes, "every size exactly once"
    after = read_results(output)["runs"]
    for name, run in before.items():  # the finished sizes were kept as they were, not measured again
        arrays = [key for key, value in run.items() if isinstance(value, np.ndarray)]
        assert arrays and all(np.array_equal(run[key], after[name][key]) for key in arrays), name
