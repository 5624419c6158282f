"""A recording stand-in for popdist (the Poplar distributed configuration library), for tests only.

It reads exactly what a real poprun exports to each instance (its mpirun line passes
POPDIST_NUM_TOTAL_REPLICAS, POPDIST_NUM_IPUS_PER_REPLICA, POPDIST_NUM_LOCAL_REPLICAS,
POPDIST_UNIFORM_REPLICAS_PER_INSTANCE, POPDIST_REPLICA_INDEX_OFFSET, POPDIST_LOCAL_INSTANCE_INDEX):
there is no instance-count variable, so the number of instances is total / local replicas, and the
instance index is Open MPI's OMPI_COMM_WORLD_RANK (poprun launches through Open MPI's mpirun). Tests
that launch with MPICH's mpiexec get the index from PMI_RANK instead: the only concession.

SDK generations (FAKE_POPTORCH_SDK, default 3): 2.x has no init() and no isBackendInitialized();
3.x has both, and init() twice raises, as an already initialised backend does. Each init() records
whether MPI was already initialised (by mpi4py) when it ran. Calls are recorded through the poptorch
stand-in's recorder.
"""
import os
import sys

import poptorch as _poptorch

_ENV = ("POPDIST_NUM_TOTAL_REPLICAS", "POPDIST_NUM_LOCAL_REPLICAS")
_BACKEND = []  # non-empty once init() ran (3.x)


def isPopdistEnvSet():
    return all(name in os.environ for name in _ENV)


def _int(name, default):
    return int(os.environ.get(name, default))


def _mpi_initialised():
    mpi = sys.modules.get("mpi4py.MPI")
    return bool(mpi is not None and mpi.Is_initialized())


def _init():
    if _BACKEND:
        raise RuntimeError("popdist: the default backend is already initialised")
    _poptorch._record("popdist.init", mpi_initialised=_mpi_initialised())
    _BACKEND.append("default")


def _isBackendInitialized():
    return bool(_BACKEND)


if _poptorch.SDK != "2":
    init = _init
    isBackendInitialized = _isBackendInitialized


def getNumTotalReplicas():
    return _int("POPDIST_NUM_TOTAL_REPLICAS", 1)


def getNumLocalReplicas():
    return _int("POPDIST_NUM_LOCAL_REPLICAS", 1)


def getNumInstances():
    return getNumTotalReplicas() // getNumLocalReplicas()


def getInstanceIndex():
    return _int("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", 0))


def getReplicaIndexOffset():
    return _int("POPDIST_REPLICA_INDEX_OFFSET", getInstanceIndex() * getNumLocalReplicas())


def getNumIpusPerReplica():
    return _int("POPDIST_NUM_IPUS_PER_REPLICA", 1)


def getDeviceId():
    return getInstanceIndex()
