"""NUMA placement of each rank, decided and applied in-process as `poprun --numa-aware=yes` does (docs/placement.md);
nothing shells out, and the only MPI traffic is one allgather (every rank plans its host alike) and one gather."""
import ctypes
import itertools
import logging
import os
import platform
import re
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

log = logging.getLogger("mpirunner")

NO_NODE = -1


def parse_cpu_list(text):
    """Kernel CPU-list syntax ('0-3,8-11', '0-7:2' strides, '' empty) -> sorted tuple of ints."""
    cpus = set()
    for part in filter(None, map(str.strip, text.split(","))):
        span, _, stride = part.partition(":")
        first, _, last = span.partition("-")
        step = int(stride.split("/")[0]) if stride else 1
        cpus.update(range(int(first), int(last or first) + 1, step))
    return tuple(sorted(cpus))


def format_cpu_list(cpus):
    """Sorted CPUs -> the compact kernel syntax: [0, 1, 2, 3, 8] -> '0-3,8'."""
    runs = itertools.groupby(enumerate(sorted(set(cpus))), key=lambda pair: pair[1] - pair[0])  # consecutive CPUs
    spans = [[cpu for _, cpu in run] for _, run in runs]
    return ",".join(str(span[0]) if len(span) == 1 else f"{span[0]}-{span[-1]}" for span in spans)


@dataclass(frozen=True)
class NumaNode:
    node: int
    cpus: Tuple[int, ...]
    memory_kib: int = 0


@dataclass(frozen=True)
class Topology:
    """The NUMA nodes that hold at least one allowed CPU; `from_sysfs` is False for the no-NUMA fallback."""

    nodes: Tuple[NumaNode, ...]
    from_sysfs: bool = True

    def node_of(self, cpus):
        """The node holding every one of `cpus`, or NO_NODE when they span nodes (or none is known)."""
        wanted = set(cpus)
        return next((node.node for node in self.nodes if wanted and wanted <= set(node.cpus)), NO_NODE)


def _node_memory_kib(node_dir):
    try:
        match = re.search(r"MemTotal:\s+(\d+)\s*kB", (node_dir / "meminfo").read_text())
    except OSError:
        return 0
    return int(match.group(1)) if match else 0


