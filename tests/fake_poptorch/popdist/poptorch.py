"""Stand-in for popdist.poptorch: Options preset for this poprun instance (local replicas, process id).

Like the real class it forbids what poprun decides: replicationFactor, useIpuId and every
Distributed method raise.
"""
import poptorch as _poptorch

import popdist as _popdist


def _forbidden(name):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{name} cannot be used with popdist.poptorch.Options: poprun sets it")
    return refuse


class _ForbiddenDistributed:
    def __getattr__(self, name):
        return _forbidden(f"Distributed.{name}")


class Options(_poptorch.Options):
    def __init__(self, ipus_per_replica=1, **kwargs):
        super().__init__()
        _poptorch._record("popdist.poptorch.Options", ipus_per_replica=ipus_per_replica, **kwargs)
        if ipus_per_replica != _popdist.getNumIpusPerReplica():
            raise RuntimeError(f"ipus_per_replica={ipus_per_replica} differs from poprun's "
                               f"--ipus-per-replica {_popdist.getNumIpusPerReplica()}")
        self.values["replication_factor"] = _popdist.getNumLocalReplicas()
        self.values["num_distributed_processes"] = _popdist.getNumInstances()
        self.values["distributed_process_id"] = _popdist.getInstanceIndex()
        self.Distributed = _ForbiddenDistributed()

    replicationFactor = _forbidden("replicationFactor")
    useIpuId = _forbidden("useIpuId")
