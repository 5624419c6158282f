"""Rank 0's file during a sweep: the runs kept so far (earlier ones too, with --resume), written after
each size, and what happens when a size fails or the disk does.

A size that ran out of memory becomes a run group with status 'failed' and its reason, one line is
printed, and the sweep stops going up (exit status 5, "cut short"). A write that fails (disk full)
keeps the file as it was after the last good write and ends the job with one line (exit status 1).
"""
import logging

from mpirunner.errors import SweepCutShort, WriteFailed

log = logging.getLogger("mpirunner")


def format_failed_run(attrs):
    """The one line of a size that could not be measured (status 'failed'): which size, why."""
    return (f"batch size {attrs['batch_size']} failed: {attrs.get('failure_reason', '?')}; "
            "the sweep stops here (larger sizes are not tried), the file keeps the sizes before it")


class SweepFile:
    """The output file as rank 0 builds it; `earlier`: an output_file.Earlier when resuming."""

    def __init__(self, path, root_attrs, rank_rows, earlier, guard):
        self.path, self.guard = path, guard
        self.root_attrs, self.rank_rows, self.runs = root_attrs, rank_rows, {}
        self.write_error = None
        self.failure = None
        if earlier is not None:
            self.root_attrs = earlier.root_attrs_after(root_attrs)
            self.rank_rows = earlier.rank_rows
            self.runs = dict(earlier.runs)
            guard.kept.extend(sorted(self.runs))
            guard.path = path

    def keep(self, result, world_size):
        """Add a run (measured or failed), rewrite the file, print the run's block or its failure line."""
        from mpirunner.report.text import format_run_block

        if self.write_error is not None:
            return  # the disk already refused a run of this size: the job ends when the size does
        self.runs[result.name] = result
        if not self._write(result.name):
            del self.runs[result.name]
            return
        if result.attrs.get("status") == "failed":
            self.failure = format_failed_run(result.attrs)
            print(self.failure, flush=True)
        else:
            print(format_run_block(result.attrs, world_size), flush=True)

    def amend(self, names, attrs):
        """Set `attrs` on runs already kept (a peak search's points, once the peak is known); one rewrite."""
        if self.write_error is not None:
            return
        for name in names:
            self.runs[name].attrs.update(attrs)
        self._write(names[-1])

    def _write(self, name):
        """Rewrite the file with every kept run -> whether it worked (else write_error says why)."""
        from mpirunner.results import write_results

        runs = [self.runs[kept] for kept in sorted(self.runs)]
        try:
            with self.guard.writing(name, self.path):  # a signal waits for the write, then keeps this run
                write_results(self.path, self.root_attrs, self.rank_rows, runs)
        except OSError as error:
            self.write_error = (f"could not write run {name} to {self.path}: {error.strerror or error}; "
                                f"{self.guard.kept_text()}")
            return False
        return True

    def invalid(self):
        """'name (verdict)' of every measured run that is invalid (for --strict)."""
        from mpirunner.report.text import verdict_text

        return [f"{name} ({verdict_text(attrs)})" for name, attrs in
                ((name, run.attrs) for name, run in sorted(self.runs.items()))
                if attrs.get("status") != "failed" and not attrs["valid"]]

    def measured(self):
        return [run.attrs for name, run in sorted(self.runs.items()) if run.attrs.get("status") != "failed"]


class Keeper:
    """Rank 0's hand-off from measuring to the file: keep(record) adds a measured run (the file is rewritten
    at once); amend(names, attrs) updates runs already kept."""

    def __init__(self, sweep, world_size):
        self.sweep, self.world_size = sweep, world_size

    def __call__(self, record):
        from mpirunner.results import run_result

        self.sweep.keep(run_result(record), self.world_size)

    def amend(self, names, attrs):
        self.sweep.amend(list(names), attrs)


def after_each_size(world, guard, sweep):
    """Collective after a size: every rank learns whether rank 0's write failed (and stops), else goes on."""
    failed = guard.at_checkpoint(world.any)(world.is_root and sweep.write_error is not None)
    if failed:
        raise WriteFailed(sweep.write_error if world.is_root else "rank 0 could not write the output file")


def finish(world, sweep, path, compile_only_text):
    """Rank 0 prints the sweep table and where the file is; every rank raises SweepCutShort after a failed size."""
    from mpirunner.report.text import format_sweep_table

    if world.is_root and sweep.runs:
        measured = sweep.measured()
        if measured:
            print(format_sweep_table(measured))
        print(f"results written to {path}", flush=True)
    elif world.is_root:
        print(compile_only_text, flush=True)
    failure = world.bcast(sweep.failure if world.is_root else None)
    if failure:
        raise SweepCutShort(failure)
