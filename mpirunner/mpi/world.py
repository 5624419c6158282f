"""The MPI world: rank, size, local rank/size on this host (an MPI shared-memory split, never a launcher's
variables), host name, gather, abort and agree (the one way ranks decide together); a singleton without a launcher."""
import os
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass

import numpy as np

from mpirunner.errors import UsageError
from mpirunner.mpi.launcher import start_mpi

LAST_LINES_SECONDS = 0.25  # before MPI_Abort: time for the launcher to read this rank's last flushed lines
host_name = socket.gethostname


class Failed(Exception):
    """Raised on every rank by World.agree when some rank failed in a way its caller keeps (keep=, failed=; a batch
    size out of memory). `reason`: this rank's own line, None where it did not fail."""

    def __init__(self, reason=None):
        super().__init__(reason or "")
        self.reason = reason


@dataclass
class World:
    comm: object
    rank: int
    size: int
    local_rank: int
    local_size: int
    host: str

    @property
    def is_root(self):
        return self.rank == 0

    def barrier(self):
        self.comm.Barrier()

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def allgather(self, value):
        return self.comm.allgather(value)

    def gather(self, value):
        return self.comm.gather(value, root=0)

    def any(self, flag):
        return self.max(bool(flag))

    def max(self, value):
        from mpi4py import MPI

        return self.comm.allreduce(value, op=MPI.MAX)

    def agree(self, check=None, *, keep=None, failed=None, value=None):
        """The one consensus primitive: check() on every rank (None: nothing to run), then one small allreduce. On
        every rank alike, a UsageError on some rank is raised (another rank's with " (seen by rank R on HOST)");
        else a failure on some rank (an error of check() that keep(error) made a line, or `failed`) raises Failed;
        else check()'s result, or with `value` (an int) the largest any rank passed. Needs rank, host, max and
        allgather of self only."""
        result, problem = None, None
        if check is not None:
            try:
                result = check()
            except UsageError as error:
                problem = error
            except Exception as error:  # noqa: BLE001 - only what keep() recognises is agreed; others go on up
                failed = keep(error) if keep is not None else None
                if failed is None:
                    raise
        # tuples compare in order: a UsageError outranks a failure, a failure the value (so it is exact then)
        any_problem, any_failed, agreed = self.max((int(problem is not None), int(failed is not None),
                                                    int(value or 0)))
        if any_problem:
            reports = self.allgather(None if problem is None else (self.host, str(problem)))
            first = next(rank for rank, report in enumerate(reports) if report is not None)
            if first == self.rank:
                raise problem
            host, message = reports[first]
            raise UsageError(f"{message} (seen by rank {first} on {host})")
        if any_failed:
            raise Failed(failed)
        return agreed if value is not None else result

    def gather_rows(self, array):
        """Gatherv of one float64 row per rank (rows may differ in length) -> list of rows on rank 0, else None.
        The buffer interface: 64 ranks x 10,000 steps cost one message per rank, not pickling."""
        row = np.ascontiguousarray(array, dtype=np.float64).ravel()
        counts = np.zeros(self.size, dtype=np.int64) if self.is_root else None
        self.comm.Gather(np.array([row.size], dtype=np.int64), counts, root=0)
        if not self.is_root:
            self.comm.Gatherv(row, None, root=0)
            return None
        flat = np.empty(int(counts.sum()), dtype=np.float64)
        self.comm.Gatherv(row, (flat, counts), root=0)
        return np.split(flat, np.cumsum(counts)[:-1])

    def abort(self, code=1, pause=LAST_LINES_SECONDS):
        """End every rank of the job now (MPI_Abort, whose code the launcher returns): a failing rank must never
        leave others waiting. Callable from any thread (mpi4py initialises MPI_THREAD_MULTIPLE)."""
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        time.sleep(pause)  # the launcher forwards what was flushed before MPI_Abort ends it
        self.comm.Abort(code)


def detect_launcher(environ=None):
    """Which launcher started this process, from the variables each one sets ("none": agree starts no MPI)."""
    env = os.environ if environ is None else environ
    if any(key.startswith("POPDIST_") for key in env):
        return "poprun"
    if "SLURM_STEP_ID" in env or "SLURM_PROCID" in env:
        return "srun"
    if "PMI_RANK" in env or "HYDRA_CONTROL_FD" in env or "PMI_FD" in env:
        return "mpiexec-hydra"
    if "PRTE_LAUNCHED" in env or "OMPI_COMM_WORLD_RANK" in env or "PMIX_RANK" in env:
        return "mpirun-prrte"
    return "none"


def agree(check, comm=None):
    """World.agree before the world is set up, over `comm` (default: MPI's world; none without a launcher: check())."""
    if comm is None and detect_launcher() == "none":
        return check()
    if comm is None:
        comm = start_mpi().COMM_WORLD
    return World(comm, comm.Get_rank(), comm.Get_size(), None, None, host_name()).agree(check)  # no local place yet


def init_world():
    """Initialise MPI (singleton when no launcher) and work out this rank's place on its host."""
    MPI = start_mpi()
    comm = MPI.COMM_WORLD
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    world = World(comm=comm, rank=comm.Get_rank(), size=comm.Get_size(),
                  local_rank=node_comm.Get_rank(), local_size=node_comm.Get_size(), host=host_name())
    node_comm.Free()
    return world
