"""Issue 15 on this machine: the launcher/MPI check, the output settled first, --resume, out of memory
as a result, a failed write (several hosts for real: test_multihost.py)."""
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from mpirunner.mpi.launcher import declared_world, mismatch_after_init, mismatch_before_init
from mpirunner.mpi.oom import bytes_asked, is_out_of_memory
from mpirunner.runfile.plain import read_results
from tests.conftest import REPO, TINY, run_cli

FAST = [*TINY, "--iterations", "3", "--min-iterations", "1"]


def _clean_env(**extra):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OMPI_", "PMI", "SLURM_", "MPIRUNNER_", "HYDRA_"))}
    env.update(extra)
    return env


# ---------------------------------------------------------------- 1. launcher and MPI library

def _said(environ):
    declared = declared_world(environ)
    return None if declared is None else (declared.size, declared.rank, declared.family)


def test_the_direct_launchers_variables_come_before_slurms():
    slurm = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}
    assert _said({**slurm, "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2"}) == (4, 2, "Open MPI")
    assert _said({**slurm, "PMI_SIZE": "8", "PMI_RANK": "3"}) == (8, 3, "PMI")
    assert _said(slurm) == (1, 0, "SLURM")
    assert declared_world({"SLURM_NTASKS": "2"}) is None, "a batch shell's allocation is not a launch"
    assert declared_world({}) is None


