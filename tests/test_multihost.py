"""Jobs across several hosts: namespace hosts on this machine (tests/hosts.py), each with its own network
stack, hostname, IPC namespace and /dev/shm, reached through MPICH's hydra and Open MPI's mpirun.

The launcher runs on host0, as it would on a login or first node. Ranks reach each other only over the
hosts' veths (checked with their byte counters) and share no memory across hosts (checked on the page
frames the ranks map). A host that drops off (its link cut, or every process on it killed) must end the
job within DROP_OFF_SECONDS with the default settings: a cut link in one line of the runner's own naming the
host (its heartbeat, mpirunner/mpi/liveness.py), a killed host through MPICH's mpiexec, which ends every rank
at once (docs/failure-behaviour.md).

Run only these: python -m pytest -m multihost tests
"""
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from mpirunner.mpi.liveness import EXIT_LOST_HOST
from mpirunner.runfile.plain import read_results
from tests.cluster import openmpi  # noqa: F401  (the session fixture)
from tests.conftest import REPO, TINY, mpiexec_path
from tests.hosts import hosts  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.multihost

GATHERED_BYTES = 32 << 20         # each rank's part of the bare gather below
DROP_OFF_SECONDS = 60             # the bound a lost host's job must end within (issue 25)
ROW = "rank {rank} host {host} local {local} of {local_size}"
GATHER = f"""
import socket, time
import numpy as np
from mpi4py import MPI
world = MPI.COMM_WORLD
local = world.Split_type(MPI.COMM_TYPE_SHARED)
part = np.full({GATHERED_BYTES} // 8, world.rank, dtype=np.float64)
whole = np.empty((world.size, part.size)) if world.rank == 0 else None
world.Gather(part, whole, root=0)
assert world.rank or all((whole[rank] == rank).all() for rank in range(world.size))
time.sleep(1.5)  # the segments stay mapped while the test looks at them
print({ROW!r}.format(rank=world.rank, host=socket.gethostname(), local=local.rank, local_size=local.size), flush=True)
"""


def clean_env(**extra):
    """This environment without any launcher's or runner's variables (a test may run inside a job)."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OMPI_", "PMI", "PRTE_", "SLURM_", "MPIRUNNER_", "HYDRA_", "MPI4PY_", "OPAL_"))}
    env.update(extra)
    return env


def hydra(hosts, spec, argv, on="host0"):  # noqa: F811
    """MPICH's `mpiexec -hosts SPEC` through the hosts' ssh stand-in, run on host `on`."""
    ranks = sum(int(part.split(":")[1]) for part in spec.split(","))
    return hosts.command(on, [mpiexec_path(), "-n", ranks, "-hosts", spec, "-launcher", "ssh",
                                   "-launcher-exec", hosts.rsh, *argv])


def open_mpi(hosts, openmpi, spec, argv):  # noqa: F811
    """Open MPI's `mpirun --host SPEC` with the hosts' ssh stand-in as its rsh agent, run on host0."""
    ranks = sum(int(part.split(":")[1]) for part in spec.split(","))
    return hosts.command("host0", [openmpi.mpirun, "-n", ranks, "--host", spec, "--bind-to", "none",
                                   "--mca", "plm_rsh_agent", hosts.rsh, *openmpi.site_args(ranks), *argv])


def launch(request, hosts, launcher, spec, argv):  # noqa: F811
    """(command, environment) for `launcher` ("hydra" or "openmpi") across the hosts in SPEC."""
    if launcher == "hydra":
        return hydra(hosts, spec, argv), clean_env()
    ompi = request.getfixturevalue("openmpi")
    return open_mpi(hosts, ompi, spec, argv), {**clean_env(), **ompi.env(load=True)}


def runner(*args):
    return [sys.executable, "-m", "mpirunner", *TINY, "--min-iterations", "1", *map(str, args)]


def watch_shared_memory(hosts, process, names):  # noqa: F811
    """Page frames of shared memory each host's processes map, sampled until `process` ends."""
    seen = {name: {} for name in names}
    while process.poll() is None:
        for name in names:
            for frame, pids in hosts.shared_memory(name).items():
                seen[name].setdefault(frame, set()).update(pids)
        time.sleep(0.1)
    return seen


