"""Test-only: several hosts on this one machine, each a set of Linux namespaces, joined by a network.

Why: a job across hosts has to show what one process tree cannot: ranks that reach each other only
through a network, host names the kernel reports, shared memory only within a host, and a host that
drops off. Here each test host is its own

- network namespace (`ip netns`: `mpirunner-<host>`) with its own loopback and one veth, `eth0`,
  at 10.213.7.<10 + i>/24; the other end of every veth is in a bridge that lives in a namespace of
  its own (`mpirunner-switch`), never in the machine's;
- UTS namespace (its own hostname, `<host>`), IPC namespace (its own System V segments) and mount
  namespace, in which /dev/shm is a private tmpfs and /etc/hosts is `/etc/netns/mpirunner-<host>/hosts`
  (naming every test host, as `ip netns exec` would bind it).

One `sleep` process per host holds its UTS, IPC and mount namespaces; a command enters a host with
`nsenter -t <that pid>` (Hosts.command), and the launchers reach the other hosts through one script that
does the same (Hosts.rsh: MPICH's `-launcher ssh -launcher-exec`, Open MPI's `plm_rsh_agent`), called
as ssh would be: `<script> [-x] HOST COMMAND...`. The script passes its environment on (as a site
with a shared environment would); no sshd is involved. The hosts share the machine's kernel, PID
namespace, clocks, /sys and filesystem (the output file is on that one filesystem).

Fixture `hosts` (marker `multihost`): four hosts for the test session, `host0` .. `host3`; it
installs iproute2 with apt-get when `ip` is missing. One test session at a time has the hosts (a lock,
LOCK; another session waits for it). A previous session's leftovers (namespaces,
processes in them, bind mounts, /etc/netns entries) are removed before the start and everything is
removed at the end. Without root or namespaces the fixture skips; with MPIRUNNER_REQUIRE_CLUSTER=1
that skip is a failure (tests/cluster.py).
"""
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import _which, unavailable

PREFIX = "mpirunner-"
SWITCH = PREFIX + "switch"
SUBNET = "10.213.7"          # 10.213.7.0/24: reserved for these test hosts
SHM_BYTES = 1 << 30
SHARED_MEMORY = ("/dev/shm/", "/SYSV", "/memfd:")   # what shared-memory mappings are called in /proc/PID/maps
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
PAGES_LOOKED_AT = 64
PFN_MASK = (1 << 55) - 1
LOCK = "/run/lock/mpirunner-test-hosts.lock"   # held by the session that has the hosts
LOCK_WAIT_SECONDS = 600
TOOLS = ("ip", "nsenter", "unshare", "mount")

RSH = """#!/bin/sh
# Written by tests/hosts.py: run a command on a test host, as `ssh [options] HOST COMMAND...` would.
while [ $# -gt 0 ]; do
    case "$1" in -*) shift ;; *) break ;; esac
done
host=$1
shift
case "$host" in
{cases}
    *) echo "$0: no test host $host" >&2; exit 255 ;;
esac
exec {nsenter} -t "$pid" --net --uts --ipc --mount --wd="$PWD" -- /bin/sh -c "$*"
"""


def _run(*argv, check=True, timeout=30):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def _namespace_inode(path):
    """The inode of the namespace bound at `path`, or None when none is (a plain file, nothing)."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino if found.st_dev == os.stat("/proc/self/ns/net").st_dev else None


def _processes_in(inodes, kind):
    """Pids (not this process) whose `kind` namespace (net, uts, ...) has one of these inodes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/{kind}")
        except OSError:
            continue
        if int(link.split("[")[1].rstrip("]")) in inodes:
            found.append(int(entry))
    return found


def install_iproute():
    """Install iproute2 with apt-get when `ip` is missing; None when present, else why not."""
    if _which("ip"):
        return None
    if os.geteuid() != 0 or not _which("apt-get"):
        return "iproute2 (`ip`) is missing and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "iproute2"]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=600)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    return None if _which("ip") else f"iproute2 could not be installed: {result.stderr.strip()[-300:]}"


