"""Notice a rank on the same host that ended while the job still needed it.

Launchers normally end a job when one of its ranks exits, but not every launcher does so at once,
and a rank left in a collective with a dead peer waits forever. So each rank's guard thread also
waits on a pidfd per other rank of its host: the kernel makes it readable when that process ends,
so the watch costs nothing while runs are timed (no polling). Ranks on other hosts are watched by
the ranks of their own host, when they have any. Linux only (pidfds, /proc); elsewhere nothing is
watched and the launcher alone ends the job.
"""
import os
import socket


def process_identity():
    """(host, pid, start time in clock ticks since boot) of this process, for the other ranks.

    A pid alone is not enough: in another PID namespace (a container per rank) it names another
    process, and the start time tells them apart.
    """
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
    """{pidfd: rank} for every other rank on this host whose process this one can see.

    `identities` holds every rank's process_identity(), in rank order. A rank is left out (the
    launcher still ends the job if it dies) when it is on another host, when pidfds are missing
    (Linux < 5.3) or when the process under its pid is not the rank (another PID namespace).
    """
    host = identities[rank][0]
    watches = {}
    if not hasattr(os, "pidfd_open"):
        return watches
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
