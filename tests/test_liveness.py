"""The heartbeat that notices a lost host (mpirunner/mpi/liveness.py): two sides in this process over loopback,
each driven by its own thread as the guard thread drives it; the start's handshake under mpiexec."""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from mpirunner.mpi.liveness import (EXIT_LOST_HOST, LIMIT_SECONDS, Liveness, candidates, configured_limit,
                                    find_root)
from tests.conftest import REPO, mpiexec_path

LIMIT, INTERVAL = 1.0, 0.1
TOKEN = b"job-0001"


class Side:
    """One rank's Liveness on a thread of its own; `lost` holds (seconds after start, ranks) of each on_lost."""

    def __init__(self, rank, root=None, peers=(), token=TOKEN):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.lost = []
        self.started = time.monotonic()
        self.liveness = Liveness(rank, self.sock, token, self._on_lost, root=root, peers=peers, limit=LIMIT,
                                 interval=INTERVAL)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.liveness.serve, args=(self.stopping, 0.05), daemon=True)
        self.thread.start()

    @property
    def address(self):
        return self.sock.getsockname()

    def _on_lost(self, ranks):
        self.lost.append((time.monotonic() - self.started, ranks))

    def silence(self):
        """Stop without a word, as a cut link or a killed host would."""
        self.stopping.set()
        self.thread.join(2)

    def close(self):
        self.silence()
        self.liveness.close()


@pytest.fixture
def pair():
    root = Side(0, peers=[1])
    other = Side(1, root=root.address)
    yield root, other
    root.close()
    other.close()


def wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def test_a_silent_rank_is_lost_after_the_limit_and_not_before(pair):
    root, other = pair
    time.sleep(2 * LIMIT)
    assert root.lost == [] and other.lost == [], "answering sides are alive"
    other.silence()
    silenced = time.monotonic()
    assert wait_for(lambda: root.lost, 3 * LIMIT), "rank 0 never noticed the silent rank"
    noticed = root.started + root.lost[0][0] - silenced
    assert LIMIT - 2 * INTERVAL <= noticed <= LIMIT + 1.0, noticed
    assert root.lost == [(root.lost[0][0], [1])], "one call, naming rank 1"
    time.sleep(LIMIT)
    assert len(root.lost) == 1, "on_lost is called once"


def test_a_rank_whose_rank_0_is_silent_notices_it(pair):
    root, other = pair
    time.sleep(LIMIT / 2)
    root.silence()
    assert wait_for(lambda: other.lost, 3 * LIMIT), "rank 1 never noticed that rank 0 went silent"
    assert other.lost[0][1] == [0]


def test_a_slow_step_holding_the_interpreter_is_no_false_alarm(pair):
    """The main thread computes in pure Python (holding the GIL between switches) and then sleeps, for 4 limits
    each: the sides, on their threads, keep answering."""
    root, other = pair
    until = time.monotonic() + 4 * LIMIT
    total = 0
    while time.monotonic() < until:
        total += sum(i * i for i in range(10_000))
    time.sleep(4 * LIMIT)
    assert total and root.lost == [] and other.lost == []


def test_a_rank_that_says_goodbye_is_not_lost(pair):
    root, other = pair
    other.liveness.goodbye()
    other.silence()
    time.sleep(3 * LIMIT)
    assert root.lost == []
    assert root.liveness.due() is None, "rank 0 expects no one any more"


def test_another_jobs_datagrams_are_no_sign_of_life():
    root = Side(0, peers=[1])
    stranger = Side(1, root=root.address, token=b"job-0002")
    try:
        assert wait_for(lambda: root.lost, 3 * LIMIT), "a datagram with another token kept rank 1 alive"
        assert wait_for(lambda: stranger.lost, 3 * LIMIT), "rank 0 answered another job's datagram"
    finally:
        root.close()
        stranger.close()


