"""SIGTERM/SIGINT reach the guard thread as a byte on its wake-up socket (signal.set_wakeup_fd): Python's handlers
cannot run while the main thread is blocked in MPI or a device call (the one installed here does nothing)."""
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalWakeup:
    """Routes SIGNALS to a socket's file descriptor while installed (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self._old_handlers = {}
        self._old_wakeup = -1

    def install(self, write_fd):
        if threading.current_thread() is not threading.main_thread():
            return
        self._old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, lambda signum, frame: None)

    def restore(self):
        if not self._old_handlers:
            return
        signal.set_wakeup_fd(self._old_wakeup)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers = {}


def signal_name(signum):
    return signal.Signals(signum).name if signum in set(SIGNALS) else f"signal {signum}"
