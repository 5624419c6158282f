"""Reliability: every bad input gets one clear line, no fault makes the job hang, no file is ever lost
or half-written. Faults are injected with MPIRUNNER_FAULT (test-only) into a tiny model's runs
under mpiexec -n 2; each test checks the exit status, the message, the time to exit and the file.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

from mpirunner.errors import UsageError
from mpirunner.mpi.faults import Fault, parse_fault
from mpirunner.mpi.guard import EXIT_TIMEOUT
from mpirunner.runfile.plain import RunResult, read_results, write_results
from tests.conftest import REPO, TINY, mpiexec_path, run_cli

FAST = [*TINY, "--iterations", "3", "--min-iterations", "1"]


def _files(folder):
    """Everything in the folder, temporary files ('.name.tmp-pid') included."""
    return sorted(os.listdir(folder))


def _good_file(path):
    """A small valid results file written by the results layer itself (no model run needed)."""
    rng = np.random.default_rng(0)
    run = RunResult(name="bs00004", attrs={"batch_size": 4, "valid": True, "validity_reason": []},
                    step_seconds=rng.random((2, 5)), step_start=rng.random((2, 5)),
                    batch_latency=rng.random((2, 5)), compile_seconds=rng.random(2))
    return write_results(path, {"world_size": 2}, [{"rank": 0, "host": "a"}, {"rank": 1, "host": "a"}], [run])


class Watched:
    """A CLI run under mpiexec whose stderr lines and the output file's appearance are time-stamped."""

    def __init__(self, args, ranks=2, fault=None, output=None):
        env = dict(os.environ)
        env.pop("MPIRUNNER_FAULT", None)
        if fault:
            env["MPIRUNNER_FAULT"] = fault
        command = [mpiexec_path(), "-n", str(ranks), sys.executable, "-m", "mpirunner", *map(str, args)]
        self.output = output
        self.lines = []          # (seconds since start, line)
        self.file_seen = None    # seconds since start when the output file first existed
        self.start = time.monotonic()
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self._stdout = []
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=lambda: self._stdout.extend(self.process.stdout), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stderr(self):
        for line in self.process.stderr:
            self.lines.append((time.monotonic() - self.start, line.rstrip("\n")))

    def wait_for_file(self, limit=180):
        while self.file_seen is None and self.process.poll() is None and time.monotonic() - self.start < limit:
            if self.output is not None and self.output.exists():
                self.file_seen = time.monotonic() - self.start
            time.sleep(0.02)
        return self.file_seen

    def finish(self, limit=240):
        if self.output is not None:
            self.wait_for_file(limit)
        try:
            self.process.wait(timeout=max(1, limit - (time.monotonic() - self.start)))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the job hung: still running after {limit} s\n{self.stderr}")
        self.ended = time.monotonic() - self.start
        for reader in self._readers:
            reader.join(5)
        self.stdout = "".join(self._stdout)
        return self

    @property
    def stderr(self):
        return "\n".join(line for _, line in self.lines)

    def first(self, text):
        """Seconds since start of the first stderr line that contains text."""
        return next(seen for seen, line in self.lines if text in line)


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

