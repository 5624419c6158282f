"""Does the MPI library mpi4py loads belong to the launcher that started this process? Checked before
MPI_Init, and once more right after it.

A launcher of one MPI family cannot start ranks of another: under Open MPI's mpirun (poprun uses it)
an mpi4py built on MPICH either aborts inside MPI_Init or, without the launcher's server, silently
becomes a world of one rank, so every process believes it is rank 0 and writes the same file. The
launcher's own variables say how many ranks it started; MPI must agree, or the job ends at once with
one line (exit 2) naming both sizes, the library and the fix (docs/cluster-jobs.md).

Precedence of the declarations: the direct launcher's variables (Open MPI's OMPI_COMM_WORLD_*, PMI's
PMI_SIZE/PMI_RANK, PMIx's PMIX_RANK), and SLURM's task variables only when none of those is set:
MPICH's and Open MPI's launchers start their daemons through srun inside an allocation, so
SLURM_PROCID/SLURM_STEP_NUM_TASKS may describe the daemons, not the ranks.
"""
import os
import sys
from dataclasses import dataclass
from typing import Optional

from mpirunner.errors import UsageError

FIX = ("install mpi4py against the launcher's MPI (docs/cluster-jobs.md: 'MPI libraries'), "
       "or start the job with the launcher of the MPI mpi4py loads")


@dataclass(frozen=True)
class Declared:
    """What the launcher says about this process: `size` ranks (None: not said), this one is `rank`."""

    size: Optional[int]
    rank: Optional[int]
    family: str        # "Open MPI", "PMI", "PMIx" or "SLURM"
    variables: str     # the variables it was read from, for the message


def _int(env, key):
    try:
        return int(env[key])
    except (KeyError, ValueError):
        return None


def declared_world(environ=None):
    """The launcher's declaration of world size and rank, or None when no launcher declared one."""
    env = os.environ if environ is None else environ
    if "OMPI_COMM_WORLD_SIZE" in env or "OMPI_COMM_WORLD_RANK" in env:
        return Declared(_int(env, "OMPI_COMM_WORLD_SIZE"), _int(env, "OMPI_COMM_WORLD_RANK"), "Open MPI",
                        f"OMPI_COMM_WORLD_SIZE={env.get('OMPI_COMM_WORLD_SIZE', '?')}")
    if "PMI_SIZE" in env or "PMI_RANK" in env:
        return Declared(_int(env, "PMI_SIZE"), _int(env, "PMI_RANK"), "PMI", f"PMI_SIZE={env.get('PMI_SIZE', '?')}")
    if "PMIX_RANK" in env:
        size = _int(env, "PMIX_SIZE")
        return Declared(size, _int(env, "PMIX_RANK"), "PMIx", f"PMIX_RANK={env['PMIX_RANK']}")
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:  # srun started this process itself
        return Declared(_int(env, "SLURM_STEP_NUM_TASKS"), _int(env, "SLURM_PROCID"), "SLURM",
                        f"SLURM_STEP_NUM_TASKS={env['SLURM_STEP_NUM_TASKS']}")
    return None


def library_name(version_text):
    """First line of MPI_Get_library_version, without the NUL byte Open MPI ends it with."""
    lines = version_text.replace("\0", "").strip().splitlines()
    return " ".join(lines[0].split()) if lines else "unknown"


def mismatch_before_init(declared, library):
    """The problem line when `library` cannot join the launcher's world at all (checked before MPI_Init)."""
    if declared is None or declared.family != "Open MPI" or (declared.size or 0) <= 1 or "Open MPI" in library:
        return None
    return (f"Open MPI's launcher started {declared.size} ranks ({declared.variables}) but mpi4py loaded "
            f"{library}, which cannot join that world (each process would be a world of 1 rank); {FIX}")


def mismatch_after_init(declared, size, rank, library):
    """The problem line when MPI's world differs from what the launcher declared (checked after MPI_Init)."""
    if declared is None:
        return None
    if declared.size is not None and declared.size != size:
        return (f"the launcher started {declared.size} ranks ({declared.variables}) but MPI sees a world of "
                f"{size} rank{'s' if size != 1 else ''} (mpi4py loaded {library}); {FIX}")
    if declared.rank is not None and declared.rank != rank:
        return (f"the launcher says this is rank {declared.rank} but MPI says rank {rank} "
                f"(mpi4py loaded {library}); {FIX}")
    return None


def start_mpi(environ=None):
    """Initialise MPI (MPI_THREAD_MULTIPLE) after checking that the library suits the launcher; return mpi4py's MPI.

    Raises UsageError (before MPI_Init where that is already certain) on a mismatch. Does nothing more
    when MPI is already running.
    """
    if "mpi4py.MPI" not in sys.modules:
        import mpi4py

        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = True
    from mpi4py import MPI

    if MPI.Is_initialized():
        return MPI
    declared = declared_world(environ)
    library = library_name(MPI.Get_library_version())
    problem = mismatch_before_init(declared, library)
    if problem:
        raise UsageError(problem)
    MPI.Init_thread(MPI.THREAD_MULTIPLE)
    problem = mismatch_after_init(declared, MPI.COMM_WORLD.Get_size(), MPI.COMM_WORLD.Get_rank(), library)
    if problem:
        raise UsageError(problem)
    return MPI
