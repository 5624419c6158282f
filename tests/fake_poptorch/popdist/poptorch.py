"""Stand-in for popdist.poptorch: Options preset for this poprun instance (local replicas, process id)."""
import poptorch as _poptorch

import popdist as _popdist


class Options(_poptorch.Options):
    def __init__(self, ipus_per_replica=1, **kwargs):
        super().__init__()
        _poptorch._record("popdist.poptorch.Options", ipus_per_replica=ipus_per_replica, **kwargs)
        if ipus_per_replica != _popdist.getNumIpusPerReplica():
            raise RuntimeError(f"ipus_per_replica={ipus_per_replica} differs from poprun's "
                               f"--ipus-per-replica {_popdist.getNumIpusPerReplica()}")
        self.values["replication_factor"] = _popdist.getNumLocalReplicas()
        self.values["process_id"] = _popdist.getInstanceIndex()
        self.values["process_count"] = _popdist.getNumInstances()
