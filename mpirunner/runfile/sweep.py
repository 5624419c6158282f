"""Rank 0's file during a sweep: the runs kept so far (earlier ones too, with --resume), written after each size
(docs/failure-behaviour.md: a failed size, a full disk), and the sweep table at the end."""
import textwrap

from mpirunner.errors import SweepCutShort, WriteFailed
from mpirunner.runfile import shown
from mpirunner.runfile.block import (TABLE_WIDTH, as_run, format_failed_run, format_run_block, latency_estimate,
                                     query_estimate, text_value, throughput_estimate, verdict_text)
from mpirunner.runfile.output import resumed_job


class SweepFile:
    """The output file as rank 0 builds it (`earlier`: the Job output.read_earlier read for --resume, or None)."""

    def __init__(self, path, job, earlier, guard):
        self.path, self.guard = path, guard
        self.job, self.runs = job, {}
        self.write_error = self.failure = None
        if earlier is not None:
            self.job = resumed_job(earlier, job)
            self.runs = {run.name: run for run in earlier.runs}
            guard.ending.kept.extend(sorted(self.runs))
            guard.ending.path = path

    def keep(self, run, world_size):
        """Add a Run (measured or failed), rewrite the file, print the run's block or its failure line."""
        if self.write_error is not None:
            return  # the disk already refused a run of this size: the job ends when the size does
        self.runs[run.name] = run
        if not self._write(run.name):
            del self.runs[run.name]
            return
        if run.failed:
            self.failure = format_failed_run(run)
            print(self.failure, flush=True)
        else:
            print(format_run_block(run, world_size), flush=True)

    def amend(self, names, attrs):
        """Set `attrs` on runs already kept (a peak search's points, once the peak is known); one rewrite."""
        if self.write_error is not None:
            return
        for name in names:
            self.runs[name] = self.runs[name].amended(attrs)
        self._write(names[-1])

    def _write(self, name):
        """Rewrite the file with every kept run -> whether it worked (else write_error says why)."""
        from mpirunner.runfile.hdf5 import write_job

        job = self.job.with_runs(self.runs.values())
        try:
            with self.guard.ending.writing(name, self.path):  # a signal waits for the write, then keeps this run
                write_job(self.path, job)
        except OSError as error:
            self.write_error = (f"could not write run {name} to {self.path}: {error.strerror or error}; "
                                f"{self.guard.ending.kept_text()}")
            return False
        return True

    def invalid(self):
        """'name (verdict)' of every measured run that is invalid (for --strict)."""
        return [f"{name} ({verdict_text(run)})" for name, run in sorted(self.runs.items())
                if not run.failed and not run.verdict.valid]


class Keeper:
    """Rank 0's hand-off from measuring to the file: keep(run), amend(names, attrs) of runs already kept."""

    def __init__(self, sweep, world_size):
        self.sweep, self.world_size = sweep, world_size

    def __call__(self, run):
        self.sweep.keep(run, self.world_size)

    def amend(self, names, attrs):
        self.sweep.amend(list(names), attrs)


def after_each_size(world, guard, sweep):
    """Collective after a size: every rank learns whether rank 0's write failed (and stops), else goes on."""
    failed = guard.at_checkpoint(world.any)(world.is_root and sweep.write_error is not None)
    if failed:
        raise WriteFailed(sweep.write_error if world.is_root else "rank 0 could not write the output file")


def _estimate_cell(text, unavailable):
    """An estimate with its 95% interval, or a `*` mark with its reason in `unavailable` (one footnote)."""
    if " (interval n/a" not in text:
        return text
    value, reason = text.split(" (interval n/a", 1)
    unavailable.setdefault(reason.strip(":) ") or "none stored", None)
    return f"{value} *"


def _wrapped(text, indent):
    return textwrap.wrap(text, TABLE_WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def _offline_row(run, unavailable):
    point, summary = run.point, run.summary
    cv_max = summary.step_cv_rank_max if summary.step_cv_rank_max is not None else summary.step_cv
    return (str(point.batch_size), str(point.samples_per_step),
            _estimate_cell(throughput_estimate(summary), unavailable), f"{summary.throughput_sum:.2f}",
            *(_estimate_cell(latency_estimate(summary, name), unavailable) for name in ("p50", "p99")),
            f"{100 * cv_max:.1f}")


def _number(value, spec):
    return "-" if value is None or value != value else f"{value:{spec}}"


def _scenario_row(run, unavailable):
    """A single-stream or server point: the loads, the achieved rate, query percentiles (runfile/shown.py)."""
    scenario, summary = shown.scenario_of(run), run.summary
    percentiles = [_estimate_cell(query_estimate(scenario, summary, q), unavailable) for q in (50, 99)]
    within, upper = shown.within_bound(scenario), shown.upper_bound(scenario)
    return (str(run.point.batch_size), _number(scenario.target_qps, ".1f"), _number(scenario.offered_qps, ".1f"),
            _number(scenario.achieved_qps, ".1f"), f"{summary.throughput:.2f}", *percentiles,
            "n/a" if upper is None and within is not None else _number(upper, ".3f"),
            "-" if within is None else "yes" if within else "NO")


OFFLINE_HEADER = ("batch", "samples/step", "throughput (samples/s)", "sum of ranks", "lat p50 ms", "lat p99 ms",
                  "max cv%", "verdict")
SCENARIO_HEADER = ("batch", "target QPS", "offered QPS", "QPS", "samples/s", "query p50 ms", "query p99 ms",
                   "upper ms", "within", "verdict")


def sweep_table(runs):
    """One row per batch size (or load of a scenario run), footnotes, then the reasons of every INVALID run."""
    runs = [as_run(run) for run in runs]
    scenario = any(shown.scenario_of(run) is not None for run in runs)
    header = SCENARIO_HEADER if scenario else OFFLINE_HEADER
    rows, unavailable, invalid = [], {}, []
    for run in runs:
        point, verdict = run.point, run.verdict
        reasons = [text_value(reason) for reason in verdict.reasons]
        short = "VALID" if verdict.valid else f"INVALID ({len(reasons)})" if reasons else "INVALID"
        cells = _scenario_row(run, unavailable) if shown.scenario_of(run) else _offline_row(run, unavailable)
        rows.append((*cells, short))
        if not verdict.valid:
            label = f"batch {point.batch_size}" + (f" at {cells[1]} QPS" if scenario and cells[1] != "-" else "")
            invalid += [f"  {label}: {reason}" for reason in reasons or ["no reason stored"]]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [""] + ["  ".join(cell.rjust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1]
                    for row in [header, *rows]]
    if unavailable:
        lines += _wrapped("* no 95% interval: " + "; ".join(unavailable), "  ")
    if any(cell == "n/a" for row in rows for cell in row):
        lines += ["n/a: " + shown.needs_text()]
    if invalid:
        lines += ["INVALID runs, why:"] + [line for reason in invalid for line in _wrapped(reason, "      ")]
    return "\n".join(lines)


def finish(world, sweep, path, compile_only_text):
    """Rank 0 prints the sweep table and where the file is; every rank raises SweepCutShort after a failed size."""
    if world.is_root and sweep.runs:
        measured = [run for _name, run in sorted(sweep.runs.items()) if not run.failed]
        if measured:
            print(sweep_table(measured))
        print(f"results written to {path}", flush=True)
    elif world.is_root:
        print(compile_only_text, flush=True)
    failure = world.bcast(sweep.failure if world.is_root else None)
    if failure:
        raise SweepCutShort(failure)
