"""Keep a job from hanging or losing results: the --timeout watchdog and clean ends on SIGTERM/SIGINT.
(The test-only fault injection, MPIRUNNER_FAULT, is faults.py.)

One guard thread runs on every rank. It sleeps in select() on the signal wake-up socket, with a
timeout set by the current run's deadline, so it reacts even while the main thread is blocked
inside an MPI collective or a long device call (where Python signal handlers cannot run).

- Timeout: rank 0's thread, at the deadline, names the run and the ranks that did not report
  (each rank reports every collective it reaches and the end of its steps, with a small message
  on a private communicator; the ranks behind the others are the ones everyone waits for) and
  calls MPI_Abort. The other ranks' threads act 5 s later, in case rank 0 itself is stuck.
- SIGTERM/SIGINT: rank 0's thread waits for a file write in progress to finish (writes are atomic),
  says which finished runs the file keeps, and ends the job (MPI_Abort with 128 + signal number).
  The other ranks wait for rank 0 to do that, and end the job themselves after 3 s if it does not.
- A rank of the same host ends while the job still needs it (peers.py): unless this rank's guard
  stops too within 2 s (the end of a job; 7 s on ranks other than 0, so rank 0 speaks first),
  the job is ended (MPI_Abort with status 1) instead of waiting in a collective for a dead rank.
"""
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("mpirunner")

EXIT_FAILED = 1      # an exception or a crash on some rank
EXIT_TIMEOUT = 4     # a run exceeded --timeout
SIGNALS = (signal.SIGTERM, signal.SIGINT)
BACKSTOP_SECONDS = 5.0   # other ranks act this long after rank 0 should have, for a timeout
SIGNAL_GRACE_SECONDS = 3.0
ABORT_DELAY_SECONDS = 0.3  # a failing rank's last lines reach the job's log before MPI_Abort
PEER_GRACE_SECONDS = 2.0  # a rank that ended this long before this rank stopped its guard was still needed


# ---------------------------------------------------------------- the guard

