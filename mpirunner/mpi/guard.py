"""Keep a job from hanging or losing results (docs/failure-behaviour.md): one guard per rank decides what to do when
its thread (watchdog.py) wakes, even while the main thread is blocked in MPI; ending.py ends the job."""
import logging
import os
import sys
import threading
import time

from mpirunner.mpi.checkpoints import Checkpoints
from mpirunner.mpi.ending import EXIT_FAILED, EXIT_TIMEOUT, JobEnd
from mpirunner.mpi.liveness import EXIT_LOST_HOST, bound_finalize, start_liveness
from mpirunner.mpi.peers import open_peer_watches, process_identity
from mpirunner.mpi.signals import signal_name
from mpirunner.mpi.watchdog import Watchdog

log = logging.getLogger("mpirunner")

BACKSTOP_SECONDS = 5.0   # other ranks act this long after rank 0 should have, for a timeout
SIGNAL_GRACE_SECONDS = 3.0
PEER_GRACE_SECONDS = 2.0  # a rank that ended this long before this rank stopped its guard was still needed


class Guard:
    """The guard of one rank; callers use its `ending` (writing, after_failure) and `checkpoints` (reached)."""

    def __init__(self, world, timeout=None):
        self.world = world
        self.timeout = timeout
        self.run_name = None        # the run in progress (None: between runs)
        self.ending = JobEnd(world)
        self.checkpoints = Checkpoints(world, None, timeout)
        self._deadline = None
        self._state = threading.RLock()
        self._stopping = threading.Event()
        self._hosts = None
        self._peers = {}            # pidfd -> rank, for the other ranks of this host (peers.py)
        self._liveness = None       # the heartbeat with rank 0 (liveness.py), or None
        self._watchdog = Watchdog(self._due, self._on_signal, self._on_peer_ended, self._on_timeout, self._stopping)

    def start(self):
        if self.world.size > 1:
            comm = self.world.comm.Dup()
            self.checkpoints = Checkpoints(self.world, comm, self.timeout)
            gathered = comm.allgather((self.world.host, process_identity()))
            self._hosts = [host for host, _ in gathered]
            self._peers = open_peer_watches([identity for _, identity in gathered], self.world.rank)
            self._liveness = start_liveness(comm, self.world.rank, self._hosts, self._on_lost)
        self._watchdog.start(self._peers, self._liveness)
        return self

    def stop(self):
        from mpirunner.runfile.output import release_lock

        release_lock()  # the job is over on this rank: the output is free for the next job
        if self._liveness is not None:
            self._liveness.goodbye()  # rank 0 no longer expects this rank
        self._stopping.set()
        self._watchdog.stop()
        for descriptor in self._peers:
            os.close(descriptor)
        self._peers = {}
        if self._liveness is not None:
            self._liveness.close()
            self._liveness = None
            bound_finalize()  # MPI_Finalize at exit cannot wait for a host lost now

    def run_started(self, name):
        with self._state:
            self.checkpoints.run_started()
            self.run_name = name
            self._deadline = time.monotonic() + self.timeout if self.timeout else None
        self._watchdog.wake()

    def at_checkpoint(self, collective):
        """`collective`, preceded by a checkpoint (for the barrier and the stop-rule reduction of bench)."""

        def checked(*args):
            self.checkpoints.reached()
            return collective(*args)

        return checked

    def run_finished(self):
        with self._state:
            self._deadline = None
            self.run_name = None
            self.checkpoints.run_finished()

    def _due(self):
        with self._state:
            deadline = self._deadline
        return None if deadline is None else deadline + (0.0 if self.world.is_root else BACKSTOP_SECONDS)

    def _end(self, code, root_event, other_line, *args, during=True, consequence=""):
        """Rank 0 ends the job saying root_event; another rank, where rank 0 did not, logs other_line and ends it."""
        if self.world.is_root:
            self.ending.from_root(root_event, code, lambda: self.run_name if during else None, consequence)
            return
        log.error(other_line, *args)
        self.ending.now(code)

    def _on_timeout(self):
        with self._state:
            due = self._due()
            if due is None or time.monotonic() < due:
                return  # the run finished meanwhile, or a new one began
            name = self.run_name
            missing = self.checkpoints.behind(self._hosts) if self.world.is_root else ""
        self._end(EXIT_TIMEOUT,
                  f"run {name} exceeded --timeout {self.timeout:g} s; rank(s) that did not report: {missing}",
                  "run %s exceeded --timeout %g s (+%g s backstop) and rank 0 did not end the job; aborting it",
                  name, self.timeout, BACKSTOP_SECONDS, during=False, consequence="; aborting the job")

    def _on_signal(self, signum):
        name, code = signal_name(signum), 128 + signum
        if not self.world.is_root and self._stopping.wait(SIGNAL_GRACE_SECONDS):
            return
        self._end(code, f"stopped by {name}", "stopped by %s; rank 0 did not end the job, so this rank does", name)

    def _on_peer_ended(self, other):
        """A rank of this host ended: unless this rank stops its guard within the grace (the job's end), end the job."""
        grace = PEER_GRACE_SECONDS if self.world.is_root else PEER_GRACE_SECONDS + BACKSTOP_SECONDS
        if self._stopping.wait(grace):
            return
        host = self._hosts[other] if self._hosts else "?"
        self._end(EXIT_FAILED, f"rank {other} ({host}) ended",
                  "rank %d (%s) ended while the job still needed it and rank 0 did not end the job; ending it",
                  other, host, consequence=" while the job still needed it; ending the job")

    def _on_lost(self, ranks):
        """The heartbeat found `ranks` silent for its limit: rank 0 names their hosts and ends the job; a rank whose
        rank 0 is silent is cut off from the job (its MPI_Abort would wait too): it ends itself."""
        seconds = f"{getattr(self._liveness, 'limit', 0):g}"
        if self.world.is_root:
            by_host = {}
            for rank in ranks:
                by_host.setdefault(self._hosts[rank], []).append(str(rank))
            lost = "; ".join(f"host {host} (rank{'s' if len(found) > 1 else ''} {', '.join(found)})"
                             for host, found in by_host.items())
            self.ending.from_root(f"lost {lost}: no sign of life for {seconds} s", EXIT_LOST_HOST,
                                  lambda: self.run_name, consequence="; ending the job")
            return
        log.error("no sign of life from rank 0 (host %s) for %s s: this host is cut off from the job, or rank 0's "
                  "host is down; ending this rank", self._hosts[0], seconds)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_LOST_HOST)


def start_guard(world, config):
    """Start this rank's guard (collective: every rank calls it once, right after the world is set up)."""
    return Guard(world, timeout=config.timeout).start()
