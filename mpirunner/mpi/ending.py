"""Ending the job: an ending waits for rank 0's write in progress (writing), says in one line what happened and
what the file keeps, then MPI_Abort ends every rank with the job's exit status."""
import os
import sys
import threading
from contextlib import contextmanager

from mpirunner.mpi.world import LAST_LINES_SECONDS

EXIT_FAILED = 1      # an exception or a crash on some rank
EXIT_TIMEOUT = 4     # a run exceeded --timeout
TRACEBACK_SECONDS = 0.55  # before MPI_Abort after an exception: longer than world.LAST_LINES_SECONDS, as the
                          # launcher must forward a failing rank's whole traceback


class JobEnd:
    """Rank 0's account of the file (kept: names of the runs in it, path) and the ways the job ends."""

    def __init__(self, world):
        self.world = world
        self.kept = []
        self.path = None
        self.lock = threading.Lock()  # held while rank 0 writes the file

    @contextmanager
    def writing(self, name, path):
        """Rank 0's write of the file: an ending waits until it is done; then `name` is kept."""
        with self.lock:
            yield
            if name not in self.kept:  # a run amended after it was kept is listed once
                self.kept.append(name)
            self.path = path

    def kept_text(self):
        if not self.kept:
            return "no run had finished; nothing was written"
        return f"kept the finished run(s) {', '.join(self.kept)} in {self.path}"

    def after_failure(self, code=EXIT_FAILED):
        """After an exception on this rank (already logged): end every rank of the job now."""
        if self.world.is_root and self.world.size > 1:
            print(f"mpirunner: ending the job; {self.kept_text()}", file=sys.stderr, flush=True)
        self.now(code, pause=TRACEBACK_SECONDS)

    def from_root(self, event, code, running=lambda: None, consequence=""):
        """Rank 0, once a write in progress is done: one line with what happened, during which run (running(), read
        then; None: between runs), what the file keeps and which run is discarded; then the job ends with `code`."""
        with self.lock:
            running = running()
            if running in self.kept:  # written and kept, not yet marked finished: between runs
                running = None
            during = f" during run {running}" if running else ""
            discarded = f"; discarded the unfinished run {running}" if running else ""
            print(f"mpirunner: {event}{during}{consequence}; {self.kept_text()}{discarded}", file=sys.stderr,
                  flush=True)
            self.now(code)

    def now(self, code, pause=LAST_LINES_SECONDS):
        from mpirunner.runfile.output import release_lock

        release_lock()  # the output's lock (runfile/output.py): the launcher may kill rank 0 before its exit handlers
        sys.stdout.flush()
        sys.stderr.flush()
        if self.world.size > 1:
            self.world.abort(code, pause)
        os._exit(code)