def remove_leftovers():
    """Remove what a test host session left (this one's, or a crashed one's): processes, namespaces, files."""
    netns = Path("/run/netns")
    names = sorted(path.name for path in netns.glob(PREFIX + "*")) if netns.is_dir() else []
    inodes = {_namespace_inode(netns / name) for name in names} - {None}
    for pid in _processes_in(inodes, "net") if inodes else []:  # the holders and anything left on a host
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in names:
        _run("ip", "netns", "del", name, check=False)
    for path in Path("/etc/netns").glob(PREFIX + "*"):
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.rmdir("/etc/netns")  # only when empty: made for these hosts
    except OSError:
        pass


class Hosts:
    """Test hosts `names` (see the module docstring); `up()` makes them, `down()` removes everything."""

    def __init__(self, names, folder):
        self.names = list(names)
        self.address = {name: f"{SUBNET}.{10 + index}" for index, name in enumerate(self.names)}
        self.rsh = Path(folder) / "rsh"
        self.holders = {}           # host -> pid of the process holding its namespaces
        self._holders = []

    def netns(self, host):
        return PREFIX + host

    def up(self):
        remove_leftovers()
        _run("ip", "netns", "add", SWITCH)
        _run("ip", "-n", SWITCH, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", SWITCH, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{address} {name}\n" for name, address in self.address.items())
        for index, name in enumerate(self.names):
            netns = self.netns(name)
            _run("ip", "netns", "add", netns)
            _run("ip", "link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", f"veth{index}",
                 "netns", SWITCH)
            _run("ip", "-n", SWITCH, "link", "set", f"veth{index}", "master", "br0", "up")
            _run("ip", "-n", netns, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
            _run("ip", "-n", netns, "link", "set", "eth0", "up")
            _run("ip", "-n", netns, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            setup = (f"hostname {name} && mount -t tmpfs -o size={SHM_BYTES},mode=1777 shm-{name} /dev/shm && "
                     f"mount --bind {etc / 'hosts'} /etc/hosts && exec sleep infinity")
            holder = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", "--", "unshare", "--mount", "--uts",
                                       "--ipc", "--propagation", "private", "--", "/bin/sh", "-c", setup],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
            self._holders.append(holder)
            self.holders[name] = holder.pid
        for name, holder in zip(self.names, self._holders):  # set up once the holder is `sleep`
            deadline = time.monotonic() + 10
            while Path(f"/proc/{holder.pid}/comm").read_text().strip() != "sleep":
                if holder.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"test host {name} could not be set up ({setup})")
                time.sleep(0.05)
        cases = "\n".join(f"    {name}) pid={pid} ;;" for name, pid in self.holders.items())
        self.rsh.write_text(RSH.format(cases=cases, nsenter=_which("nsenter")))
        self.rsh.chmod(0o755)
        self._wait_reachable()
        return self

    def _wait_reachable(self):
        """Every host's link is up (carrier from the bridge) before a test uses it."""
        for name in self.names:
            deadline = time.monotonic() + 10
            while True:
                result = _run("ip", "-j", "-n", self.netns(name), "link", "show", "dev", "eth0")
                if json.loads(result.stdout)[0].get("operstate") == "UP":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"test host {name}: eth0 did not come up")
                time.sleep(0.1)

    def down(self):
        remove_leftovers()
        for holder in self._holders:
            holder.wait(timeout=10)

    # ---- entering a host

    def command(self, host, argv):
        """argv run on `host` (its namespaces, the current folder kept)."""
        return [_which("nsenter"), "-t", str(self.holders[host]), "--net", "--uts", "--ipc", "--mount",
                f"--wd={os.getcwd()}", "--", *map(str, argv)]

    def run(self, host, argv, timeout=60, **kwargs):
        return subprocess.run(self.command(host, argv), capture_output=True, text=True, timeout=timeout, **kwargs)

    def popen(self, host, argv, **kwargs):
        return subprocess.Popen(self.command(host, argv), **kwargs)

    # ---- looking at a host from outside

    def link_bytes(self, host):
        """(received, sent) bytes of the host's eth0, its only way to the other hosts."""
        result = _run("ip", "-j", "-s", "-n", self.netns(host), "link", "show", "dev", "eth0")
        [link] = json.loads(result.stdout)
        stats = link["stats64"]
        return stats["rx"]["bytes"], stats["tx"]["bytes"]

    def cut(self, host):
        """Take the host's link down, from inside its network namespace."""
        _run("ip", "-n", self.netns(host), "link", "set", "eth0", "down")

    def reconnect(self, host):
        """Bring the host's link back up (after cut)."""
        _run("ip", "-n", self.netns(host), "link", "set", "eth0", "up")

    def processes(self, host):
        """Pids of the processes on `host` (in its UTS namespace)."""
        inode = _namespace_inode(f"/proc/{self.holders[host]}/ns/uts")
        return [pid for pid in _processes_in({inode}, "uts") if pid != self.holders[host]] if inode else []

    def kill(self, host):
        """SIGKILL every process on `host`, as a power cut would end them; returns their pids."""
        pids = self.processes(host)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def shared_memory(self, host):
        """{page frame: pids mapping it} of the shared memory mapped by the processes on `host` (/dev/shm, SysV, memfd).

        Page frames (from /proc/PID/pagemap, root only) name the physical memory itself, so a segment two
        hosts both map shows up on both, whatever its name or IPC namespace; up to PAGES_LOOKED_AT pages a
        mapping (those the process has touched).
        """
        found = {}
        for pid in self.processes(host):
            try:
                lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
                pagemap = open(f"/proc/{pid}/pagemap", "rb")
            except OSError:
                continue
            with pagemap:
                for line in lines:
                    fields = line.split(maxsplit=5)
                    if len(fields) < 6 or fields[1][3] != "s" or not fields[5].startswith(SHARED_MEMORY):
                        continue
                    start, end = (int(value, 16) // PAGE_BYTES for value in fields[0].split("-"))
                    pagemap.seek(8 * start)
                    entries = pagemap.read(8 * min(end - start, PAGES_LOOKED_AT))
                    for (entry,) in struct.iter_unpack("<Q", entries):
                        if entry >> 63 and entry & PFN_MASK:  # present, and the frame is shown (root)
                            found.setdefault(entry & PFN_MASK, set()).add(pid)
        return found

    def shm_files(self, host):
        """Names in the host's own /dev/shm."""
        return sorted(self.run(host, ["ls", "-A", "/dev/shm"]).stdout.split())


def available():
    """None when test hosts can be made here, else why not."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "test hosts need Linux namespaces and root"
    reason = install_iproute()
    if reason:
        return reason
    missing = [tool for tool in TOOLS if not _which(tool)]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="session")
def hosts(tmp_path_factory):
    """Four namespace hosts, host0 .. host3, for the test session (see the module docstring)."""
    reason = available()
    if reason:
        unavailable(reason)
    started = time.monotonic()
    os.makedirs(os.path.dirname(LOCK), exist_ok=True)
    lock = open(LOCK, "w")
    while True:  # one session's hosts at a time: another session's start would remove them
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > started + LOCK_WAIT_SECONDS:
                unavailable(f"another test session has held the test hosts ({LOCK}) for {LOCK_WAIT_SECONDS} s")
            time.sleep(1)
    cluster = Hosts([f"host{index}" for index in range(4)], tmp_path_factory.mktemp("hosts"))
    try:
        cluster.up()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        cluster.down()
        unavailable(f"test hosts could not be made here: {error}")
    print(f"\n{len(cluster.names)} namespace hosts up in {time.monotonic() - started:.1f} s")
    try:
        yield cluster
    finally:
        cluster.down()
        lock.close()


def main(argv):
    """`python -m tests.hosts install`: install what the test hosts need (iproute2), for .ci/run."""
    if argv != ["install"]:
        print("usage: python -m tests.hosts install", file=sys.stderr)
        return 2
    reason = available()
    if reason:
        print(f"tests.hosts: {reason}", file=sys.stderr)
        return 1
    print("tests.hosts: ip, nsenter and unshare present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
