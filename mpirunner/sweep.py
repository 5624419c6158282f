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
        from mpirunner.results import write_results

        self.runs[result.name] = result
        runs = [self.runs[name] for name in sorted(self.runs)]
        try:
            with self.guard.writing(result.name, self.path):  # a signal waits for the write, then keeps this run
                write_results(self.path, self.root_attrs, self.rank_rows, runs)
        except OSError as error:
            del self.runs[result.name]
            self.write_error = (f"could not write run {result.name} to {self.path}: {error.strerror or error}; "
                                f"{self.guard.kept_text()}")
            return
        if result.attrs.get("status") == "failed":
            self.failure = format_failed_run(result.attrs)
            print(self.failure, flush=True)
        else:
            print(format_run_block(result.attrs, world_size), flush=True)

    def invalid(self):
        """'name (verdict)' of every measured run that is invalid (for --strict)."""
        from mpirunner.report.text import verdict_text

        return [f"{name} ({verdict_text(attrs)})" for name, attrs in
                ((name, run.attrs) for name, run in sorted(self.runs.items()))
                if attrs.get("status") != "failed" and not attrs["valid"]]

    def measured(self):
        return [run.attrs for name, run in sorted(self.runs.items()) if run.attrs.get("status") != "failed"]


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
