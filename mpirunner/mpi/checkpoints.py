"""Checkpoints for --timeout: each rank counts the points every rank must reach in a run (a collective) and tells
rank 0 (a non-blocking message on the guard's communicator), so that at the deadline rank 0 names the ranks behind."""
import threading

import numpy as np


class Checkpoints:
    """comm: the guard's duplicate of the world's communicator (None in a world of one rank)."""

    def __init__(self, world, comm, timeout):
        self.world, self.comm = world, comm
        self.sending = comm is not None and timeout  # reports to rank 0 only serve --timeout
        self.run_index = 0          # 1-based index of the current run: the messages' tag
        self._progress = [0] * world.size
        self._sends = []            # non-root: (request, buffer) of messages to rank 0
        self._lock = threading.RLock()

    def run_started(self):
        with self._lock:
            self.run_index += 1
            self._progress = [0] * self.world.size

    def reached(self):
        with self._lock:
            self._progress[self.world.rank] += 1
            if self.sending and not self.world.is_root:
                buffer = np.array([self._progress[self.world.rank]], dtype=np.int64)
                self._sends.append((self.comm.Isend(buffer, dest=0, tag=self.run_index), buffer))

    def run_finished(self):
        with self._lock:
            for request, _buffer in self._sends:
                request.Wait()  # one small message each: sent eagerly, done at once
            self._sends = []
            if self.sending and self.world.is_root:
                self._receive(any_tag=True)  # drop this run's reports: rank 0 needs them no more

    def _receive(self, any_tag=False):
        from mpi4py import MPI

        tag = MPI.ANY_TAG if any_tag else self.run_index
        status, buffer = MPI.Status(), np.zeros(1, dtype=np.int64)
        while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
            source = status.Get_source()
            self.comm.Recv(buffer, source=source, tag=status.Get_tag())
            if status.Get_tag() == self.run_index:
                self._progress[source] = max(self._progress[source], int(buffer[0]))

    def behind(self, hosts):
        """Rank 0: the ranks (with hosts) that are behind the others in the current run."""
        with self._lock:
            if self.comm is not None:
                self._receive()
            hosts = hosts or [self.world.host]
            furthest = max(self._progress)
            behind = [rank for rank, done in enumerate(self._progress) if done < furthest]
        names = ", ".join(f"{rank} ({hosts[rank]})" for rank in behind or range(self.world.size))
        return names if behind else f"none behind the others; every rank is still in the same stage: {names}"