# ---------------------------------------------------------------- the network and shared memory

@pytest.mark.parametrize("launcher", ["hydra", "openmpi"])
def test_ranks_reach_other_hosts_only_over_the_network(request, hosts, launcher, tmp_path):  # noqa: F811
    """2 hosts x 2 ranks gather 32 MiB a rank on rank 0: the other host's link carries at least its two parts,
    MPI's shared-memory split groups the ranks by host, and no page of shared memory is mapped on both hosts
    (while each host's two ranks do share some: the check sees sharing where there is some)."""
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    command, env = launch(request, hosts, launcher, "host0:2,host1:2", [sys.executable, str(script)])
    before = {name: hosts.link_bytes(name) for name in ("host0", "host1")}
    with open(tmp_path / "out", "w+") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            shared = watch_shared_memory(hosts, process, ("host0", "host1"))
        finally:
            process.kill() if process.poll() is None else None
        out.seek(0)
        text = out.read()
    assert process.returncode == 0, text[-3000:]
    rows = sorted(line for line in text.splitlines() if line.startswith("rank "))
    assert rows == [ROW.format(rank=0, host="host0", local=0, local_size=2),
                    ROW.format(rank=1, host="host0", local=1, local_size=2),
                    ROW.format(rank=2, host="host1", local=0, local_size=2),
                    ROW.format(rank=3, host="host1", local=1, local_size=2)], text[-3000:]
    (received0, _), (_, sent1) = (np.subtract(hosts.link_bytes(name), before[name]) for name in ("host0", "host1"))
    assert sent1 >= 2 * GATHERED_BYTES and received0 >= 2 * GATHERED_BYTES, (sent1, received0)
    across = set(shared["host0"]) & set(shared["host1"])
    assert not across, f"{len(across)} page(s) of shared memory mapped on both hosts"
    for name in ("host0", "host1"):
        assert any(len(pids) > 1 for pids in shared[name].values()), f"{name}: its ranks share no memory"


# ---------------------------------------------------------------- what a run across hosts writes

