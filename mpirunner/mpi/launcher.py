"""Does the MPI library mpi4py loads belong to the launcher that started this process? An mpi4py built on MPICH
under Open MPI's mpirun (poprun's) may silently be a world of one rank, so every process would write the same file.
SLURM's task variables count only without a direct launcher's (MPICH's and Open MPI's start their daemons by srun)."""
import os
import sys
from collections import namedtuple

from mpirunner.errors import UsageError

FIX = ("install mpi4py against the launcher's MPI (docs/cluster-jobs.md: 'MPI libraries'), "
       "or start the job with the launcher of the MPI mpi4py loads")
# What the launcher says about this process: `size` ranks and this one's `rank` (None: not said), its `family`
# ("Open MPI", "PMI", "PMIx" or "SLURM") and the `variables` it was read from, for the message.
Declared = namedtuple("Declared", "size rank family variables")


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
        return Declared(_int(env, "PMIX_SIZE"), _int(env, "PMIX_RANK"), "PMIx", f"PMIX_RANK={env['PMIX_RANK']}")
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
    if declared is not None and declared.size not in (None, size):
        return (f"the launcher started {declared.size} ranks ({declared.variables}) but MPI sees a world of "
                f"{size} rank{'s' if size != 1 else ''} (mpi4py loaded {library}); {FIX}")
    if declared is not None and declared.rank not in (None, rank):
        return (f"the launcher says this is rank {declared.rank} but MPI says rank {rank} "
                f"(mpi4py loaded {library}); {FIX}")
    return None


def start_mpi(environ=None):
    """Initialise MPI (MPI_THREAD_MULTIPLE, unless already running) and return mpi4py's MPI; a UsageError when the
    library does not suit the launcher (before MPI_Init where that is already certain)."""
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
