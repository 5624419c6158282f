"""Out of memory is a result, not a crash: recognise it, and let every rank agree that a size failed.

A batch size too large for the device (CPU allocator, CUDA out of memory, IPU "out of memory on
tile" at compile time) is caught on the rank where it happens. That rank then joins the size's next
agreement point, the one collective every other rank reaches next (SizeAgreement.sync: the barriers
before timing, the stop rule's decision, the end of the steps), saying it failed; every rank leaves
the size there together, with the reason, and the sweep stops going up.

After the timed steps, each stage (the gather of timings, accuracy, the output check, the per-rank
values) is a SizeAgreement.stage: local work, its gather to rank 0 (a failed rank still takes part),
rank 0's assembly, then one small allreduce that says whether any rank ran out of memory in it.
"""
import re
import traceback

# Messages of the allocators that ran out: CPU (c10's DefaultCPUAllocator), CUDA (torch), IPU (poplar
# via poptorch, at compile time), and numpy / Python's own MemoryError text.
_OOM_TEXT = re.compile(r"can't allocate memory|out of memory|OutOfMemory|Unable to allocate|"
                       r"not enough memory|failed to allocate", re.IGNORECASE)
_OOM_TYPES = ("MemoryError", "OutOfMemoryError", "_ArrayMemoryError")
_ASKED = (
    (re.compile(r"tried to allocate (\d+) bytes", re.IGNORECASE), 1),                   # CPU
    (re.compile(r"Tried to allocate ([\d.]+) ([KMGT]i?B)", re.IGNORECASE), None),      # CUDA
    (re.compile(r"Unable to allocate ([\d.]+) ([KMGT]i?B)", re.IGNORECASE), None),     # numpy
    (re.compile(r"(\d+) bytes (?:used|required)", re.IGNORECASE), 1),                   # IPU tile memory
)
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def measure_or_fail(agreement, world, measure):
    """measure() on every rank -> (its result, None), or (None, the failure line on rank 0) when any rank ran
    out of memory. Other errors go on up (the job's failure path), as every error does without an agreement."""
    if agreement is None:
        return measure(), None
    failed_here = False
    try:
        return measure(), None
    except SizeFailed:  # every rank, at the same agreement point; own_reason is set where a stage failed
        pass
    except Exception as error:  # noqa: BLE001
        if not is_out_of_memory(error):
            raise
        agreement.own_reason = out_of_memory_reason(error, world.rank, world.host)
        failed_here = True
    if failed_here:  # outside the handler: the traceback (and the tensors its frames hold) is gone
        agreement.fail()
    return None, agreement.reason(agreement.own_reason)


class SizeFailed(Exception):
    """Every rank's view of a batch size that failed on some rank: `reason` is that rank's line."""

    def __init__(self, reason=""):
        super().__init__(reason)
        self.reason = reason


def is_out_of_memory(error):
    """Whether `error` says memory ran out (by type, or by the allocator's message)."""
    names = {kind.__name__ for kind in type(error).__mro__}
    return bool(names & set(_OOM_TYPES)) or bool(_OOM_TEXT.search(str(error)))


def bytes_asked(text):
    """The allocation that failed, in bytes, when the message says (None when it does not)."""
    for pattern, unit in _ASKED:
        found = pattern.search(text)
        if found:
            if unit is not None:
                return int(found.group(1))
            return int(float(found.group(1)) * _UNITS[found.group(2)[0].upper()])
    return None


def describe(nbytes):
    if nbytes is None:
        return "the amount asked for was not reported"
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = _UNITS[unit[0]]
        if nbytes >= scale:
            return f"asked for {nbytes / scale:.1f} {unit}"
    return f"asked for {nbytes} bytes"


def out_of_memory_reason(error, rank, host, stage=None):
    """One line for the run's failure_reason: where (and in which stage after the steps), how much was asked for."""
    text = str(error)
    where = f" in {stage}" if stage else ""
    return f"out of memory on rank {rank} ({host}){where}: {describe(bytes_asked(text))}"