def test_find_root_tries_each_address_and_gives_up_in_time():
    root = Side(0, peers=[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = root.address[1]
        assert find_root(sock, TOKEN, 1, ["127.0.0.2", "127.0.0.1"], port, seconds=3) == ("127.0.0.1", port)
        root.silence()
        started = time.monotonic()
        assert find_root(sock, TOKEN, 1, ["127.0.0.1"], port, seconds=0.6) is None
        assert time.monotonic() - started < 1.5
    finally:
        sock.close()
        root.close()


def test_candidates_and_the_limit_setting():
    assert candidates("a", ["10.0.0.1"], "a") == ["127.0.0.1"]
    assert candidates("a", ["127.0.1.1", "10.0.0.1"], "b") == ["10.0.0.1"]
    assert configured_limit({}) == LIMIT_SECONDS
    assert configured_limit({"MPIRUNNER_LIVENESS_SECONDS": "12.5"}) == 12.5
    assert configured_limit({"MPIRUNNER_LIVENESS_SECONDS": "0"}) == 0
    assert configured_limit({"MPIRUNNER_LIVENESS_SECONDS": "soon"}) == LIMIT_SECONDS


SCRIPT = textwrap.dedent("""
    import os, signal, socket, sys, time
    from mpi4py import MPI
    from mpirunner.mpi.liveness import EXIT_LOST_HOST, start_liveness
    comm = MPI.COMM_WORLD

    def say(line):  # to a file too: MPI_Abort may end the launcher before it forwards the last line
        print(line, flush=True)
        with open(sys.argv[1], "a") as said:
            said.write(line + "\\n")

    def on_lost(ranks):
        say(f"rank {comm.rank}: lost {ranks}")
        comm.Abort(EXIT_LOST_HOST) if comm.rank == 0 else os._exit(EXIT_LOST_HOST)

    liveness = start_liveness(comm, comm.rank, [socket.gethostname()] * comm.size, on_lost, limit=2.0)
    say(f"rank {comm.rank}: started {liveness is not None}")
    comm.Barrier()
    if comm.rank == 1:
        os.kill(os.getpid(), signal.SIGSTOP)   # alive, but silent: as a host cut off would be
    started = time.monotonic()
    while time.monotonic() < started + 20:
        import select
        due = liveness.due()
        if select.select([liveness], [], [], max(0.0, due - time.monotonic()))[0]:
            liveness.readable()
        liveness.tick()
    say("not noticed")
""")


def test_the_start_under_mpiexec_and_a_stopped_rank(tmp_path):
    """Two ranks agree on the heartbeat at the start; rank 1 then stops (SIGSTOP): rank 0 notices within the
    limit (2 s) and ends the job with EXIT_LOST_HOST."""
    script = tmp_path / "live.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    said = tmp_path / "said.txt"
    result = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, str(script), str(said)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    text = f"exit {result.returncode}\n{said.read_text() if said.exists() else ''}\n{result.stdout}{result.stderr}"
    assert "rank 0: started True" in text and "rank 1: started True" in text, text[-2000:]
    assert "rank 0: lost [1]" in text and "not noticed" not in text, text[-2000:]
    assert result.returncode == EXIT_LOST_HOST, text[-2000:]
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------- the lock of a job whose rank 0's host was lost

class OneRankOf:
    """A rank of a job as lock_owner_gone sees it; bcast hands out what rank 0 read (`told`)."""

    def __init__(self, host, is_root, told=None):
        self.host, self.is_root, self.told = host, is_root, told

    def bcast(self, value):
        return value if self.is_root else self.told

    def any(self, flag):
        return bool(flag)


def test_a_lock_from_another_host_is_taken_over_when_a_rank_there_finds_its_pid_gone(tmp_path, caplog):
    import json

    from mpirunner.errors import UsageError
    from mpirunner.runfile.output import lock_owner_gone, take_lock

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    output, lock = tmp_path / "run.h5", tmp_path / "run.h5.lock"
    owner = {"host": "lost", "pid": ended.pid, "started": "2026-01-01T00:00:00+00:00"}
    lock.write_text(json.dumps(owner))
    assert lock_owner_gone(OneRankOf("here", is_root=True), output) is None, "no rank of this job is on its host"
    assert lock_owner_gone(OneRankOf("lost", is_root=False, told=owner), output) == owner, "a rank there sees it gone"
    alive = {**owner, "pid": os.getpid()}
    assert lock_owner_gone(OneRankOf("lost", is_root=False, told=alive), output) is None
    with pytest.raises(UsageError, match="another job"):
        take_lock(output, "here", gone={**owner, "pid": 1})  # another record: the lock is not the one seen gone
    with caplog.at_level("WARNING", logger="mpirunner"):
        assert take_lock(output, "here", gone=owner) == lock
    assert json.loads(lock.read_text())["host"] == "here"
    assert "taking over" in caplog.text and "seen by a rank of this job there" in caplog.text


# ---------------------------------------------------------------- the runner: the guard drives the heartbeat

def _rank_process(marker, rank):
    """Pid of the runner process of `rank` whose command line holds `marker` (its --output), or None."""
    for entry in os.listdir("/proc"):
        try:
            command = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace") if entry.isdigit() else ""
            if marker not in command:
                continue
            environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ:
            return int(entry)
    return None


def test_a_rank_that_stops_answering_ends_the_job_with_one_line(tmp_path):
    """Rank 1 is stopped (SIGSTOP: alive for its pidfd, silent for the heartbeat) during the second size of a
    sweep, with the limit at 3 s: rank 0 names the host and rank, keeps the first size, exit status 6."""
    output = tmp_path / "sweep.h5"
    command = [mpiexec_path(), "-n", "2", sys.executable, "-m", "mpirunner", "--model", "resnet18", "--image-size",
               "32", "--no-progress", "--warmup-iterations", "1", "--min-iterations", "1", "--iterations", "4",
               "--batch-size", "1,2", "--output", str(output)]
    env = {**os.environ, "MPIRUNNER_LIVENESS_SECONDS": "3", "MPIRUNNER_FAULT": "sleep:run=2:seconds=2"}
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        job = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=stderr)
    stopped = None
    try:
        deadline = time.monotonic() + 240
        while "throughput:" not in out.read_text() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped = _rank_process(str(output), 1)
        assert stopped is not None and job.poll() is None, err.read_text()[-2000:]
        os.kill(stopped, signal.SIGSTOP)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
    lines = [line for line in err.read_text().splitlines() if line.startswith("mpirunner: ")]
    assert job.returncode == EXIT_LOST_HOST, err.read_text()[-3000:]
    assert len(lines) == 1, err.read_text()[-3000:]
    assert f"lost host {socket.gethostname()} (rank 1): no sign of life for 3 s during run bs00002" in lines[0]
    assert "kept the finished run(s) bs00001" in lines[0] and "discarded the unfinished run bs00002" in lines[0]


def test_a_step_longer_than_the_limit_does_not_end_a_healthy_job(tmp_path):
    """One step of rank 1 takes 8 s with the limit at 3 s: the guard thread answers meanwhile; the job ends 0."""
    result = subprocess.run([mpiexec_path(), "-n", "2", sys.executable, "-m", "mpirunner", "--model", "resnet18",
                             "--image-size", "32", "--no-progress", "--warmup-iterations", "1", "--min-iterations",
                             "1", "--iterations", "4", "--batch-size", "1", "--output", str(tmp_path / "long.h5")],
                            cwd=REPO, env={**os.environ, "MPIRUNNER_LIVENESS_SECONDS": "3",
                                           "MPIRUNNER_FAULT": "sleep:rank=1:step=2:seconds=8"},
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lost host" not in result.stderr and "no sign of life" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "long.h5").exists()


def test_bound_finalize_ends_a_process_that_lingers():
    """After the guard stops, the alarm ends a process still there FINALIZE_SECONDS later (here 1 s)."""
    started = time.monotonic()
    program = "import time\nfrom mpirunner.mpi.liveness import bound_finalize\nbound_finalize(1)\ntime.sleep(30)"
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=60)
    assert result.returncode == -signal.SIGALRM and time.monotonic() - started < 20