@pytest.fixture(scope="module")
def two_by_two(hosts, tmp_path_factory):  # noqa: F811
    """One 2 hosts x 2 ranks run under hydra, rank 3 (host1's second) slowed by 0.1 s a step, --measure-peak."""
    output = tmp_path_factory.mktemp("two_by_two") / "hosts.h5"
    result = subprocess.run(hydra(hosts, "host0:2,host1:2", runner("--iterations", 10, "--batch-size", 1,
                                                                     "--measure-peak", "--output", output)),
                            cwd=REPO, env=clean_env(MPIRUNNER_FAULT="sleep:rank=3:seconds=0.1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return output, result


def test_ranks_carry_the_real_host_names_and_local_ranks(two_by_two):
    output, _ = two_by_two
    data = read_results(output)
    assert [(row["host"], row["local_rank"]) for row in data["ranks"]] == [
        ("host0", 0), ("host0", 1), ("host1", 0), ("host1", 1)]
    assert list(data["attrs"]["hosts"]) == ["host0", "host1"]
    assert data["attrs"]["launcher"] == "mpiexec-hydra" and data["attrs"]["world_size"] == 4


def test_placement_is_planned_per_host(two_by_two):
    """Each host places its own two ranks on its own CPUs (both hosts see this machine's CPUs)."""
    output, result = two_by_two
    rows = read_results(output)["ranks"]
    for host in ("host0", "host1"):
        cpus = [row["cpus"] for row in rows if row["host"] == host]
        assert len(cpus) == 2 and len(set(cpus)) == 2, rows
    assert [row["cpus"] for row in rows[:2]] == [row["cpus"] for row in rows[2:]], "the same plan on each host"
    assert re.search(r"rank 2 on host1: node \d+, cpus", result.stderr), result.stderr[-2000:]


def test_per_host_sums_and_utilisation(two_by_two):
    """utilization_per_host is each host's achieved FLOP/s over its own ranks' peaks, in host order."""
    output, _ = two_by_two
    data = read_results(output)
    attrs = data["runs"]["bs00001"]["attrs"]
    assert list(attrs["utilization_hosts"]) == ["host0", "host1"]
    starts, seconds = data["runs"]["bs00001"]["step_start"], data["runs"]["bs00001"]["step_seconds"]
    rates = attrs["samples_per_step"] * seconds.shape[1] / (np.max(starts + seconds, axis=1) - np.min(starts, axis=1))
    peaks = np.array([row["peak_flops"] for row in data["ranks"]])
    expected = [rates[ranks].sum() * attrs["flops_per_sample"] / peaks[ranks].sum() for ranks in ([0, 1], [2, 3])]
    assert np.allclose(np.atleast_1d(attrs["utilization_per_host"]), expected, rtol=1e-6), expected
    assert expected[1] < expected[0], "host1 holds the slowed rank"


def test_straggler_rule_names_the_host_of_the_slowed_rank(two_by_two):
    output, _ = two_by_two
    reasons = list(read_results(output)["runs"]["bs00001"]["attrs"]["validity_reason"])
    stragglers = [reason for reason in reasons if reason.startswith("straggler:")]
    assert len(stragglers) == 1 and stragglers[0].startswith("straggler: rank 3 on host1 "), reasons


def test_resume_across_the_same_hosts(two_by_two, hosts, tmp_path):  # noqa: F811
    output = tmp_path / "resumed.h5"
    shutil.copy(two_by_two[0], output)
    first = read_results(output)["runs"]["bs00001"]
    result = subprocess.run(hydra(hosts, "host0:2,host1:2", runner("--iterations", 10, "--batch-size", "1,2",
                                                                     "--measure-peak", "--resume", "--output",
                                                                     output)),
                            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert sorted(data["runs"]) == ["bs00001", "bs00002"]
    assert data["runs"]["bs00001"]["step_seconds"].tobytes() == first["step_seconds"].tobytes(), "size 1 kept"
    assert [row["host"] for row in data["ranks"]] == ["host0", "host0", "host1", "host1"]


def test_two_by_two_under_open_mpi(hosts, openmpi, tmp_path):  # noqa: F811
    output = tmp_path / "ompi.h5"
    command = open_mpi(hosts, openmpi, "host0:2,host1:2", runner("--iterations", 3, "--batch-size", 1,
                                                                  "--output", output))
    result = subprocess.run(command, cwd=REPO, env={**clean_env(), **openmpi.env(load=True)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert [(row["host"], row["local_rank"]) for row in data["ranks"]] == [
        ("host0", 0), ("host0", 1), ("host1", 0), ("host1", 1)]
    assert data["attrs"]["launcher"] == "mpirun-prrte" and "Open MPI" in data["attrs"]["mpi_version"]


def test_job_script_with_a_host_list_on_three_uneven_hosts(hosts, tmp_path):  # noqa: F811
    """jobs/workstation.sh with MPIEXEC_ARGS naming three hosts (2+1+1): one world, local ranks per host."""
    config, output = tmp_path / "tiny.yaml", tmp_path / "out" / "three.h5"
    config.write_text("model: resnet18\ndevice: cpu\nimage_size: 32\nwarmup_iterations: 1\nbatch_size: 1\n"
                      "iterations: 3\nmin_iterations: 1\n")
    env = clean_env(PYTHON=sys.executable, CONFIG=str(config), OUTPUT=str(output), RANKS="4",
                    MPIEXEC=mpiexec_path(), TIMEOUT_SECONDS="200",
                    MPIEXEC_ARGS=f"-hosts host0:2,host1:1,host2:1 -launcher ssh -launcher-exec {hosts.rsh}")
    result = subprocess.run(hosts.command("host0", ["bash", REPO / "jobs" / "workstation.sh"]), cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert [(row["host"], row["local_rank"]) for row in data["ranks"]] == [
        ("host0", 0), ("host0", 1), ("host1", 0), ("host2", 0)]
    assert list(data["attrs"]["hosts"]) == ["host0", "host1", "host2"]
    assert len(np.atleast_1d(data["runs"]["bs00001"]["step_seconds"])) == 4


# ---------------------------------------------------------------- a host that drops off

SWEEP = ("--iterations", 4, "--batch-size", "1,2,4")
SLOW_SECOND_SIZE = "sleep:run=2:seconds=2"   # every rank's steps of size 2 take 2 s more: the loss lands in them


@dataclass
class Loss:
    """What a job did after one of its hosts dropped off (`lose_a_host`)."""

    returncode: Optional[int]     # None: still running at the bound
    ended_after: Optional[float]  # seconds from the loss to the job's end
    left: dict                    # host -> [(pid, command, busy share)] of what was left (_left_on)
    stdout: str
    stderr: str
    kept: Path                    # a copy of the output taken when the first size was in it
    output: Path
    bound: float

    def summary(self):
        if self.returncode is None:
            ended = f"still running {self.bound:.0f} s after the loss"
        else:
            ended = f"ended {self.ended_after:.1f} s after the loss, exit {self.returncode}"
        return f"{ended}; left behind: {self.left}\n--- stderr\n{self.stderr[-2000:]}"


def _busy_seconds(pid):
    """(on a CPU, runnable and waiting for one) seconds of the process so far (/proc/PID/schedstat), or None."""
    try:
        running, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return (int(running) + int(waiting)) / 1e9


def _left_on(hosts, names):  # noqa: F811
    """{host: [(pid, command, busy share)]} of the processes still on `names`; the busy share is the part of
    one second the process was running or runnable (1.0: spinning, whatever the machine's other load)."""
    pids = {name: hosts.processes(name) for name in names}
    before = {pid: _busy_seconds(pid) for found in pids.values() for pid in found}
    time.sleep(1.0)
    left = {}
    for name, found in pids.items():
        for pid in found:
            after = _busy_seconds(pid)
            if after is None or before[pid] is None:
                continue
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:60]
            left.setdefault(name, []).append((pid, command, round(after - before[pid], 2)))
    return left


def lose_a_host(hosts, how, output, env=None, lost="host1", bound=DROP_OFF_SECONDS, program=None):  # noqa: F811
    """A 1+1 rank sweep under hydra, launched from host0 (rank 0) with rank 1 on host1; once its first size is in
    the file, host `lost` drops off (how: "link cut": its eth0 goes down; "host killed": every process on it
    gets SIGKILL). Watches the job for up to `bound` seconds after that, then ends whatever is left of it (the
    test must not leave it behind)."""
    first, second = "host0", "host1"
    command = hydra(hosts, f"{first}:1,{second}:1", program or runner(*SWEEP, "--output", output))
    kept = output.with_name(output.stem + ".first-size.h5")
    stdout, stderr = output.with_suffix(".out"), output.with_suffix(".err")
    with open(stdout, "w") as out, open(stderr, "w") as err:
        job = subprocess.Popen(command, cwd=REPO, env=clean_env(MPIRUNNER_FAULT=SLOW_SECOND_SIZE, **(env or {})),
                               stdout=out, stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "throughput:" not in stdout.read_text() or (program is None and "bs00001" not in _runs_in(output)):
            if job.poll() is not None or time.monotonic() > deadline:  # not what the test is about: an error
                raise RuntimeError(f"the sweep's first size did not finish:\n{stdout.read_text()[-2000:]}\n"
                                   f"{stderr.read_text()[-3000:]}")
            time.sleep(0.2)
        if output.exists():
            shutil.copy(output, kept)  # whole: the runner replaces the file by a rename
        if how == "link cut":
            hosts.cut(lost)
        else:
            hosts.kill(lost)
        lost_at = time.monotonic()
        while job.poll() is None and time.monotonic() < lost_at + bound:
            time.sleep(0.2)
        ended_after = time.monotonic() - lost_at if job.poll() is not None else None
        while time.monotonic() < lost_at + bound and any(hosts.processes(name) for name in (first, second)):
            time.sleep(0.5)
        left = _left_on(hosts, (first, second))
    finally:
        for name in (first, second):
            hosts.kill(name)
        if job.poll() is None:
            job.kill()
        job.wait(timeout=30)
        hosts.reconnect(lost)
    return Loss(job.returncode if ended_after is not None else None, ended_after, left, stdout.read_text(),
                stderr.read_text(), kept, output, bound)


def _runs_in(path):
    try:
        return read_results(path)["runs"]
    except (OSError, KeyError):
        return {}


def _arrays(run):
    return {key: value.tobytes() for key, value in run.items() if key != "attrs"}


@pytest.mark.parametrize("how", ["link cut", "host killed"])
def test_a_host_that_drops_off_ends_the_job_in_one_line(hosts, how, tmp_path):  # noqa: F811
    """The job ends within DROP_OFF_SECONDS of the loss with the default settings; nothing of the job is left on
    any host; the finished size is kept byte for byte; and --resume on the same hosts completes the sweep. A cut
    link: one runner line naming the lost host, exit status 6. A killed host: MPICH's mpiexec ends every rank,
    rank 0 included, with SIGKILL as soon as its proxy there is gone, before the runner can say anything: hydra's
    own lines and exit status 255 are what the user sees (docs/failure-behaviour.md)."""
    output = tmp_path / "sweep.h5"
    loss = lose_a_host(hosts, how, output)
    assert loss.ended_after is not None and loss.ended_after <= DROP_OFF_SECONDS, loss.summary()
    runner_lines = [line for line in loss.stderr.splitlines() if line.startswith("mpirunner: ")]
    if how == "link cut":
        assert loss.returncode == EXIT_LOST_HOST, loss.summary()
        assert len(runner_lines) == 1 and re.search(r"\blost host host1 \(rank 1\)", runner_lines[0]), loss.summary()
        assert "kept the finished run(s) bs00001" in runner_lines[0], loss.summary()
    else:
        assert loss.returncode == 255 and not runner_lines, loss.summary()
        assert "assert (!closed) failed" in loss.stderr, loss.summary()
    assert not loss.left, loss.summary()
    first = _arrays(read_results(loss.kept)["runs"]["bs00001"])
    assert _arrays(read_results(output)["runs"]["bs00001"]) == first, "the finished size changed"
    result = subprocess.run(hydra(hosts, "host0:1,host1:1", runner(*SWEEP, "--resume", "--output", output)),
                            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert sorted(data["runs"]) == ["bs00001", "bs00002", "bs00004"]
    assert _arrays(data["runs"]["bs00001"]) == first


def test_resume_from_another_host_after_rank_0s_host_is_lost(hosts, tmp_path):  # noqa: F811
    """Rank 0's host (the launcher's, holding the output's lock) is killed after the first size; the sweep is
    resumed from the other host, with rank 0 there: it completes, and the finished size is kept byte for byte."""
    output = tmp_path / "sweep.h5"
    loss = lose_a_host(hosts, "host killed", output, lost="host0")
    assert not loss.left, loss.summary()
    result = subprocess.run(hydra(hosts, "host1:1,host0:1", runner(*SWEEP, "--resume", "--output", output),
                                  on="host1"), cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = read_results(output)
    assert sorted(data["runs"]) == ["bs00001", "bs00002", "bs00004"]
    assert _arrays(data["runs"]["bs00001"]) == _arrays(read_results(loss.kept)["runs"]["bs00001"])
    assert re.search(r"rank 0 on host1: ", result.stderr), result.stderr[-3000:]
    assert re.search(r"taking over the lock .*host host0.*seen by a rank of this job there", result.stderr), \
        result.stderr[-3000:]
    assert list(data["attrs"]["resumed_hosts"]) == ["host0,host1"], "first job's /ranks kept; resumption noted"