def _bad_inputs(tmp):
    (tmp / "empty").mkdir()
    (tmp / "bad-key.yaml").write_text("model: resnet18\nbatch_szie: 4\n")
    (tmp / "bad.yaml").write_text("model: [resnet18\n")
    (tmp / "a-file").write_text("not a folder")
    existing = tmp / "existing.h5"
    existing.write_bytes(b"an earlier result")
    return {
        "unknown config": (["--config", "resnet50-cpuu"], "did you mean resnet50-cpu"),
        "unknown model": (["--model", "resnet5"], "did you mean resnet50"),
        "batch 0": (["--batch-size", "0"], "at least 1"),
        "batch -1": (["--batch-size", "-1"], "at least 1"),
        "batch abc": (["--batch-size", "abc"], "not a size"),
        "batch 8..1": (["--batch-size", "8..1"], "runs backwards"),
        "iterations 0": (["--iterations", "0"], "--iterations"),
        "iterations abc": (["--iterations", "abc"], "invalid int value"),
        "config bad key": (["--config", tmp / "bad-key.yaml"], "unknown key 'batch_szie'"),
        "config bad yaml": (["--config", tmp / "bad.yaml"], "not valid YAML"),
        "no data path": (["--data", "real"], "needs --data-path"),
        "missing data path": (["--data", "real", "--data-path", tmp / "nowhere"], "is not a directory"),
        "empty data path": (["--data", "real", "--data-path", tmp / "empty"], "holds no images"),
        "impossible flags": (["--eight-bit-io", "--normalization-location", "none"], "raw bytes"),
        "two stop rules": (["--until-stable", "--min-duration", "1"], "choose one"),
        "unwritable output": (["--output", tmp / "a-file" / "out.h5"], "not writable"),
        "existing output": (["--output", existing], "--overwrite"),
        "bad fault switch": (["--iterations", "3"], "MPIRUNNER_FAULT"),
    }


