"""The first screen: bad inputs a newcomer meets end in one line and exit 2, on every rank, with nothing written;
an output file belongs to one job at a time; the sweep table stays readable."""
import os
import signal
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
    from mpirunner.runfile.plain import read_results

    output = tmp_path / "shared.h5"
    lock = tmp_path / "shared.h5.lock"
    # the first job writes batch 1, then sleeps in the first call of batch 2 while the others try; SIGTERM ends it
    command = [sys.executable, "-m", "mpirunner", *TINY, "--iterations", "3", "--batch-size", "1,2",
               "--output", str(output)]
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "MPIRUNNER_FAULT": "sleep:run=2:step=1:seconds=300"})
    try:
        deadline = time.monotonic() + 120
        while not output.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert output.exists() and lock.exists(), "the first job wrote no file"
        owner = lock.read_text()
        for flag, ranks in (("--overwrite", 2), ("--resume", None)):  # a live owner beats both
            second = run_cli([*TINY, "--iterations", "3", "--output", output, flag], ranks=ranks)
            assert second.returncode == 2, second.stdout + second.stderr
            assert no_traceback(second)
            line = error_lines(second)[0]
            assert "another job" in line and f"pid {first.pid}" in line and "host " in line, line
        assert first.poll() is None, "the first job ended before the second ones were tried"
        assert lock.read_text() == owner  # the second jobs left the first job's lock alone
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 128 + signal.SIGTERM, err
    runs = read_results(output)["runs"]
    assert [int(run["attrs"]["batch_size"]) for run in runs.values()] == [1]  # the first job's run, intact
    assert not lock.exists()  # released when the first job ended


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_lock_left_by_a_dead_job_on_this_host_is_taken_over_and_said_so(tmp_path, caplog):
    import json

    from mpirunner.runfile.output import take_lock
    from mpirunner.mpi.world import host_name

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
    from mpirunner.runfile.output import LOCK_STALE_SECONDS, take_lock

    output = tmp_path / "run.h5"
    lock = tmp_path / "run.h5.lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "2026-01-01T00:00:00+00:00"}))
    with pytest.raises(UsageError, match="host elsewhere, pid 1"):
        take_lock(output, "here")  # its pid cannot be checked from here; a fresh heartbeat means it is alive
    old = time.time() - LOCK_STALE_SECONDS - 60
    os.utime(lock, (old, old))
    assert take_lock(output, "here") == lock
    assert json.loads(lock.read_text())["host"] == "here"


def test_a_lock_holding_json_that_is_not_an_object_counts_as_unreadable(tmp_path):
    import pytest

    from mpirunner.errors import UsageError
    from mpirunner.runfile.output import LOCK_STALE_SECONDS, release_lock, take_lock

    output = tmp_path / "run.h5"
    lock = tmp_path / "run.h5.lock"
    lock.write_text("[1, 2]")
    with pytest.raises(UsageError, match="another job \\(unknown;"):
        take_lock(output, "here")  # fresh: its writer may still be filling it in
    old = time.time() - LOCK_STALE_SECONDS - 60
    os.utime(lock, (old, old))
    assert take_lock(output, "here") == lock
    release_lock()


# ---------------------------------------------------------------- a peak search needs only its bound

def test_find_peak_qps_with_a_latency_bound_alone_is_a_server_search_sized_by_its_percentile():
    from mpirunner.config import resolve_config
    from mpirunner.scenarios import search_point_seconds

    config = resolve_config({"find_peak_qps": True, "latency_bound": 50.0})
    assert config.scenario == "server" and config.min_duration == 0.0
    # a point's length comes from its percentile: 4 x 459 queries for a p99, or 30 s worth where those take longer
    assert search_point_seconds(400.0, config.min_duration, config.percentile, 1) == 4 * 459 / 400.0
    assert search_point_seconds(40.0, config.min_duration, config.percentile, 1) == 30.0


def test_a_plain_server_run_still_needs_its_duration():
    import pytest

    from mpirunner.config import resolve_config
    from mpirunner.errors import UsageError

    with pytest.raises(UsageError, match="--min-duration"):
        resolve_config({"scenario": "server", "target_qps": 10.0})


# ---------------------------------------------------------------- the sweep table and the run block

def sweep_attrs(**changes):
    """One run's attributes as the sweep table and the run block read them (made-up numbers)."""
    attrs = {"model": "resnet50", "batch_size": 8, "device_iterations": 1, "precision": "32.32", "dtype": "float32",
             "data": "generated", "latency_min": 1.0, "latency_p50": 2.0, "latency_p90": 3.0, "latency_p99": 4.0,
             "latency_max": 5.0, "latency_mean": 2.25, "latency_count": 400, "compile_seconds_max": 1.5,
             "step_cv": 0.031, "host_gap_max": 0.0123, "device_busy_min": 0.975, "input_pool_steps": 3,
             "input_pool_bytes": 3 << 20, "throughput": 1234.5678, "throughput_ci95_low": 1200.0,
             "throughput_ci95_high": 1260.0, "latency_p50_ci95_low": 1.9, "latency_p50_ci95_high": 2.1,
             "latency_p99_ci95_low": 3.5, "latency_p99_ci95_high": 4.6, "iterations": 40, "timed_seconds": 1.52,
             "windows": 0, "achieved_flops": 5.0e12, "flops_per_sample": 4.1e9, "valid": True, "validity_reason": "",
             "throughput_sum": 1240.0, "samples_per_step": 8}
    attrs.update(changes)
    return attrs


