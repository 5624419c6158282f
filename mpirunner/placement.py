"""NUMA placement of each rank: topology from sysfs, rank -> node -> cpus, pinning in-process.

(Implemented by the Placement issue; until then ranks are left where the launcher put them.)
"""
import os


def place_this_rank(config, world, preferred_node=None):
    """Decide and apply this rank's placement; return the columns of its /ranks row."""
    cpus = sorted(os.sched_getaffinity(0))
    return {"numa_node": -1, "cpus": ",".join(map(str, cpus)), "threads": 0, "mem_policy": "none",
            "launcher_binding": "no"}