def test_mismatch_lines_name_both_sizes_the_library_and_the_fix():
    ompi = declared_world({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "0"})
    line = mismatch_before_init(ompi, "MPICH Version: 5.0.2")
    assert "4 ranks" in line and "1 rank" in line and "MPICH Version: 5.0.2" in line and "install mpi4py" in line
    assert mismatch_before_init(ompi, "Open MPI v5.0.11") is None
    srun = declared_world({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"})
    line = mismatch_after_init(srun, 1, 0, "MPICH Version: 5.0.2")
    assert "2 ranks" in line and "world of 1 rank" in line and "MPICH" in line
    assert mismatch_after_init(srun, 2, 1, "MPICH") is None


def test_open_mpi_variables_with_mpich_end_at_once_with_one_line_and_no_file(tmp_path):
    output = tmp_path / "never.h5"
    for rank, lines_expected in (("0", 1), ("1", 0)):
        start = time.monotonic()
        result = run_cli([*FAST, "--output", output], env=_clean_env(OMPI_COMM_WORLD_SIZE="4",
                                                                     OMPI_COMM_WORLD_RANK=rank), timeout=60)
        assert time.monotonic() - start < 10
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == lines_expected, result.stderr  # only the launcher's rank 0 speaks
        if lines:
            assert "4 ranks" in lines[0] and "1 rank" in lines[0] and "MPICH" in lines[0]
        assert not output.exists() and "Traceback" not in result.stderr


# ---------------------------------------------------------------- 2. output settled first

def test_unwritable_output_ends_two_ranks_before_any_model_is_built():
    start = time.monotonic()
    result = run_cli([*FAST, "--output", "/proc/forbidden/x.h5"], ranks=2, env=_clean_env(), timeout=60)
    assert time.monotonic() - start < 15
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("mpirunner: error: cannot write output /proc/forbidden/x.h5") == 1, result.stderr
    assert "Traceback" not in result.stderr and "placement" not in result.stderr, "nothing was set up"


def test_an_existing_output_points_to_resume_and_resume_with_overwrite_is_refused(tmp_path):
    output = tmp_path / "x.h5"
    output.write_bytes(b"")
    result = run_cli([*FAST, "--output", output], env=_clean_env())
    assert result.returncode == 2 and "--resume" in result.stderr
    result = run_cli([*FAST, "--output", output, "--resume", "--overwrite"], env=_clean_env())
    assert result.returncode == 2 and "choose one" in result.stderr


def test_a_full_disk_keeps_the_runs_written_before_and_ends_without_a_traceback(tmp_path):
    """A file-size limit put on the running process once run 1 is on disk makes the write of run 2 fail
    (EFBIG, as a full disk would fail it: the same OSError path)."""
    output = tmp_path / "sweep.h5"
    job = subprocess.Popen([sys.executable, "-m", "mpirunner", *FAST, "--batch-size", "1,2,4", "--output", str(output)],
                           cwd=REPO, env=_clean_env(MPIRUNNER_FAULT="sleep:run=2:seconds=1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not output.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    limit = output.stat().st_size + 1024  # room for a one-run file, not for two runs
    resource.prlimit(job.pid, resource.RLIMIT_FSIZE, (limit, limit))
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "could not write run bs00002" in stderr and "kept the finished run(s) bs00001" in stderr
    assert list(read_results(output)["runs"]) == ["bs00001"]
    assert sorted(os.listdir(tmp_path)) == ["sweep.h5"], "no temporary left"


# ---------------------------------------------------------------- 3. --resume

def test_a_sweep_stopped_by_sigterm_resumes_with_every_size_once_and_earlier_arrays_unchanged(tmp_path):
    output = tmp_path / "sweep.h5"
    args = [sys.executable, "-m", "mpirunner", *FAST, "--batch-size", "1,2,4", "--output", str(output), "--resume"]
    job = subprocess.Popen(args, cwd=REPO, env=_clean_env(MPIRUNNER_FAULT="sleep:run=2:seconds=3"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not output.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 128 + signal.SIGTERM, stderr
    before = read_results(output)
    assert list(before["runs"]) == ["bs00001"]

    result = subprocess.run(args, cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    after = read_results(output)
    assert list(after["runs"]) == ["bs00001", "bs00002", "bs00004"]
    for name in ("step_seconds", "step_start", "batch_latency", "compile_seconds"):
        assert after["runs"]["bs00001"][name].tobytes() == before["runs"]["bs00001"][name].tobytes()
    assert after["attrs"]["created"] == before["attrs"]["created"], "root attrs keep the first run's"
    assert after["attrs"]["argv"] == before["attrs"]["argv"]
    assert len(after["attrs"]["resumed_argv"]) == 1 and len(after["attrs"]["resumed_created"]) == 1

    again = subprocess.run(args, cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "nothing to measure" in again.stdout


def test_resume_refuses_other_settings_and_another_world_size(tmp_path):
    output = tmp_path / "x.h5"
    assert run_cli([*FAST, "--batch-size", "1", "--output", output], env=_clean_env()).returncode == 0
    result = run_cli([*FAST, "--batch-size", "2", "--output", output, "--resume", "--precision", "16.16",
                      "--seed", "3"], env=_clean_env())
    assert result.returncode == 2 and "precision" in result.stderr and "seed" in result.stderr, result.stderr
    result = run_cli([*FAST, "--batch-size", "2", "--output", output, "--resume"], ranks=2, env=_clean_env())
    assert result.returncode == 2 and "1 rank(s), this job has 2" in result.stderr, result.stderr
    assert list(read_results(output)["runs"]) == ["bs00001"]


def test_resume_on_a_missing_file_starts_it(tmp_path):
    output = tmp_path / "new.h5"
    result = run_cli([*FAST, "--batch-size", "1", "--output", output, "--resume"], env=_clean_env())
    assert result.returncode == 0, result.stderr
    assert list(read_results(output)["runs"]) == ["bs00001"]


# ---------------------------------------------------------------- 6. out of memory

def test_out_of_memory_messages_are_recognised_with_the_size_asked_for():
    cpu = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 6553600000 bytes.")
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")
    assert is_out_of_memory(cpu) and bytes_asked(str(cpu)) == 6553600000
    assert is_out_of_memory(cuda) and bytes_asked(str(cuda)) == 2 << 30
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape mismatch"))


@pytest.mark.parametrize("step", [1, 4])  # the first call (compile), a timed step
def test_out_of_memory_on_one_rank_is_a_failed_run_and_the_sweep_stops_going_up(tmp_path, step):
    output = tmp_path / "sweep.h5"
    result = run_cli([*FAST, "--batch-size", "1,2,4", "--output", output], ranks=2, timeout=180,
                     env=_clean_env(MPIRUNNER_FAULT=f"oom:rank=1:run=2:step={step}"))
    assert result.returncode == 5, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if "failed" in line]
    assert len(lines) == 1 and "batch size 2" in lines[0] and "rank 1" in lines[0] and "123.0 GiB" in lines[0]
    data = read_results(output)
    assert list(data["runs"]) == ["bs00001", "bs00002"], "bs 4 is not tried"
    failed = data["runs"]["bs00002"]
    assert failed["attrs"]["status"] == "failed" and "out of memory on rank 1" in failed["attrs"]["failure_reason"]
    assert set(failed) == {"attrs"}, "no step arrays"
    assert data["runs"]["bs00001"]["attrs"]["status"] == "measured"
    report = subprocess.run([sys.executable, "-m", "mpirunner.report", str(output)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert report.returncode == 0 and "batch 2: FAILED" in report.stdout, report.stderr


def test_a_real_cpu_allocation_failure_under_an_address_space_limit(tmp_path):
    output = tmp_path / "oom.h5"
    limit = 6 << 30

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run([sys.executable, "-m", "mpirunner", *FAST, "--batch-size", "1,200000", "--output",
                             str(output)], cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=300,
                            preexec_fn=limited)
    assert result.returncode == 5, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stdout.splitlines() if "failed" in line]
    assert "batch size 200000" in line and "asked for" in line
    runs = read_results(output)["runs"]
    assert runs["bs00001"]["attrs"]["status"] == "measured" and runs["bs200000"]["attrs"]["status"] == "failed"