LONG_REASONS = ["too short: timed 0.349 s < the minimum 1 s (remedy: --min-duration 1 to extend the run, or more "
                "--iterations)",
                "not warmed up: first third 298.8% slower than the last (median step 134.550 ms vs 33.737 ms, beyond "
                "the noise) (remedy: more --warmup-iterations, --min-duration or --until-stable)",
                "unstable: step-time cv 31.6% on rank 0 on vm > --max-cv 10% (remedy: --until-stable, more "
                "--iterations, or a quieter machine)"]


def test_the_sweep_table_gives_short_verdicts_and_lists_each_reason_once_below():
    from mpirunner.runfile.sweep import TABLE_WIDTH, sweep_table

    no_interval = {key: float("nan") for key in ("throughput_ci95_low", "throughput_ci95_high")}
    runs = [sweep_attrs(batch_size=1, samples_per_step=1, valid=False, validity_reason=LONG_REASONS[:2],
                        latency_count=20, ci_unavailable="throughput: fewer than 5 timed steps on a rank",
                        **no_interval),
            sweep_attrs(batch_size=4, samples_per_step=4, valid=False, validity_reason=LONG_REASONS[2:],
                        ci_unavailable="throughput: fewer than 5 timed steps on a rank", **no_interval),
            sweep_attrs(batch_size=8)]
    lines = sweep_table(runs).splitlines()
    assert max(len(line) for line in lines) <= TABLE_WIDTH
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert rows["1"].endswith("INVALID (2)") and rows["4"].endswith("INVALID (1)") and rows["8"].endswith("VALID")
    assert "1234.57 *" in rows["1"] and "interval n/a" not in "\n".join(lines)
    assert "1234.57 [1200.00, 1260.00]" in rows["8"] and " n/a " in rows["1"] + " "  # p99 from 20 latencies
    footnotes = [line for line in lines if line.startswith("* ")]
    assert footnotes == ["* no 95% interval: fewer than 5 timed steps on a rank"]  # once for both runs
    text = "\n".join(lines)
    for reason in LONG_REASONS:  # each reason once, below the table (wrapped, never in a row)
        assert text.count(reason.split(" (remedy")[0]) == 1
        assert reason.split(" (remedy")[0] not in "\n".join(rows.values())


def test_the_run_block_lists_long_reasons_one_per_line_within_160_characters():
    from mpirunner.runfile.block import format_run_block

    block = format_run_block(sweep_attrs(valid=False, validity_reason=LONG_REASONS), world_size=2).splitlines()
    assert max(len(line) for line in block) <= 160
    first = next(index for index, line in enumerate(block) if line.startswith("INVALID: "))
    assert block[first].startswith("INVALID: too short: timed 0.349 s")
    assert block[first + 1].startswith("  not warmed up:") and block[first + 3].startswith("  unstable:")
    short = format_run_block(sweep_attrs(valid=False, validity_reason=["cv 12.0% > 10%", "only 4 steps"]), 1)
    assert "INVALID: cv 12.0% > 10%; only 4 steps" in short.splitlines()  # one line while it fits


# ---------------------------------------------------------------- named configs measure long enough

def test_cpu_and_gpu_configs_time_every_batch_size_for_longer_than_the_validity_minimum():
    from mpirunner.checks.rules import MIN_TIMED_SECONDS
    from mpirunner.config import config_names, resolve_config

    names = [name for name in config_names() if name.endswith(("-cpu", "-gpu"))]
    assert len(names) == 8
    for name in names:  # a sweep's small sizes too: the stop rule extends them to min_duration
        config = resolve_config({"config": name, "batch_size": "1,4,8"})
        assert config.min_duration and config.min_duration >= 3 * MIN_TIMED_SECONDS, name
        assert config.warmup_iterations >= 5 and config.iterations >= 20, name


def test_a_job_that_ends_frees_its_output_for_the_next_job_in_the_same_process(tmp_path):
    from mpirunner.runfile.output import release_lock, take_lock

    output = tmp_path / "run.h5"
    lock = take_lock(output, "here")
    assert lock.exists()
    release_lock()  # what the guard does when the job ends on a rank
    assert not lock.exists()
    assert take_lock(output, "here") == lock  # no "another job": the first one is over
    release_lock()
    assert not lock.exists()
