"""The first screen: bad inputs a newcomer meets end in one line and exit 2, on every rank, with nothing written;
an output file belongs to one job at a time; the sweep table stays readable."""
import os
import subprocess
import sys
import time

from tests.conftest import REPO, TINY, mpiexec_path, run_cli, write_jpegs


def no_traceback(result):
    return "Traceback" not in result.stdout + result.stderr


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]


# ---------------------------------------------------------------- a config that is not text

def test_a_config_file_of_random_bytes_is_one_line_naming_the_file(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_bytes(bytes(range(128, 256)) * 4)
    result = run_cli(["--config", config, "--output", tmp_path / "out.h5"])
    assert result.returncode == 2, result.stderr
    assert no_traceback(result)
    lines = error_lines(result)
    assert len(lines) == 1 and str(config) in lines[0] and "UTF-8" in lines[0], result.stderr
    assert not (tmp_path / "out.h5").exists()


def test_a_config_of_random_bytes_ends_every_rank_alike(tmp_path):
    config = tmp_path / "bench"  # no .yaml suffix: still read as the file it names
    config.write_bytes(os.urandom(512).replace(b"\n", b"\xff"))
    result = run_cli(["--config", config], ranks=2)
    assert result.returncode == 2, result.stderr
    assert no_traceback(result)
    assert error_lines(result) and all(str(config) in line for line in error_lines(result))


# ---------------------------------------------------------------- an image folder that cannot be read

def unreadable_folder(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "noise.jpg").write_bytes(os.urandom(3000))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_a_folder_of_unreadable_images_is_exit_2_on_every_rank_before_any_step(tmp_path):
    folder = unreadable_folder(tmp_path / "images")
    output = tmp_path / "out" / "run.h5"
    result = run_cli([*TINY, "--iterations", "3", "--data", "real", "--data-path", folder, "--output", output],
                     ranks=2)
    assert result.returncode == 2, result.stdout + result.stderr
    assert no_traceback(result) and "MPI_Abort" not in result.stderr and "Abort" not in result.stdout
    lines = error_lines(result)
    assert lines, result.stderr
    assert f"{folder}/empty.jpg" in lines[0]  # the first unreadable file, in sorted order
    assert "2 of 2 image file(s) unreadable" in lines[0]  # the .txt is not an image file
    assert "throughput:" not in result.stdout  # no step was timed
    assert not output.exists()
    assert not output.parent.exists() or not list(output.parent.iterdir())


def test_some_unreadable_images_are_skipped_with_one_warning(tmp_path):
    folder = unreadable_folder(tmp_path / "images")
    write_jpegs(folder, 1)  # sorted: empty.jpg, img000.jpg, noise.jpg: rank 0's share (1st, 3rd) is unreadable
    output = tmp_path / "run.h5"
    result = run_cli([*TINY, "--iterations", "3", "--data", "real", "--data-path", folder, "--output", output],
                     ranks=2)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "image file(s) unreadable" in line]
    assert len(warnings) == 1, warnings
    assert "2 of 3 image file(s) unreadable" in warnings[0] and "empty.jpg" in warnings[0]
    assert output.exists()  # rank 0 took the readable image instead of its unreadable share


# ---------------------------------------------------------------- one job per output file

def test_a_second_job_on_a_running_jobs_output_exits_2_and_the_first_file_is_intact(tmp_path):
    from mpirunner.results import read_results

    output = tmp_path / "shared.h5"
    lock = tmp_path / "shared.h5.lock"
    # the first job writes batch 1, then sleeps 45 s in the first call of batch 2 while the others try
    command = [sys.executable, "-m", "mpirunner", *TINY, "--iterations", "3", "--batch-size", "1,2",
               "--output", str(output)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "MPIRUNNER_FAULT": "sleep:run=2:step=1:seconds=45"})
    try:
        deadline = time.monotonic() + 120
        while not output.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert output.exists() and lock.exists(), "the first job wrote no file"
        for flag, ranks in (("--overwrite", 2), ("--resume", None)):  # a live owner beats both
            second = run_cli([*TINY, "--iterations", "3", "--output", output, flag], ranks=ranks)
            assert second.returncode == 2, second.stdout + second.stderr
            assert no_traceback(second)
            line = error_lines(second)[0]
            assert "another job" in line and f"pid {first.pid}" in line and "host " in line, line
        assert first.poll() is None, "the first job ended before the second ones were tried: make it sleep longer"
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode in (0, 3), err  # 3: INVALID runs are still written
    runs = read_results(output)["runs"]
    assert sorted(int(run["attrs"]["batch_size"]) for run in runs.values()) == [1, 2]
    assert not lock.exists()  # released when the first job ended


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_left_by_a_dead_job_on_this_host_is_taken_over_and_said_so(tmp_path, caplog):
    import json

    from mpirunner.output_file import take_lock
    from mpirunner.world import host_name

    output = tmp_path / "run.h5"
    lock = tmp_path / "run.h5.lock"
    lock.write_text(json.dumps({"host": host_name(), "pid": dead_pid(), "started": "2026-01-01T00:00:00+00:00"}))
    with caplog.at_level("WARNING", logger="mpirunner"):
        assert take_lock(output, host_name()) == lock
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "taking over" in caplog.text and "no longer running" in caplog.text


def test_a_lock_of_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path):
    import json

    import pytest

    from mpirunner.errors import UsageError
    from mpirunner.output_file import LOCK_STALE_SECONDS, take_lock

    output = tmp_path / "run.h5"
    lock = tmp_path / "run.h5.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(UsageError, match="host elsewhere, pid 1"):
        take_lock(output, "here")  # its pid cannot be checked from here; a fresh heartbeat means it is alive
    old = time.time() - LOCK_STALE_SECONDS - 60
    os.utime(lock, (old, old))
    assert take_lock(output, "here") == lock
    assert json.loads(lock.read_text())["host"] == "here"


# ---------------------------------------------------------------- a peak search needs only its bound

def test_find_peak_qps_with_a_latency_bound_alone_is_a_server_search_sized_by_its_percentile():
    from mpirunner.config import resolve_config
    from mpirunner.scenarios import search_point_seconds

    config = resolve_config({"find_peak_qps": True, "latency_bound": 50.0})
    assert config.scenario == "server" and config.min_duration == 0.0
    # a point's length comes from its percentile: 120 queries for a p99, at any load
    seconds = search_point_seconds(40.0, config.min_duration, config.percentile, config.seed, 1)
    assert 1.5 < seconds < 6.0


def test_a_plain_server_run_still_needs_its_duration():
    import pytest

    from mpirunner.config import resolve_config
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match="--min-duration"):
        resolve_config({"scenario": "server", "target_qps": 10.0})
