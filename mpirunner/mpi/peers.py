"""Notice a rank of this host that ended while the job still needed it (not every launcher ends the job at once, and
a collective with a dead peer waits forever): the guard thread waits on a pidfd per other local rank, never polling."""
import os
import socket


def process_identity():
    """(host, pid, start time in clock ticks since boot) of this process, for the other ranks: in another PID
    namespace (a container per rank) a pid names another process, and the start time tells them apart."""
    return socket.gethostname(), os.getpid(), _start_ticks(os.getpid())


def _start_ticks(pid):
    """Field 22 of /proc/PID/stat, or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count the fields after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def open_peer_watches(identities, rank):
    """{pidfd: rank} for every other rank on this host whose process this one can see (from every rank's
    process_identity(), in rank order): not without pidfds (Linux < 5.3) nor across PID namespaces."""
    if not hasattr(os, "pidfd_open"):
        return {}
    host, watches = identities[rank][0], {}
    for other, (other_host, pid, ticks) in enumerate(identities):
        if other == rank or other_host != host or ticks is None:
            continue
        try:
            descriptor = os.pidfd_open(pid)
        except OSError:
            continue
        if _start_ticks(pid) != ticks:  # checked with the pidfd held: the pid cannot be reused meanwhile
            os.close(descriptor)
            continue
        watches[descriptor] = other
    return watches