BAD_INPUTS = ["unknown config", "unknown model", "batch 0", "batch -1", "batch abc", "batch 8..1", "iterations 0",
              "iterations abc", "config bad key", "config bad yaml", "no data path", "missing data path",
              "empty data path", "impossible flags", "two stop rules", "unwritable output", "existing output",
              "bad fault switch"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_exit_2_and_no_file_under_mpiexec(tmp_path, case):
    args, expected = _bad_inputs(tmp_path)[case]
    before = _files(tmp_path)
    output = [] if "--output" in args else ["--output", tmp_path / "out.h5"]
    env = {"MPIRUNNER_FAULT": "explode:rank=1"} if case == "bad fault switch" else {}
    started = time.monotonic()
    result = run_cli([*TINY, *args, *output], ranks=2, timeout=120, env=env)
    seconds = time.monotonic() - started
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines == [lines[0]] and lines[0].startswith("mpirunner: error: "), result.stderr  # rank 0 alone
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _files(tmp_path) == before  # nothing written, no temporary file
    if case == "existing output":
        assert (tmp_path / "existing.h5").read_bytes() == b"an earlier result"
    assert seconds < 60


def test_bad_input_seen_by_one_rank_only_still_ends_every_rank(tmp_path):
    """As when a config file exists on one host only: MPICH would leave the other rank in MPI_Init."""
    good = tmp_path / "here.yaml"
    good.write_text("model: resnet18\n")
    rank_args = [sys.executable, "-m", "mpirunner", *TINY, "--output", tmp_path / "out.h5", "--config"]
    command = [mpiexec_path(), "-n", "1", *rank_args, good, ":", "-n", "1", *rank_args, tmp_path / "elsewhere.yaml"]
    started = time.monotonic()
    result = subprocess.run(list(map(str, command)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"mpirunner: error: config file {tmp_path / 'elsewhere.yaml'} does not exist (seen by rank 1 on "
        f"{__import__('socket').gethostname()})"]
    assert time.monotonic() - started < 60
    assert _files(tmp_path) == ["here.yaml"]


def test_weights_that_fit_on_one_host_only_end_every_rank(tmp_path):
    """Checks that read files after MPI starts (--weights, --data-path) are agreed too: no rank waits."""
    torch = pytest.importorskip("torch")
    import torchvision

    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, good)
    state.pop("fc.weight")
    torch.save(state, bad)
    rank_args = [sys.executable, "-m", "mpirunner", *TINY, "--iterations", "2", "--output", tmp_path / "out.h5",
                 "--weights"]
    command = [mpiexec_path(), "-n", "1", *rank_args, good, ":", "-n", "1", *rank_args, bad]
    started = time.monotonic()
    result = subprocess.run(list(map(str, command)), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert len(errors) == 1 and "fc.weight" in errors[0] and "seen by rank 1" in errors[0]
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out.h5").exists()


def test_weights_that_do_not_fit_are_one_line_on_every_rank(tmp_path):
    torch = pytest.importorskip("torch")
    weights = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, weights)
    result = run_cli([*FAST, "--weights", weights, "--output", tmp_path / "out.h5"], ranks=2, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mpirunner: error:")]
    assert result.returncode == 2, result.stderr
    assert len(errors) == 1 and "does not match model resnet18" in errors[0]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr
    assert _files(tmp_path) == ["other.pt"]


def test_fault_switch_parses_and_rejects():
    assert parse_fault("raise:rank=1:step=3") == Fault("raise", rank=1, step=3)
    assert parse_fault("sleep:seconds=0.5:run=2") == Fault("sleep", run=2, seconds=0.5)
    assert parse_fault("") is None and parse_fault(None) is None
    assert Fault("hang", rank=1).matches(rank=1, run=5, step=9)
    assert not Fault("hang", rank=1, step=2).matches(rank=1, run=1, step=3)
    with pytest.raises(UsageError, match="unknown fault 'explode'"):
        parse_fault("explode:rank=1")
    with pytest.raises(UsageError, match="bad option 'rank=one'"):
        parse_fault("raise:rank=one")


class _OneRank:
    rank, size, is_root, host, comm = 0, 1, True, "here", None


def test_timeout_is_per_run_and_fires_only_past_the_current_deadline(capsys):
    from mpirunner.mpi.guard import Guard

    guard = Guard(_OneRank(), timeout=0.5)
    ended = []

    def record(code):
        ended.append((code, time.monotonic()))
        guard._deadline = None  # stand in for the end of the process

    guard.ending.now = record
    guard.start()
    try:
        guard.run_started("bs00001")
        time.sleep(0.3)
        guard.run_finished()
        guard.run_started("bs00002")
        started = time.monotonic()
        time.sleep(0.35)  # past the first run's deadline: nothing happens
        assert ended == []
        time.sleep(0.5)
        assert [code for code, _ in ended] == [EXIT_TIMEOUT]
        assert 0.45 < ended[0][1] - started < 0.75
    finally:
        guard.stop()
    message = capsys.readouterr().err
    assert "run bs00002 exceeded --timeout 0.5 s" in message and "no run had finished" in message


# ---------------------------------------------------------------- faults: the job ends, the file survives

def test_exception_on_rank_1_aborts_within_seconds_and_an_earlier_file_survives(tmp_path):
    output = _good_file(tmp_path / "kept.h5")
    before = output.read_bytes()
    job = Watched([*FAST, "--batch-size", "1", "--overwrite", "--output", output],
                  fault="raise:rank=1:step=3").finish()
    assert job.process.returncode == 1, job.stderr
    failed_line = job.first("failed:")
    assert any(line.startswith("[rank 1 ") and "rank 1 on " in line for _, line in job.lines if "failed:" in line)
    assert "RuntimeError: MPIRUNNER_FAULT: injected failure on rank 1" in job.stderr
    assert job.ended - failed_line < 10  # logged, then MPI_Abort ends every rank
    assert output.read_bytes() == before
    assert _files(tmp_path) == ["kept.h5"]


def test_hard_exit_of_rank_1_ends_the_job_and_keeps_finished_runs(tmp_path):
    output = tmp_path / "sweep.h5"
    job = Watched([*FAST, "--batch-size", "1,2", "--output", output], fault="exit:rank=1:step=2:run=2",
                  output=output).finish()
    assert job.process.returncode != 0, job.stderr
    exited = job.first("MPIRUNNER_FAULT: exiting with status 7")
    assert job.ended - exited < 10  # the launcher ends the other rank
    assert list(read_results(output)["runs"]) == ["bs00001"]
    # a crashed job may leave the output's lock behind; the next job takes it over (docs/failure-behaviour.md)
    assert [name for name in _files(tmp_path) if name != "sweep.h5.lock"] == ["sweep.h5"]


def test_hang_on_rank_1_is_ended_by_the_timeout_naming_run_and_rank(tmp_path):
    output = tmp_path / "sweep.h5"
    job = Watched([*FAST, "--batch-size", "1,2", "--timeout", "10", "--output", output],
                  fault="hang:rank=1:step=2:run=2", output=output).finish()
    assert job.process.returncode == EXIT_TIMEOUT, job.stderr
    message = next(line for _, line in job.lines if "exceeded --timeout" in line)
    assert "run bs00002 exceeded --timeout 10 s" in message
    assert "did not report: 1 (" in message and "0 (" not in message.split("did not report:")[1].split(";")[0]
    assert f"kept the finished run(s) bs00001 in {output}" in message
    # run 2 starts right after the file is first written: the deadline is 10 s later, not before
    assert 9 < job.first("exceeded --timeout") - job.file_seen < 25
    assert job.ended - job.first("exceeded --timeout") < 10
    assert list(read_results(output)["runs"]) == ["bs00001"]
    assert _files(tmp_path) == ["sweep.h5"]


def test_sigterm_to_the_launcher_mid_sweep_keeps_exactly_the_first_run(tmp_path):
    output = tmp_path / "sweep.h5"
    job = Watched([*FAST, "--batch-size", "1,2,3", "--output", output], fault="sleep:seconds=0.4", output=output)
    assert job.wait_for_file() is not None, job.stderr  # run 1 is written; run 2 takes >= 2 s more
    job.process.send_signal(signal.SIGTERM)
    sent = time.monotonic() - job.start
    job.finish()
    assert job.process.returncode == 128 + signal.SIGTERM, job.stderr
    assert job.ended - sent < 10
    message = next(line for _, line in job.lines if "stopped by SIGTERM" in line)
    assert "during run bs00002" in message and "kept the finished run(s) bs00001" in message
    assert "discarded the unfinished run bs00002" in message
    data = read_results(output)
    assert list(data["runs"]) == ["bs00001"]
    assert data["runs"]["bs00001"]["step_seconds"].shape == (2, 3)
    assert _files(tmp_path) == ["sweep.h5"]


def test_sigint_to_a_single_process_ends_it_cleanly(tmp_path):
    output = tmp_path / "one.h5"
    env = {**os.environ, "MPIRUNNER_FAULT": "sleep:seconds=0.4"}
    process = subprocess.Popen([sys.executable, "-m", "mpirunner", *FAST, "--batch-size", "1,2", "--output", output],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not output.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert time.monotonic() - sent < 10
    # the signal may land just before the next run starts: then the job is between runs
    assert re.search(r"stopped by SIGINT( during run bs00002)?; kept the finished run\(s\) bs00001", stderr), stderr
    assert "discarded the unfinished run bs00001" not in stderr
    assert "Traceback" not in stderr
    assert list(read_results(output)["runs"]) == ["bs00001"]
    assert _files(tmp_path) == ["one.h5"]


def test_sixteen_oversubscribed_ranks_complete_a_run(tmp_path):
    output = tmp_path / "sixteen.h5"
    result = run_cli([*TINY, "--iterations", "2", "--min-iterations", "1", "--batch-size", "1",
                      "--timeout", "300", "--output", output], ranks=16, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(output) as h5:
        assert h5.attrs["world_size"] == 16
        assert sorted(h5["ranks"]["rank"]) == list(range(16))
        assert h5["runs/bs00001/step_seconds"].shape == (16, 2)
        assert np.all(h5["runs/bs00001/step_seconds"][()] > 0)


# ---------------------------------------------------------------- scale and atomicity of the results layer

def test_write_path_64_ranks_by_10000_steps_is_fast_and_exact(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {name: rng.random((64, 10_000)) for name in ("step_seconds", "step_start", "batch_latency")}
    run = RunResult(name="bs00001", attrs={"batch_size": 1, "valid": True, "validity_reason": []},
                    compile_seconds=rng.random(64), **arrays)
    rows = [{"rank": rank, "host": f"node{rank // 8}", "local_rank": rank % 8, "cpus": [rank], "threads": 1}
            for rank in range(64)]
    started = time.perf_counter()
    write_results(tmp_path / "big.h5", {"world_size": 64}, rows, [run])
    assert time.perf_counter() - started < 5  # about 0.3 s on a quiet machine
    data = read_results(tmp_path / "big.h5")
    for name, array in arrays.items():
        assert np.array_equal(data["runs"]["bs00001"][name], array)
    assert data["ranks"][9] == {"rank": 9, "host": "node1", "local_rank": 1, "cpus": "[9]", "threads": 1}
    assert _files(tmp_path) == ["big.h5"]


GATHER_SCRIPT = """
import sys, time
import numpy as np
from mpirunner.bench import Timings
from mpirunner.runfile.build import gather_timings
from mpirunner.runfile.plain import RunResult, write_results
from mpirunner.mpi.world import init_world

world = init_world()
steps = 10_000
rng = np.random.default_rng(world.rank)
timings = Timings(compile_seconds=float(world.rank), step_start=np.arange(steps) * 1e-3,
                  step_seconds=np.full(steps, float(world.rank)), batch_latency=rng.random(steps + world.rank % 3))
world.barrier()
started = time.perf_counter()
gathered = gather_timings(world, timings)
if world.is_root:
    write_results(sys.argv[1], {"world_size": world.size}, [{"rank": r} for r in range(world.size)],
                  [RunResult(name="bs00001", attrs={}, **gathered)])
    print(f"gather+write seconds {time.perf_counter() - started:.3f}")
"""


def test_gather_and_write_of_64_ranks_by_10000_steps(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER_SCRIPT)
    output = tmp_path / "gathered.h5"
    result = subprocess.run([mpiexec_path(), "-n", "64", sys.executable, script, output], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seconds = float(result.stdout.split("gather+write seconds")[1])
    assert seconds < 20  # about 2 s with 64 ranks spinning on 2 shared cores; far less on real hosts
    data = read_results(output)["runs"]["bs00001"]
    assert data["step_seconds"].shape == (64, 10_000)
    assert np.array_equal(data["step_seconds"][:, 0], np.arange(64.0))  # row r came from rank r
    assert np.array_equal(data["compile_seconds"], np.arange(64.0))
    assert data["batch_latency"].shape == (64, 10_002)
    assert np.isnan(data["batch_latency"][0, -1]) and not np.isnan(data["batch_latency"][2, -1])


def test_a_write_that_fails_midway_leaves_the_earlier_file_and_no_temporary(tmp_path, monkeypatch):
    import mpirunner.runfile.hdf5 as results

    output = _good_file(tmp_path / "kept.h5")
    before = output.read_bytes()

    def broken_write(handle, data):
        os.write(handle, bytes(data[:100]))
        raise OSError("disk full")

    monkeypatch.setattr(results, "_write_all", broken_write)
    with pytest.raises(OSError, match="disk full"):
        _good_file(output)
    assert output.read_bytes() == before
    assert _files(tmp_path) == ["kept.h5"]
    monkeypatch.setattr(results, "_open_unnamed", lambda folder: None)  # the named-temporary path too
    with pytest.raises(OSError, match="disk full"):
        _good_file(output)
    assert output.read_bytes() == before
    assert _files(tmp_path) == ["kept.h5"]


def test_stale_temporary_of_a_dead_process_is_removed(tmp_path):
    stale = tmp_path / ".kept.h5.tmp-999999999"
    stale.write_bytes(b"half")
    _good_file(tmp_path / "kept.h5")
    assert _files(tmp_path) == ["kept.h5"]


def test_write_falls_back_to_a_named_temporary_when_linking_is_refused(tmp_path, monkeypatch):
    import mpirunner.runfile.hdf5 as results

    def refused(handle, name):
        raise PermissionError("linkat refused")

    monkeypatch.setattr(results, "_link_unnamed", refused)
    _good_file(tmp_path / "kept.h5")
    assert list(read_results(tmp_path / "kept.h5")["runs"]) == ["bs00004"]
    assert _files(tmp_path) == ["kept.h5"]
