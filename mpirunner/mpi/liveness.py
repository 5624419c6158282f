"""A host that drops off (docs/failure-behaviour.md): MPI does not notice a cut link, so every rank other than 0
sends rank 0 a UDP datagram every INTERVAL_SECONDS and rank 0 answers each; a rank silent for the limit is lost. The
guard thread sends and reads them, never the timed window, so a step of any length does not make a rank look lost."""
import logging
import os
import secrets
import select
import signal
import socket
import struct
import time
from contextlib import suppress

log = logging.getLogger("mpirunner")

EXIT_LOST_HOST = 6          # a host of the job stopped answering (its link cut, the host down)
INTERVAL_SECONDS = 3.0      # how often each rank other than 0 sends its datagram
LIMIT_SECONDS = 30.0        # silent this long: lost
FINALIZE_SECONDS = 30      # after the guard stops, the most MPI_Finalize and the interpreter's exit may take
HANDSHAKE_SECONDS = 5.0     # how long a rank looks for rank 0's answer at the start
LIMIT_VARIABLE = "MPIRUNNER_LIVENESS_SECONDS"
ALIVE, HELLO, BYE = b"A", b"H", b"B"
MESSAGE = struct.Struct("!c8sIH")   # kind, the job's token, the sender's rank, the address index (HELLO)


def configured_limit(environ=None):
    """The limit in seconds from MPIRUNNER_LIVENESS_SECONDS (0: no check), else LIMIT_SECONDS."""
    text = (os.environ if environ is None else environ).get(LIMIT_VARIABLE, "")
    try:
        return max(0.0, float(text)) if text.strip() else LIMIT_SECONDS
    except ValueError:
        log.warning("%s=%r is not a number of seconds; using %g s", LIMIT_VARIABLE, text, LIMIT_SECONDS)
        return LIMIT_SECONDS


