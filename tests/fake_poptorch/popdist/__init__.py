"""A recording stand-in for popdist (the Poplar distributed configuration library), for tests only.

Under poprun, popdist reads the launcher's POPDIST_* environment. This stand-in does the same, so a
test simulates `poprun --num-instances=4 --num-replicas=4 --ipus-per-replica=1` by setting
POPDIST_NUM_INSTANCES=4, POPDIST_NUM_TOTAL_REPLICAS=4, POPDIST_NUM_IPUS_PER_REPLICA=1 and
POPDIST_INSTANCE_INDEX (taken from PMI_RANK when absent, so one setting serves every mpiexec rank).
Calls are recorded through the poptorch stand-in's recorder.
"""
import os

import poptorch as _poptorch

_ENV = ("POPDIST_NUM_TOTAL_REPLICAS", "POPDIST_NUM_INSTANCES")


def isPopdistEnvSet():
    return all(name in os.environ for name in _ENV)


def _int(name, default):
    return int(os.environ.get(name, default))


def init():
    _poptorch._record("popdist.init")


def getNumInstances():
    return _int("POPDIST_NUM_INSTANCES", 1)


def getInstanceIndex():
    return _int("POPDIST_INSTANCE_INDEX", os.environ.get("PMI_RANK", 0))


def getNumTotalReplicas():
    return _int("POPDIST_NUM_TOTAL_REPLICAS", 1)


def getNumLocalReplicas():
    return getNumTotalReplicas() // getNumInstances()


def getReplicaIndexOffset():
    return getInstanceIndex() * getNumLocalReplicas()


def getNumIpusPerReplica():
    return _int("POPDIST_NUM_IPUS_PER_REPLICA", 1)


def getDeviceId():
    return getInstanceIndex()
