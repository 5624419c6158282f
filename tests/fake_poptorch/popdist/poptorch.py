"""Stand-in for popdist.poptorch: Options preset for this poprun instance (local replicas, process id).

Like the real class it forbids what poprun decides: replicationFactor, useIpuId and every
Distributed method raise (Distributed.processId and numProcesses stay readable values). ipus_per_replica
is taken as given and never checked against poprun's variables: Options(ipus_per_replica=2) builds
outside poprun too, so a caller that passes a value it does not honour is not stopped here.
"""
import poptorch as _poptorch

import popdist as _popdist


def _forbidden(name):
    def refuse(*args, **kwargs):
        raise RuntimeError(f"{name} cannot be used with popdist.poptorch.Options: poprun sets it")
    return refuse


class _ForbiddenDistributed:
    """Its setters raise; processId and numProcesses are values, as poptorch's properties are."""

    def __init__(self, options):
        self.processId = options.values["distributed_process_id"]
        self.numProcesses = options.values["num_distributed_processes"]

    def __getattr__(self, name):
        return _forbidden(f"Distributed.{name}")


class Options(_poptorch.Options):
    def __init__(self, ipus_per_replica=1, **kwargs):
        super().__init__()
        _poptorch._record("popdist.poptorch.Options", ipus_per_replica=ipus_per_replica, **kwargs)
        self.values["replication_factor"] = _popdist.getNumLocalReplicas()
        self.values["num_distributed_processes"] = _popdist.getNumInstances()
        self.values["distributed_process_id"] = _popdist.getInstanceIndex()
        self.Distributed = _ForbiddenDistributed(self)

    replicationFactor = _forbidden("replicationFactor")
    useIpuId = _forbidden("useIpuId")