def read_topology(allowed_cpus, sysfs_root="/sys"):
    """NUMA nodes from `<sysfs_root>/devices/system/node/node*/`, keeping only `allowed_cpus` (a node without
    any cannot host a rank); no NUMA sysfs: one node of every allowed CPU (from_sysfs False)."""
    allowed = set(allowed_cpus)
    node_root = Path(sysfs_root) / "devices" / "system" / "node"
    nodes = []
    for node_dir in sorted(node_root.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        try:
            node_cpus = parse_cpu_list((node_dir / "cpulist").read_text())
        except (OSError, ValueError):
            continue
        usable = tuple(cpu for cpu in node_cpus if cpu in allowed)
        if usable:
            nodes.append(NumaNode(int(node_dir.name[4:]), usable, _node_memory_kib(node_dir)))
    if not nodes:
        return Topology((NumaNode(0, tuple(sorted(allowed))),), from_sysfs=False)
    return Topology(tuple(nodes))


@dataclass(frozen=True)
class RankPlan:
    """Where one rank runs. `shared`: other ranks of the host use some of these CPUs too."""

    node: int
    cpus: Tuple[int, ...]
    threads: int
    shared: bool = False
    kept_launcher_binding: bool = False


def _node_shares(cpus, ranks, cpus_per_rank):
    """Shares of one node's CPUs for its `ranks` ranks -> (shares, shared?): disjoint and contiguous, sizes
    differing by at most one (larger first); else `cpus_per_rank` each (or one), wrapping round to share."""
    if cpus_per_rank is None and ranks <= len(cpus):
        return [tuple(share.tolist()) for share in np.array_split(cpus, ranks)], False
    size = min(cpus_per_rank or 1, len(cpus))
    shares = [tuple(cpus[(index * size + k) % len(cpus)] for k in range(size)) for index in range(ranks)]
    return shares, ranks * size > len(cpus)


def plan_host(topology, local_size, cpus_per_rank=None, threads=None, preferred_nodes=None):
    """Plans for every local rank of one host: a rank goes to its preferred_nodes entry when the topology holds it,
    else round-robin over the nodes. cpus_per_rank: CPUs of each share; threads: overrides its CPU count."""
    known = {node.node: node for node in topology.nodes}
    round_robin = itertools.cycle(known)
    assignment = [preferred if preferred in known else next(round_robin)
                  for preferred in preferred_nodes or [None] * local_size]
    plans = [None] * local_size
    for node_id in dict.fromkeys(assignment):  # the nodes that got a rank
        members = [rank for rank in range(local_size) if assignment[rank] == node_id]
        shares, shared = _node_shares(known[node_id].cpus, len(members), cpus_per_rank)
        for rank, share in zip(members, shares):
            plans[rank] = RankPlan(node_id, share, threads or len(share), shared)
    return plans


def respect_launcher_binding(plan, start_cpus, topology, threads=None):
    """Keep a launcher's binding narrower than the planned share (e.g. `srun --cpu-bind=cores`)."""
    if len(start_cpus) >= len(plan.cpus):
        return plan
    cpus = tuple(sorted(start_cpus))
    return RankPlan(topology.node_of(cpus), cpus, threads or len(cpus), plan.shared, kept_launcher_binding=True)


MPOL_PREFERRED = 1
# set_mempolicy / get_mempolicy syscall numbers (glibc wraps neither; libnuma is optional).
MEMPOLICY_SYSCALLS = {
    "x86_64": (238, 239), "aarch64": (237, 236), "riscv64": (237, 236), "ppc64le": (261, 260),
    "ppc64": (261, 260), "s390x": (270, 269), "i686": (276, 275), "i386": (276, 275),
}
MASK_WORDS = 16  # 1024 nodes


def set_preferred_memory_node(node):
    """Prefer this thread's (and its future threads') memory on `node`: 'preferred:<node>', confirmed, or an OSError."""
    if platform.machine() not in MEMPOLICY_SYSCALLS:
        raise OSError(f"no set_mempolicy syscall number known for {platform.machine()}")
    set_number, get_number = MEMPOLICY_SYSCALLS[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    word_bits = 8 * ctypes.sizeof(ctypes.c_ulong)
    mask = (ctypes.c_ulong * MASK_WORDS)()
    mask[node // word_bits] = 1 << (node % word_bits)
    maxnode = ctypes.c_ulong(MASK_WORDS * word_bits + 1)  # the kernel reads maxnode - 1 bits
    if libc.syscall(ctypes.c_long(set_number), ctypes.c_int(MPOL_PREFERRED), mask, maxnode) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"set_mempolicy(MPOL_PREFERRED, node {node}): {os.strerror(errno)}")
    mode, seen = ctypes.c_int(-1), (ctypes.c_ulong * MASK_WORDS)()
    if libc.syscall(ctypes.c_long(get_number), ctypes.byref(mode), seen, maxnode, None, ctypes.c_ulong(0)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"get_mempolicy: {os.strerror(errno)}")
    if mode.value != MPOL_PREFERRED or not seen[node // word_bits] >> (node % word_bits) & 1:
        raise OSError(f"the kernel reports memory policy {mode.value}, not preferred node {node}")
    return f"preferred:{node}"


def set_affinity_of_all_threads(cpus):
    """sched_setaffinity for every thread: those started before placement (OpenMP, MPI) would keep the old mask."""
    os.sched_setaffinity(0, cpus)
    for task in Path("/proc/self/task").glob("[0-9]*"):
        with suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def set_threads(threads):
    """torch's intra-op threads, and OMP_NUM_THREADS for libraries that read it later."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def kernel_cpus_allowed(status_path="/proc/self/status"):
    """The kernel's own word on this process's affinity (Cpus_allowed_list), '' where unreadable."""
    with suppress(OSError):
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return ""


@dataclass(frozen=True)
class HostView:
    """What one rank tells the others before planning."""

    host: str
    local_rank: int
    start_cpus: Tuple[int, ...]
    preferred_node: Optional[int]


def _host_plan(config, me, views, sysfs_root):
    """(topology, plan, launcher_bound) for `me`, from the views of every rank of the job."""
    mine = sorted((v for v in views if v.host == me.host), key=lambda v: v.local_rank)
    host_cpus = set().union(*(v.start_cpus for v in mine))
    topology = read_topology(host_cpus, sysfs_root)
    launcher_bound = set(me.start_cpus) < host_cpus

    def preference(view):
        if view.preferred_node is not None:
            return view.preferred_node
        node = topology.node_of(view.start_cpus) if set(view.start_cpus) < host_cpus else NO_NODE
        return node if node != NO_NODE else None  # a launcher bound it inside one node: stay there

    plans = plan_host(topology, len(mine), config.cpus_per_rank, config.threads, [preference(v) for v in mine])
    plan = plans[[v.local_rank for v in mine].index(me.local_rank)]
    if launcher_bound:
        plan = respect_launcher_binding(plan, me.start_cpus, topology, config.threads)
    return topology, plan, launcher_bound


def place_this_rank(config, world, preferred_node=None, sysfs_root="/sys"):
    """Decide and apply this rank's placement; return the columns of its /ranks row (collective)."""
    start_cpus = tuple(sorted(os.sched_getaffinity(0)))
    me = HostView(world.host, world.local_rank, start_cpus, preferred_node)
    views = world.allgather(me)
    topology, plan, launcher_bound = _host_plan(config, me, views, sysfs_root)
    notes, mem_policy = [], "none"
    if config.numa_aware == "yes":
        try:
            set_affinity_of_all_threads(plan.cpus)
        except OSError as error:  # e.g. the share lies outside this rank's own cgroup
            notes.append(f"could not pin to CPUs {format_cpu_list(plan.cpus)} ({error}); kept the CPUs it had")
        if plan.kept_launcher_binding:
            notes.append(f"kept the launcher's binding to CPUs {format_cpu_list(plan.cpus)} "
                         "(narrower than the planned share)")
        if plan.shared:
            notes.append("more ranks than CPUs on the node: ranks share CPUs")
        if not topology.from_sysfs:
            notes.append("no NUMA nodes in sysfs: one node of all allowed CPUs, memory policy left alone")
        elif plan.node == NO_NODE:
            notes.append("the rank's CPUs span NUMA nodes: memory policy left alone")
        else:
            try:
                mem_policy = set_preferred_memory_node(plan.node)
            except OSError as error:
                notes.append(f"memory policy not set ({error})")
        set_threads(plan.threads)
    elif config.threads:
        set_threads(config.threads)
    import torch

    cpus = tuple(sorted(os.sched_getaffinity(0)))
    row = {
        "numa_node": topology.node_of(cpus) if topology.from_sysfs else NO_NODE,
        "cpus": format_cpu_list(cpus),
        "threads": torch.get_num_threads(),
        "mem_policy": mem_policy,
        "launcher_binding": "yes" if launcher_bound else "no",
        "cpus_at_start": format_cpu_list(start_cpus),
        "cpus_shared": "yes" if plan.shared and config.numa_aware == "yes" else "no",
        "cpus_allowed": kernel_cpus_allowed(),
    }
    _log_placement(world, config, row, notes)
    return row


def _log_placement(world, config, row, notes):
    """Rank 0 logs one line per rank and each distinct note once, with the ranks it concerns."""
    line = (f"rank {world.rank} on {world.host}: node {row['numa_node']}, cpus {row['cpus']}, "
            f"{row['threads']} thread(s), memory {row['mem_policy']}")
    gathered = world.gather((line, notes))
    if not world.is_root:
        return
    header = "placement (--numa-aware yes):" if config.numa_aware == "yes" else \
        "placement left to the launcher (--numa-aware no):"
    log.info("%s\n  %s", header, "\n  ".join(entry[0] for entry in gathered))
    for note in dict.fromkeys(note for _, notes in gathered for note in notes):
        ranks = [rank for rank, (_, notes) in enumerate(gathered) if note in notes]
        log.warning("placement: %s (rank%s %s)", note, "s" if len(ranks) > 1 else "", format_cpu_list(ranks))
