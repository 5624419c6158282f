"""The guard's watch on the other ranks of its host (peers.py): a rank that ends mid-job ends the job."""
import os
import socket
import subprocess
import sys
import time

import pytest

from mpirunner.mpi import guard as guard_module
from mpirunner.mpi.guard import EXIT_FAILED, Guard
from mpirunner.mpi.peers import _start_ticks, open_peer_watches, process_identity

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds need Linux 5.3+")


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _identity(process):
    return socket.gethostname(), process.pid, _start_ticks(process.pid)


def test_only_live_processes_of_this_host_with_their_own_start_time_are_watched():
    alive, ended = _sleeper(), _sleeper()
    ended.kill()
    ended.wait()
    try:
        host, pid, ticks = _identity(alive)
        identities = [process_identity(), (host, pid, ticks), ("another-host", pid, ticks),
                      (host, pid, ticks + 1),  # the pid names another process (another PID namespace)
                      (host, ended.pid, ticks),  # no such process any more
                      (host, pid, None)]  # no /proc on that rank's side
        watches = open_peer_watches(identities, rank=0)
        assert sorted(watches.values()) == [1]
        for descriptor in watches:
            os.close(descriptor)
        assert open_peer_watches(identities[:1], rank=0) == {}
    finally:
        alive.kill()
        alive.wait()


class _TwoRankWorld:
    """Rank 0 of a two-rank world whose rank 1 is `peer` (a process on this host)."""

    rank, size, is_root, host = 0, 2, True, "node-a"

    def __init__(self, peer):
        class _Comm:
            def Dup(self):
                return self

            def allgather(self, value):
                return [value, ("node-b", _identity(peer))]

        self.comm = _Comm()


def _guard_of(peer, ended):
    guard = Guard(_TwoRankWorld(peer))

    def record(code):
        ended.append((code, time.monotonic()))
        guard._stopping.set()  # stand in for the end of the process

    guard.ending.now = record
    return guard.start()


def test_a_peer_that_ends_mid_run_ends_the_job_after_the_grace(capsys, monkeypatch):
    monkeypatch.setattr(guard_module, "PEER_GRACE_SECONDS", 0.3)
    peer, ended = _sleeper(), []
    guard = _guard_of(peer, ended)
    try:
        guard.ending.kept, guard.ending.path = ["bs00001"], "out.h5"
        guard.run_started("bs00002")
        peer.kill()
        died = time.monotonic()
        peer.wait()
        while not ended and time.monotonic() - died < 10:
            time.sleep(0.02)
    finally:
        guard.stop()
    assert [code for code, _ in ended] == [EXIT_FAILED]
    assert ended[0][1] - died >= 0.3  # the grace, in case the job was ending
    message = capsys.readouterr().err
    assert ("mpirunner: rank 1 (node-b) ended during run bs00002 while the job still needed it; ending the job; "
            "kept the finished run(s) bs00001 in out.h5; discarded the unfinished run bs00002") in message


def test_a_peer_that_ends_as_the_job_ends_is_not_a_failure(monkeypatch):
    monkeypatch.setattr(guard_module, "PEER_GRACE_SECONDS", 1.0)
    peer, ended = _sleeper(), []
    guard = _guard_of(peer, ended)
    peer.kill()
    peer.wait()
    time.sleep(0.2)  # seen, within the grace
    guard.stop()  # this rank is done too
    time.sleep(1.2)
    assert ended == []
    assert guard._peers == {}  # the pidfds are closed