class Liveness:
    """One rank's side of the heartbeat, driven by its thread: readable() when the socket has data, tick() at due().
    on_lost(ranks) is called once, with the silent ranks (rank 0) or [0] (other ranks)."""

    def __init__(self, rank, sock, token, on_lost, root=None, peers=(), limit=LIMIT_SECONDS,
                 interval=INTERVAL_SECONDS, clock=time.monotonic):
        self.rank, self.sock, self.token, self.on_lost = rank, sock, token, on_lost
        self.root = root            # rank 0's address, on other ranks
        self.limit, self.interval, self.clock = limit, min(interval, limit / 5), clock  # several tries per limit
        self.sock.setblocking(False)
        now = clock()
        self.heard = {0: now} if rank else {peer: now for peer in peers}   # rank -> last sign of life
        self._next_send = now if rank else None
        self._lost = False

    def fileno(self):
        return self.sock.fileno()

    def due(self):
        """The monotonic time at which tick() must run next (None: nothing more to do)."""
        if self._lost or not self.heard:
            return None
        silent_at = min(self.heard.values()) + self.limit
        return silent_at if self._next_send is None else min(silent_at, self._next_send)

    def readable(self):
        """Take every datagram waiting: note the sender's sign of life; rank 0 answers each ALIVE or HELLO."""
        while True:
            try:
                data, source = self.sock.recvfrom(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier datagram (port unreachable): not a sign of life
                continue
            if len(data) != MESSAGE.size:
                continue
            kind, token, sender, index = MESSAGE.unpack(data)
            if token != self.token:
                continue  # another job's datagram
            if kind == BYE:
                self.heard.pop(sender, None)
            elif sender in self.heard:
                self.heard[sender] = self.clock()
            if self.rank == 0 and kind in (ALIVE, HELLO):
                self._send(MESSAGE.pack(kind, self.token, 0, index), source)

    def tick(self):
        """Send this rank's datagram when due; call on_lost once a rank has been silent for the limit."""
        now = self.clock()
        if self._next_send is not None and now >= self._next_send:
            self._send(MESSAGE.pack(ALIVE, self.token, self.rank, 0), self.root)
            self._next_send = now + self.interval
        silent = sorted(peer for peer, heard in self.heard.items() if now - heard > self.limit)
        if silent and not self._lost:
            self._lost = True
            self.on_lost(silent)

    def goodbye(self):
        """This rank's job is over: rank 0 stops expecting it (rank 0 itself just stops)."""
        self._lost = True  # nothing more is due
        for _ in range(2 if self.rank else 0):  # twice: a datagram may be lost
            self._send(MESSAGE.pack(BYE, self.token, self.rank, 0), self.root)

    def close(self):
        self.sock.close()

    def serve(self, stopping, wait=0.5):
        """Drive this side on the calling thread until the threading.Event `stopping` is set (tests, tools)."""
        while not stopping.is_set():
            due = self.due()
            timeout = wait if due is None else min(wait, max(0.0, due - self.clock()))
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if ready:
                self.readable()
            self.tick()

    def _send(self, data, address):
        with suppress(OSError):  # no route while a link is down: silence, which the other side notices
            self.sock.sendto(data, address)


def bound_finalize(seconds=FINALIZE_SECONDS):
    """After the guard stops: MPI_Finalize at exit waits for the other ranks, with no Python thread left to notice
    a lost one; an alarm whose default action ends the process bounds it (not when SIGALRM has a handler)."""
    if signal.getsignal(signal.SIGALRM) == signal.SIG_DFL:
        signal.alarm(int(seconds))


def interface_addresses():
    """This host's IPv4 addresses: those its name resolves to first, then each interface's (Linux)."""
    found = []
    with suppress(OSError):
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    with suppress(ImportError, OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        import fcntl

        for _, name in socket.if_nameindex():
            with suppress(OSError):
                answer = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                found.append(socket.inet_ntoa(answer[20:24]))
    return list(dict.fromkeys(found))


def candidates(root_host, root_addresses, host):
    """Where a rank on `host` may reach rank 0: loopback on rank 0's own host, else its non-loopback addresses."""
    if host == root_host:
        return ["127.0.0.1"]
    return [address for address in root_addresses if not address.startswith("127.")]


def find_root(sock, token, rank, addresses, port, seconds=HANDSHAKE_SECONDS, clock=time.monotonic):
    """A rank other than 0: send HELLO to each of rank 0's addresses until one answers; its address, or None."""
    deadline = clock() + seconds
    while clock() < deadline:
        for index, address in enumerate(addresses):
            with suppress(OSError):
                sock.sendto(MESSAGE.pack(HELLO, token, rank, index), (address, port))
        answer_by = min(deadline, clock() + 0.25)
        while clock() < answer_by and select.select([sock], [], [], max(0.0, answer_by - clock()))[0]:
            try:
                data = sock.recv(64)
            except OSError:
                continue
            if len(data) == MESSAGE.size:
                kind, answer_token, sender, index = MESSAGE.unpack(data)
                if kind == HELLO and answer_token == token and sender == 0 and index < len(addresses):
                    return addresses[index], port
    return None


def start_liveness(comm, rank, hosts, on_lost, limit=None):
    """Collective over `comm` (the guard's): this rank's Liveness, or None on every rank when the check is off (limit
    0, one rank, no MPI communicator) or some rank could not reach rank 0 (rank 0 says so once)."""
    import numpy as np
    from mpi4py import MPI

    limit = configured_limit() if limit is None else limit
    if not isinstance(comm, MPI.Comm) or len(hosts) < 2 or not limit:  # a stand-in communicator (unit tests): none
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 0))
    offer = (secrets.token_bytes(8), sock.getsockname()[1], interface_addresses()) if rank == 0 else None
    token, port, addresses = comm.bcast(offer, root=0)
    root = find_root(sock, token, rank, candidates(hosts[0], addresses, hosts[rank]), port) if rank else None
    found, every = np.array([rank == 0 or root is not None], dtype=np.int32), np.zeros(1, dtype=np.int32)
    if rank == 0:  # answer the HELLOs while the others look, until every rank has its answer
        liveness = Liveness(0, sock, token, on_lost, peers=range(1, len(hosts)), limit=limit)
        request = comm.Iallreduce(found, every, op=MPI.MIN)
        while not request.Test():
            if select.select([sock], [], [], 0.01)[0]:
                liveness.readable()
    else:  # a nonblocking collective matches only nonblocking ones
        comm.Iallreduce(found, every, op=MPI.MIN).Wait()
    if not every[0]:
        sock.close()
        unreached = comm.gather(hosts[rank] if rank and root is None else None, root=0)
        if rank == 0:
            names = sorted({host for host in unreached if host})
            log.warning("no liveness check in this job: rank 0 (%s) is not reachable over UDP from %s; "
                        "a lost host is noticed only by --timeout", hosts[0], ", ".join(names))
        return None
    if rank == 0:
        liveness.heard = {peer: time.monotonic() for peer in liveness.heard}
        return liveness
    return Liveness(rank, sock, token, on_lost, root=root, limit=limit)