class Guard:
    """The per-rank watchdog and signal handler of one job; see the module docstring."""

    def __init__(self, world, timeout=None):
        self.world = world
        self.timeout = timeout
        self.run_name = None        # the run in progress (None: between runs)
        self.run_index = 0          # 1-based index of the current run
        self.kept = []              # names of the runs in the file (rank 0)
        self.path = None            # the file (rank 0)
        self._deadline = None
        self._progress = [0] * world.size
        self._sends = []            # non-root: (request, buffer) of checkpoint messages to rank 0
        self._state = threading.RLock()
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._hosts = None
        self._comm = None
        self._peers = {}            # pidfd -> rank, for the other ranks of this host (peers.py)
        self._thread = None
        self._old_handlers = {}
        self._old_wakeup = -1
        self._wake_read = self._wake_write = None

    # ---- life cycle (main thread)

    def start(self):
        """Collective: every rank calls it once, right after the world is set up."""
        if self.world.size > 1:
            from mpirunner.mpi.peers import open_peer_watches, process_identity

            self._comm = self.world.comm.Dup()
            gathered = self._comm.allgather((self.world.host, process_identity()))
            self._hosts = [host for host, _ in gathered]
            self._peers = open_peer_watches([identity for _, identity in gathered], self.world.rank)
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        if threading.current_thread() is threading.main_thread():
            self._old_wakeup = signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
            for signum in SIGNALS:
                self._old_handlers[signum] = signal.signal(signum, _note_signal)
        self._thread = threading.Thread(target=self._watch, name="mpirunner-guard", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        from mpirunner.runfile.output import release_lock

        release_lock()  # the job is over on this rank: the output is free for the next job
        self._stopping.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._old_handlers:
            signal.set_wakeup_fd(self._old_wakeup)
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            self._old_handlers = {}
        for sock in (self._wake_read, self._wake_write):
            if sock is not None:
                sock.close()
        self._wake_read = self._wake_write = None
        for descriptor in self._peers:
            os.close(descriptor)
        self._peers = {}

    # ---- runs (main thread)

    def run_started(self, name):
        """A run begins: arm the deadline and clear the ranks' progress."""
        with self._state:
            self.run_index += 1
            self.run_name = name
            self._progress = [0] * self.world.size
            self._deadline = time.monotonic() + self.timeout if self.timeout else None
        self._wake()

    def checkpoint(self):
        """This rank reached a point every rank must reach (a collective, the end of its steps).

        With --timeout, non-root ranks tell rank 0 (a non-blocking one-number message on the
        guard's own communicator), so that at the deadline rank 0 can name the ranks that are
        behind: the ones the others are waiting for.
        """
        with self._state:
            self._progress[self.world.rank] += 1
            if self._comm is not None and not self.world.is_root and self.timeout:
                import numpy as np

                buffer = np.array([self._progress[self.world.rank]], dtype=np.int64)
                self._sends.append((self._comm.Isend(buffer, dest=0, tag=self.run_index), buffer))

    def at_checkpoint(self, collective):
        """`collective`, preceded by a checkpoint (for the barrier and the stop-rule reduction of bench)."""

        def checked(*args):
            self.checkpoint()
            return collective(*args)

        return checked

    def writing(self, name, path):
        """Context for rank 0's write of the file: a signal waits until it is done; then `name` is kept."""
        guard = self

        class _Writing:
            def __enter__(self):
                guard._write_lock.acquire()

            def __exit__(self, kind, value, traceback):
                if kind is None:
                    if name not in guard.kept:  # a run amended after it was kept is listed once
                        guard.kept.append(name)
                    guard.path = path
                guard._write_lock.release()
                return False

        return _Writing()

    def run_finished(self):
        with self._state:
            self._deadline = None
            self.run_name = None
            for request, _buffer in self._sends:
                request.Wait()  # one small message each: sent eagerly, done at once
            self._sends = []
            if self._comm is not None and self.world.is_root and self.timeout:
                self._receive_checkpoints(any_tag=True)  # drop this run's reports: rank 0 needs them no more

    def _receive_checkpoints(self, any_tag=False):
        """Rank 0: take the checkpoint messages that have arrived (this run's, or all with any_tag)."""
        import numpy as np
        from mpi4py import MPI

        tag = MPI.ANY_TAG if any_tag else self.run_index
        status, buffer = MPI.Status(), np.zeros(1, dtype=np.int64)
        while self._comm.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
            source = status.Get_source()
            self._comm.Recv(buffer, source=source, tag=status.Get_tag())
            if status.Get_tag() == self.run_index:
                self._progress[source] = max(self._progress[source], int(buffer[0]))

    def kept_text(self):
        """What the file holds now, for messages on rank 0."""
        if not self.kept:
            return "no run had finished; nothing was written"
        return f"kept the finished run(s) {', '.join(self.kept)} in {self.path}"

    def fail(self, code=EXIT_FAILED):
        """After an exception on this rank (already logged): end every rank of the job now."""
        if self.world.is_root and self.world.size > 1:
            print(f"mpirunner: ending the job; {self.kept_text()}", file=sys.stderr, flush=True)
        if self.world.size > 1:
            sys.stderr.flush()
            time.sleep(ABORT_DELAY_SECONDS)  # the launcher forwards the traceback before MPI_Abort ends its relay
        self._end(code)

    # ---- the guard thread

    def _wake(self):
        """Make the guard thread look at the deadline again (a zero byte: not a signal number)."""
        try:
            self._wake_write.send(b"\0")
        except (AttributeError, OSError):
            pass

    def _backstop(self, deadline):
        return deadline if self.world.is_root else deadline + BACKSTOP_SECONDS

    def _watch(self):
        """Sleep until a signal, a wake-up, a peer's end or the deadline; no periodic wake-ups while runs are timed."""
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._wake_read, selectors.EVENT_READ)
            for descriptor in self._peers:
                selector.register(descriptor, selectors.EVENT_READ)
            while not self._stopping.is_set():
                with self._state:
                    deadline = self._deadline
                wait = None if deadline is None else max(0.0, self._backstop(deadline) - time.monotonic())
                ready = [key.fileobj for key, _ in selector.select(wait)]
                if not ready and deadline is not None:
                    self._on_timeout()
                for source in ready:
                    if source is self._wake_read:
                        for signum in self._wake_read.recv(64):
                            if signum:
                                self._on_signal(signum)
                    else:
                        selector.unregister(source)  # a pidfd stays readable once its process has ended
                        self._on_peer_ended(self._peers[source])
        except (OSError, ValueError, KeyError):
            return  # stop() closed the socket or the pidfds
        finally:
            selector.close()

    def _missing_ranks(self):
        """Rank 0: the ranks (with hosts) that are behind the others in the current run."""
        if self._comm is not None:
            self._receive_checkpoints()
        hosts = self._hosts or [self.world.host]
        furthest = max(self._progress)
        behind = [rank for rank, done in enumerate(self._progress) if done < furthest]
        names = ", ".join(f"{rank} ({hosts[rank]})" for rank in behind or range(self.world.size))
        return names if behind else f"none behind the others; every rank is still in the same stage: {names}"

    def _on_timeout(self):
        with self._state:
            if self._deadline is None or time.monotonic() < self._backstop(self._deadline):
                return  # the run finished meanwhile, or a new one began
            name = self.run_name
            missing = self._missing_ranks() if self.world.is_root else ""
        if self.world.is_root:
            with self._write_lock:
                print(f"mpirunner: run {name} exceeded --timeout {self.timeout:g} s; rank(s) that did not report: "
                      f"{missing}; aborting the job; {self.kept_text()}", file=sys.stderr, flush=True)
                self._end(EXIT_TIMEOUT)
            return
        log.error("run %s exceeded --timeout %g s (+%g s backstop) and rank 0 did not end the job; aborting it",
                  name, self.timeout, BACKSTOP_SECONDS)
        self._end(EXIT_TIMEOUT)

    def _on_signal(self, signum):
        name = signal.Signals(signum).name if signum in set(SIGNALS) else f"signal {signum}"
        code = 128 + signum
        if self.world.is_root:
            self._end_from_root(f"stopped by {name}", code)
            return
        if self._stopping.wait(SIGNAL_GRACE_SECONDS):
            return
        log.error("stopped by %s; rank 0 did not end the job, so this rank does", name)
        self._end(code)

    def _on_peer_ended(self, other):
        """A rank of this host ended. At the end of a job this rank stops its guard too, within the grace;
        otherwise the rank was still needed and the others would wait for it forever: end the job."""
        grace = PEER_GRACE_SECONDS if self.world.is_root else PEER_GRACE_SECONDS + BACKSTOP_SECONDS
        if self._stopping.wait(grace):
            return
        host = self._hosts[other] if self._hosts else "?"
        if self.world.is_root:
            self._end_from_root(f"rank {other} ({host}) ended", EXIT_FAILED,
                                consequence=" while the job still needed it; ending the job")
            return
        log.error("rank %d (%s) ended while the job still needed it and rank 0 did not end the job; ending it",
                  other, host)
        self._end(EXIT_FAILED)

    def _end_from_root(self, event, code, consequence=""):
        """Rank 0, once a write in progress is done: one line with what happened, during which run, what the
        file keeps and which run is discarded; then the job ends with `code`."""
        with self._write_lock:
            running = self.run_name
            during = f" during run {running}" if running else ""
            discarded = f"; discarded the unfinished run {running}" if running else ""
            print(f"mpirunner: {event}{during}{consequence}; {self.kept_text()}{discarded}", file=sys.stderr, flush=True)
            self._end(code)

    def _end(self, code):
        from mpirunner.runfile.output import release_lock

        release_lock()  # the output's lock (runfile/output.py): the launcher may kill rank 0 before its exit handlers
        sys.stdout.flush()
        sys.stderr.flush()
        if self.world.size > 1:
            self.world.abort(code)
        os._exit(code)


def _note_signal(signum, frame):
    """Python-level handler: the guard thread acts on the wake-up byte; the main thread carries on."""


def start_guard(world, config):
    """Start this rank's guard (collective: every rank calls it once, right after the world is set up)."""
    return Guard(world, timeout=config.timeout).start()
