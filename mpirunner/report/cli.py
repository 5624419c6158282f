"""mpirunner-report's command line: `report`, `compare` or `summary`, usage errors in one line; its words are
declared in the option table (mpirunner/options.py, REPORT_FLAGS), as the runner's are."""
import argparse
import os
import sys
from pathlib import Path

from mpirunner.config import parse_batch_sizes
from mpirunner.errors import UsageError
from mpirunner.options import BOOL, CHOICE, INT, PATHS, PERCENT, REPEATED, REPORT_FLAGS, SIZES
from mpirunner.report.compare import compare_files, judge_trends, result_rows
from mpirunner.report.figures import plot
from mpirunner.report.html import page, write_page
from mpirunner.report.rows import load, read_summary, sorted_runs, summary_row, write_rows
from mpirunner.report.summary import (TREND_COLUMNS, build_trends, gate_text, parse_sort, select, skipped_text,
                                      sort_runs, summary_table, trends_text, write_summary)
from mpirunner.report.text import failed_runs_text, file_text, format_comparison

EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INVALID_PAIR = 6  # compare: a NEW run is INVALID, or every pair was excluded (docs/failure-behaviour.md)
EXIT_DIFFERENT_CONFIGURATION = 7  # compare: the two sides are not the same measurement (nothing judged)

# (command, prog, usage or None, description): the prose of each command's --help; its words are REPORT_FLAGS.
COMMANDS = (
    ("report", "mpirunner-report [report]", None,
     "Tables, latency histograms, plots and CSV/JSON from mpirunner HDF5 files (no torch or MPI needed). "
     "See also: mpirunner-report compare BASE.h5 NEW.h5, mpirunner-report summary PATH..."),
    ("compare", "mpirunner-report compare",
     "mpirunner-report compare BASE.h5 NEW.h5 [options]\n"
     "       mpirunner-report compare --base FILE [FILE ...] --new FILE [FILE ...] [options]",
     "Compare NEW against BASE run by run (matched on batch size): one file per side, or groups of "
     "reruns (--base/--new). Same world size: the slowest NEW rank's time per sample against BASE's; "
     "different world sizes: whole-job throughput. Exit status 1 when NEW is worse by more than "
     "--threshold, beyond the steps' noise (bootstrap interval) AND beyond the run-to-run noise (the "
     "spread between the files of a side; with one file per side, the --noise-floor); 6 when a NEW run "
     "is INVALID or no pair could be judged (INVALID runs are left out unless --include-invalid); 7 when "
     "the sides are different configurations (nothing judged, the differing settings are named)."),
    ("summary", "mpirunner-report summary", None,
     "One table over many result files (folders searched recursively for *.h5, *.hdf5): a row per run "
     "with its stored summary and verdict. Unreadable files are listed as skipped, never fatal."),
)


def only_batch_sizes(job, text):
    """The Job with only the measured runs of the --batch-size sizes (8, 1,2,4, 1..80); UsageError when it has none."""
    wanted = parse_batch_sizes(text)
    if not any(run.point.batch_size in wanted for run in job.measured_runs):
        sizes = sorted({run.point.batch_size for run in job.measured_runs})
        raise UsageError(f"--batch-size {text}: {job.path} has no run of that size "
                         f"(it holds {', '.join(map(str, sizes)) or 'none'})")
    return job.with_runs([run for run in job.runs if run.failed or run.point.batch_size in wanted])


