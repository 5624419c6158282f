"""The guard thread: one per rank, asleep in select() until a signal, a wake-up, a peer process's end, the run's
deadline or the heartbeat (liveness.py), so nothing else wakes while runs are timed; it notices, the guard decides."""
import selectors
import socket
import threading
import time
from contextlib import suppress

from mpirunner.mpi.signals import SignalWakeup


class Watchdog:
    """deadline(): the monotonic time at which on_deadline() is due (None: nothing due); peers: {pidfd: rank}."""

    def __init__(self, deadline, on_signal, on_peer_ended, on_deadline, stopping):
        self.deadline, self.on_deadline, self.stopping = deadline, on_deadline, stopping  # set when the guard stops
        self.on_signal, self.on_peer_ended = on_signal, on_peer_ended
        self._signals = SignalWakeup()
        self._thread = None
        self._wake_read = self._wake_write = None

    def start(self, peers, liveness=None):
        self.peers, self.liveness = peers, liveness  # liveness: the heartbeat (liveness.py) or None
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._signals.install(self._wake_write.fileno())
        self._thread = threading.Thread(target=self._watch, name="mpirunner-guard", daemon=True)
        self._thread.start()

    def stop(self):
        """After stopping is set: the thread ends, the signal handlers are restored, the sockets closed."""
        self.wake()
        if self._thread is not None:
            self._thread.join(2.0)
        self._signals.restore()
        for sock in filter(None, (self._wake_read, self._wake_write)):
            sock.close()
        self._wake_read = self._wake_write = None

    def wake(self):
        """Make the thread look at the deadline again (a zero byte: not a signal number)."""
        with suppress(AttributeError, OSError):
            self._wake_write.send(b"\0")

    def _watch(self):
        selector = selectors.DefaultSelector()
        try:
            for source in (self._wake_read, *self.peers, self.liveness):
                if source is not None:
                    selector.register(source, selectors.EVENT_READ)
            while not self.stopping.is_set():
                deadline = self.deadline()
                due = [when for when in (deadline, self.liveness and self.liveness.due()) if when]
                wait = max(0.0, min(due) - time.monotonic()) if due else None
                ready = [key.fileobj for key, _ in selector.select(wait)]
                if deadline is not None and time.monotonic() >= deadline:
                    self.on_deadline()
                if self.liveness is not None:  # the heartbeat: read, answer, send when due, notice silence
                    if self.liveness in ready:
                        self.liveness.readable()
                    self.liveness.tick()
                for source in ready:
                    if source is self._wake_read:
                        for signum in self._wake_read.recv(64):
                            if signum:
                                self.on_signal(signum)
                    elif source is not self.liveness:
                        selector.unregister(source)  # a pidfd stays readable once its process has ended
                        self.on_peer_ended(self.peers[source])
        except (OSError, ValueError, KeyError):
            return  # stop() closed the socket or the pidfds
        finally:
            selector.close()
