"""Out of memory is a result, not a crash: recognise it, and let every rank agree that a size failed.

A batch size too large for the device (CPU allocator, CUDA out of memory, IPU "out of memory on
tile" at compile time) is caught on the rank where it happens. That rank then joins the size's next
agreement point, the one collective every other rank reaches next (SizeAgreement.sync: the barriers
before timing, the stop rule's decision, the end of the steps), saying it failed; every rank leaves
the size there together, with the reason, and the sweep stops going up.
"""
import re

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
    own = None
    try:
        return measure(), None
    except SizeFailed:
        pass
    except Exception as error:  # noqa: BLE001
        if not is_out_of_memory(error):
            raise
        own = out_of_memory_reason(error, world.rank, world.host)
    if own is not None:  # outside the handler: the traceback (and the tensors its frames hold) is gone
        agreement.fail()
    return None, agreement.reason(own)


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


def out_of_memory_reason(error, rank, host):
    """One line for the run's failure_reason: where, and how much was asked for."""
    text = str(error)
    return f"out of memory on rank {rank} ({host}): {describe(bytes_asked(text))}"


class SizeAgreement:
    """The collectives of one batch size, each of which also says whether any rank failed.

    Every collective inside the measurement (bench's barriers and stop-rule decision) and one at its
    end is an allreduce(MAX) of (failed, value): healthy ranks pass failed=0; a rank that ran out of
    memory calls fail(), which is the same collective with failed=1, wherever the others are. Then
    all raise SizeFailed at the same point, and gather the reason.
    """

    def __init__(self, world, checkpoint=None):
        self.world = world
        self.checkpoint = checkpoint or (lambda: None)
        self.pending = None  # an out-of-memory error caught inside another collective (attempt)

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