def check_plot_available(path, option="--plot"):
    """Raise UsageError before any work when matplotlib is missing or the folder of `option`'s file does not exist."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: pip install 'mpirunner[plot]'")
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {option} {path}: folder {folder} does not exist")


def report(args):
    """`report FILE...`: headline and table per file and what was asked for; `--csv -`/`--json -`: that data alone."""
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    files = [load(path) for path in args.files]
    if args.batch_size is not None:
        files = [only_batch_sizes(job, args.batch_size) for job in files]
    if args.ranks and args.plot and sum(len(sorted_runs(job)) for job in files) > 1:
        raise UsageError("--ranks with --plot colours one run's histogram by rank; these files hold several "
                         "runs: add --batch-size N to pick one")
    if args.plot:
        check_plot_available(args.plot)
    to_stdout = "-" in (args.csv, args.json)
    all_rows = []
    for job in files:
        runs = sorted_runs(job)
        rows = [summary_row(job, run) for run in runs]
        all_rows.extend(rows)
        if not to_stdout:
            print(file_text(job, runs, rows, ranks=args.ranks, histogram=args.histogram))
            if failed_runs_text(job):
                print(failed_runs_text(job))
    for kind in ("csv", "json"):
        if getattr(args, kind):
            write_rows(all_rows, getattr(args, kind), kind)
    if args.plot:
        written = plot(files, args.plot, per_rank=args.ranks)
        print(f"plot written to {written}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _sides(args):
    """(BASE paths, NEW paths) from `compare BASE NEW` or `compare --base A.. --new B..`; UsageError otherwise."""
    if args.base or args.new:
        if args.files or not (args.base and args.new):
            raise UsageError("compare takes BASE.h5 NEW.h5, or --base FILE... --new FILE... (not both forms)")
        return list(args.base), list(args.new)
    if len(args.files) != 2:
        raise UsageError(f"compare takes two files, BASE.h5 NEW.h5 (got {len(args.files)}), or groups of reruns: "
                         "--base FILE... --new FILE...")
    return [args.files[0]], [args.files[1]]


def _check_percents(args, command):
    """Every PERCENT flag of the command (the option table) is >= 0; UsageError naming the first that is not."""
    for flag in (flag for flag in REPORT_FLAGS if flag.command == command and flag.kind == PERCENT):
        value = getattr(args, flag.flag.lstrip("-").replace("-", "_"))
        if value < 0:
            raise UsageError(f"{flag.flag} must be a percentage >= 0, got {value}")


def compare(args):
    """`compare`: runs matched by batch size; exit 1 regressed, else 7 different configurations, else 6 INVALID/none."""
    _check_percents(args, "compare")
    base_paths, new_paths = _sides(args)
    bases, news = [load(path) for path in base_paths], [load(path) for path in new_paths]
    results = compare_files(bases, news, args.threshold / 100.0, seed=args.seed, include_invalid=args.include_invalid,
                            noise_floor_percent=args.noise_floor)
    if not any("pair" in result or "differences" in result for result in results):
        raise UsageError(f"nothing to compare: {', '.join(map(str, base_paths))} and {', '.join(map(str, new_paths))} "
                         "have no batch size in common")
    if args.json != "-":
        print(format_comparison(bases, news, results, args.threshold, args.noise_floor))
        for job in bases + news:
            if failed_runs_text(job):
                print(failed_runs_text(job))
    if args.json:
        write_rows(result_rows(results), args.json, "json")
    statuses = {result["regression_verdict"] for result in results if "pair" in result or "differences" in result}
    if "regressed" in statuses:
        return EXIT_REGRESSION
    if "different-configuration" in statuses:
        return EXIT_DIFFERENT_CONFIGURATION
    if "invalid-new" in statuses or not statuses & {"improved", "same"}:
        return EXIT_INVALID_PAIR
    return 0


def summary(args):
    """`summary PATH...`: a row per run over many files (attributes only), trends with --by, a page with --html."""
    if args.csv == "-" and args.json == "-":
        raise UsageError("only one of --csv and --json can write to stdout ('-')")
    _check_percents(args, "summary")
    if args.fail_on_regression and not args.by:
        raise UsageError("--fail-on-regression judges each configuration's latest run against the earlier ones: "
                         "add --by commit or --by created")
    if args.html:
        check_plot_available(args.html, "--html")  # matplotlib draws its figures
    keys = parse_sort(args.sort or "")
    sizes = set(parse_batch_sizes(args.batch_size)) if args.batch_size else ()
    found = read_summary(args.paths, histograms=bool(args.html), keys=bool(args.by))
    runs = sort_runs(select(found.runs, args.model or (), args.device or (), sizes, args.valid_only), keys)
    trends = None
    if args.by:
        trends = judge_trends(build_trends(runs, args.by), args.by, args.threshold, args.include_invalid,
                              noise_floor_percent=args.noise_floor)
    to_stdout = "-" in (args.csv, args.json)
    notes = sys.stderr if to_stdout else sys.stdout
    if not to_stdout:
        print(summary_table(runs, with_trend=trends is not None) if runs else "no runs found")
        if trends:
            print(trends_text(trends, args.threshold, args.noise_floor))
    if found.skipped or found.other_files:
        print(skipped_text(found), file=notes)
    extra = TREND_COLUMNS if trends is not None else ()
    for kind in ("csv", "json"):
        if getattr(args, kind):
            write_summary(runs, getattr(args, kind), kind, extra)
    if args.html:
        written = write_page(args.html, page(found, runs, trends, args.paths))
        print(f"page written to {written}", file=notes)
    # --fail-on-regression: the configurations whose latest step regressed or is an INVALID run not judged
    failures = [trend for trend in (trends if args.fail_on_regression else ())
                if len(trend.steps) > 1 and trend.steps[-1][1].row.get("trend") in ("regressed", "invalid-new")]
    if not failures:
        return 0
    print(gate_text(failures), file=sys.stderr)  # and compare's exit status
    regressed = any(trend.steps[-1][1].row["trend"] == "regressed" for trend in failures)
    return EXIT_REGRESSION if regressed else EXIT_INVALID_PAIR


def _parser(command):
    """The argparse parser of one command, from the option table (same order, words and help as declared)."""
    _name, prog, usage, description = next(entry for entry in COMMANDS if entry[0] == command)
    parser = argparse.ArgumentParser(prog=prog, usage=usage, description=description)
    for flag in (flag for flag in REPORT_FLAGS if flag.command == command):
        words = {"help": flag.help}
        if flag.kind == BOOL:
            words["action"] = "store_true"
        elif flag.kind == CHOICE:
            words["choices"] = flag.choices
        else:
            words.update(metavar=flag.metavar or {PERCENT: "PERCENT", SIZES: "SIZES"}.get(flag.kind),
                         type={INT: int, PERCENT: float}.get(flag.kind, str))
            words.update({"default": flag.default} if flag.default is not None else {})
            words.update({"nargs": flag.nargs} if flag.kind == PATHS else {"action": "append"} if flag.kind == REPEATED
                         else {})
        parser.add_argument(flag.flag, **words)
    return parser


def main(argv=None):
    """Entry point of `mpirunner-report` and `python -m mpirunner.report`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"report": report, "compare": compare, "summary": summary}
    command = argv[0] if argv and argv[0] in commands else "report"  # a file first: `report`
    try:
        return commands[command](_parser(command).parse_args(argv[1:] if argv and argv[0] == command else argv))
    except UsageError as error:
        print(f"mpirunner-report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `mpirunner-report ... | head`: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not complain
        return 0