def _inside_gather_rows(error):
    """Whether rank 0 ran out of memory between the two halves of world.gather_rows (its receive buffer): the
    other ranks may still be sending, so the collective cannot be finished and no agreement can follow."""
    return any(frame.name == "gather_rows" for frame in traceback.extract_tb(error.__traceback__))


class SizeAgreement:
    """The collectives of one batch size, each of which also says whether any rank failed.

    Every collective inside the measurement (bench's barriers and stop-rule decision) and one at its
    end is an allreduce(MAX) of (failed, value): healthy ranks pass failed=0; a rank that ran out of
    memory calls fail(), which is the same collective with failed=1, wherever the others are. Then
    all raise SizeFailed at the same point, and gather the reason. After the steps, each stage (stage())
    ends with one such collective.
    """

    def __init__(self, world, checkpoint=None):
        self.world = world
        self.checkpoint = checkpoint or (lambda: None)
        self.pending = None  # an out-of-memory error caught inside another collective (attempt)
        self.own_reason = None  # this rank's line, once it ran out of memory

    def attempt(self, make):
        """make(), keeping an out-of-memory error for later: for work inside another collective (world.agree),
        which this rank must finish alongside the others before it can say it failed."""
        try:
            return make()
        except Exception as error:  # noqa: BLE001 - only memory errors are kept; others go on up
            if not is_out_of_memory(error):
                raise
            self.pending = str(error)
            return None

    def stage(self, name, local, combine, gather=None, optional=False):
        """One stage after the timed steps, named in the failure line ("the output check"): value = local() on
        every rank, gathered to rank 0, combine(every rank's value) there -> its result on rank 0, None elsewhere.

        Then one allreduce (the stage's only added collective): when any rank ran out of memory in any of the
        three, every rank raises SizeFailed here together. A rank that failed in local() still takes part in the
        gather, so none waits for it. gather(value, ok) replaces the default (world.gather of (ok, value); rank 0
        gets the values, or None when some rank failed); it must allocate only before sending on ranks other than
        0 and only after receiving on rank 0, except in world.gather_rows, whose failure goes on up (the job's
        failure path). optional: local() returning None on every rank alike means nothing to gather: no collective.
        """
        value, failure = self._attempt_stage(name, local)
        if optional and value is None and failure is None:
            return None
        send = gather or self._gather_flagged
        gathered, gather_failure = self._attempt_stage(name, lambda: send(value, failure is None))
        if gather_failure is not None and not self.world.is_root:  # it failed before sending: take part now
            send(None, False)
        failure = failure or gather_failure
        result = None
        if failure is None and gathered is not None:  # rank 0, and every rank's value arrived
            result, failure = self._attempt_stage(name, lambda: combine(gathered))
        gathered = None
        if failure is not None:
            self.own_reason = failure
        self._sync(failure is not None, 0)
        return result

    def _attempt_stage(self, name, work):
        try:
            return work(), None
        except Exception as error:  # noqa: BLE001 - only memory errors become a result
            if not is_out_of_memory(error) or (self.world.is_root and _inside_gather_rows(error)):
                raise
            return None, out_of_memory_reason(error, self.world.rank, self.world.host, name)

    def _gather_flagged(self, value, ok):
        rows = self.world.gather((ok, value))
        if rows is None or not all(row_ok for row_ok, _ in rows):
            return None
        return [row_value for _, row_value in rows]

    def raise_pending(self):
        if self.pending is not None:
            raise MemoryError(self.pending)

    def _sync(self, failed, value):
        self.checkpoint()
        any_failed, agreed = self.world.max((int(failed), int(value)))
        if any_failed:
            raise SizeFailed()
        return agreed

    def barrier(self):
        self._sync(False, 0)

    def decide(self, wanted):
        return self._sync(False, wanted)

    def fail(self):
        """This rank could not go on: meet the others at their next collective and make all leave."""
        try:
            self._sync(True, 0)
        except SizeFailed:
            pass

    def reason(self, own_reason):
        """Collective after SizeFailed: rank 0 gets the first failing rank's line, the others None."""
        reasons = self.world.gather(own_reason)
        if reasons is None:
            return None
        return next((reason for reason in reasons if reason), "failed on another rank")
