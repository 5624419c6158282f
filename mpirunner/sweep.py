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


TABLE_WIDTH = 160  # no printed line is longer: reasons and footnotes wrap


def _estimate_cell(attrs, key, spec, unavailable, missing_name=None):
    """An estimate with its 95% interval; an interval that is not available becomes a `*` mark and its reason
    goes to `unavailable` (one footnote under the table)."""
    from mpirunner.report.text import estimate_text, percentile_text

    if missing_name and percentile_text(attrs, missing_name) == "n/a":
        return "n/a"  # too few latencies for the percentile itself
    text = estimate_text(attrs, key, spec, missing_name=missing_name)
    if " (interval n/a" not in text:
        return text
    value, reason = text.split(" (interval n/a", 1)
    unavailable.setdefault(reason.strip(":) ") or "none stored", None)
    return f"{value} *"


def _reasons(attrs):
    reasons = attrs.get("validity_reason")
    if reasons is None or isinstance(reasons, (str, bytes)):
        reasons = [reasons] if reasons else []
    return [reason.decode() if isinstance(reason, bytes) else str(reason) for reason in reasons]


def _wrapped(text, indent):
    import textwrap

    return textwrap.wrap(text, TABLE_WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def sweep_table(runs_attrs):
    """The sweep summary: one row per batch size (estimates with their 95% intervals, a short verdict), then
    the reasons of every INVALID run listed once, and one footnote for the intervals that are not available."""
    header = ("batch", "samples/step", "throughput (samples/s)", "sum of ranks", "lat p50 ms", "lat p99 ms",
              "max cv%", "verdict")
    rows, unavailable, invalid = [], {}, []
    for a in runs_attrs:
        reasons = _reasons(a)
        verdict = "VALID" if a["valid"] else f"INVALID ({len(reasons)})" if reasons else "INVALID"
        rows.append((str(a["batch_size"]), str(a["samples_per_step"]),
                     _estimate_cell(a, "throughput", ".2f", unavailable), f"{a['throughput_sum']:.2f}",
                     _estimate_cell(a, "latency_p50", ".3f", unavailable, "p50"),
                     _estimate_cell(a, "latency_p99", ".3f", unavailable, "p99"),
                     f"{100 * a.get('step_cv_rank_max', a['step_cv']):.1f}", verdict))
        if not a["valid"]:
            invalid += [f"  batch {a['batch_size']}: {reason}" for reason in reasons or ["no reason stored"]]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["", "  ".join(cell.rjust(width) for cell, width in zip(header[:-1], widths)) + "  verdict"]
    lines += ["  ".join(cell.rjust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
    if unavailable:
        lines += _wrapped("* no 95% interval: " + "; ".join(unavailable), "  ")
    if any("n/a" == row[column] for row in rows for column in (4, 5)):
        lines += ["n/a: too few latencies for that percentile (a p99 needs 100)"]
    if invalid:
        lines += ["INVALID runs, why:"] + [line for reason in invalid for line in _wrapped(reason, "      ")]
    return "\n".join(lines)


def finish(world, sweep, path, compile_only_text):
    """Rank 0 prints the sweep table and where the file is; every rank raises SweepCutShort after a failed size."""
    if world.is_root and sweep.runs:
        measured = sweep.measured()
        if measured:
            print(sweep_table(measured))
        print(f"results written to {path}", flush=True)
    elif world.is_root:
        print(compile_only_text, flush=True)
    failure = world.bcast(sweep.failure if world.is_root else None)
    if failure:
        raise SweepCutShort(failure)
