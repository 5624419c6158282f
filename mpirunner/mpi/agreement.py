"""Every rank leaves a batch size together when one rank ran out of memory (docs/failure-behaviour.md): the failing
rank says so at the size's next agreement point, the collective every rank reaches next, and all leave there."""
import traceback
from contextlib import suppress

from mpirunner.mpi.oom import is_out_of_memory, out_of_memory_reason
from mpirunner.mpi.world import Failed as SizeFailed  # every rank's view of a size that failed on some rank


def measure_or_fail(agreement, world, measure):
    """measure() on every rank -> (its result, None), or (None, the failure line) when any rank ran out of memory."""
    if agreement is None:
        return measure(), None
    failed_here = False
    try:
        return measure(), None
    except SizeFailed:  # every rank, at the same agreement point; own_reason is set where it failed
        pass
    except Exception as error:  # noqa: BLE001
        if not is_out_of_memory(error):
            raise
        agreement.own_reason = out_of_memory_reason(error, world.rank, world.host)
        failed_here = True
    if failed_here:  # outside the handler: the traceback (and the tensors its frames hold) is gone
        agreement.fail()
    return None, agreement.reason(agreement.own_reason)


def _inside_gather_rows(error):
    """Whether rank 0 ran out of memory between the two halves of world.gather_rows (its receive buffer): the
    other ranks may still be sending, so the collective cannot be finished and no agreement can follow."""
    return any(frame.name == "gather_rows" for frame in traceback.extract_tb(error.__traceback__))


class SizeAgreement:
    """The agreement points of one batch size (world.agree after the guard's checkpoint), each raising SizeFailed on
    every rank when any rank ran out of memory."""

    def __init__(self, world, checkpoint=None):
        self.world = world
        self.checkpoint = checkpoint or (lambda: None)
        self.own_reason = None  # this rank's line, once it ran out of memory

    def agree(self, make=None, failed=None, value=None):
        """make() on every rank, agreed (World.agree); running out of memory in it makes every rank leave here."""
        self.checkpoint()
        return self.world.agree(make, keep=self._keep, failed=failed, value=value)

    def _keep(self, error):
        if is_out_of_memory(error):
            self.own_reason = out_of_memory_reason(error, self.world.rank, self.world.host)
            return self.own_reason

    def barrier(self):
        self.agree()

    def decide(self, wanted):
        """The largest `wanted` of any rank (bench's stop rule: the steps every rank runs next)."""
        return self.agree(value=int(wanted))

    def fail(self):
        """This rank could not go on: meet the others at their next agreement point and make all leave."""
        with suppress(SizeFailed):
            self.agree(failed=self.own_reason or "failed")

    def stage(self, name, local, combine, gather=None, optional=False):
        """One stage after the timed steps, named in the failure line: local() on every rank, gathered to rank 0 (a
        rank that failed takes part too), combine(values) there -> its result on rank 0, None elsewhere; then one
        agreement point (SizeFailed when any rank ran out of memory in any of the three). gather(value, ok) replaces
        world.gather of (ok, value): it allocates only before sending (ranks other than 0) or after receiving (rank
        0), world.gather_rows excepted. optional: local() None on every rank alike means no collective."""
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
        self.agree(failed=failure)
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

    def reason(self, own_reason):
        """Collective after SizeFailed: every rank gets the first failing rank's line."""
        reasons = self.world.allgather(own_reason)
        return next((reason for reason in reasons if reason), "failed on another rank")
